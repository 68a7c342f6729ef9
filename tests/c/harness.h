/*
 * harness.h — a tiny header-only test harness for the libmulticore C tests.
 *
 *   TEST(name) { ... }      defines and registers a test function
 *   CHECK(cond)             records a failure (file:line, expression) and goes on
 *   CHECK_EQ_INT(a, b)      compares two integers, printing both values
 *   CHECK_OK(expr)          expr must return MC_OK (prints mc_strerror otherwise)
 *   CHECK_RC(expr, want)    expr must return the MC_* code `want`
 *   REQUIRE(cond), REQUIRE_OK(expr)   like CHECK, but return from the test
 *
 * main() runs every registered test (or only those named on the command
 * line), each in a process of its own with a timeout (see "main" below),
 * prints "N passed, N failed" as its last line and exits non-zero if
 * anything failed. The failure counter is atomic, so CHECK may be used
 * from several caller threads. Never use CHECK inside a task function or a
 * worker callback: those run in forked worker processes.
 *
 * Leak helpers read /proc: open descriptors, mapping lines, child processes
 * (zombies included) and a process's utime+stime.
 */
#ifndef MC_TEST_HARNESS_H
#define MC_TEST_HARNESS_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "multicore.h"

/* ---------------------------------------------------------------- checks */

static int mc_t_failures; /* accessed with __atomic builtins */

static inline void mc_t_fail(void) { __atomic_fetch_add(&mc_t_failures, 1, __ATOMIC_SEQ_CST); }

static inline int mc_t_failure_count(void) { return __atomic_load_n(&mc_t_failures, __ATOMIC_SEQ_CST); }

#define CHECK(cond)                                                         \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                 \
            mc_t_fail();                                                    \
        }                                                                   \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                   \
    do {                                                                     \
        long long mc_t_a_ = (long long)(a), mc_t_b_ = (long long)(b);        \
        if (mc_t_a_ != mc_t_b_) {                                            \
            fprintf(stderr, "%s:%d: CHECK_EQ_INT failed: %s == %s (%lld != %lld)\n", \
                    __FILE__, __LINE__, #a, #b, mc_t_a_, mc_t_b_);           \
            mc_t_fail();                                                     \
        }                                                                    \
    } while (0)

#define CHECK_RC(expr, want)                                                 \
    do {                                                                     \
        int mc_t_rc_ = (expr), mc_t_want_ = (want);                          \
        if (mc_t_rc_ != mc_t_want_) {                                        \
            fprintf(stderr, "%s:%d: %s returned %d (%s), expected %d (%s)\n", \
                    __FILE__, __LINE__, #expr, mc_t_rc_, mc_strerror(mc_t_rc_), \
                    mc_t_want_, mc_strerror(mc_t_want_));                    \
            mc_t_fail();                                                     \
        }                                                                    \
    } while (0)

#define CHECK_OK(expr) CHECK_RC(expr, MC_OK)

#define REQUIRE(cond)                                                       \
    do {                                                                    \
        if (!(cond)) {                                                      \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s (test aborted)\n",   \
                    __FILE__, __LINE__, #cond);                             \
            mc_t_fail();                                                    \
            return;                                                         \
        }                                                                   \
    } while (0)

#define REQUIRE_OK(expr)                                                     \
    do {                                                                     \
        int mc_t_rc_ = (expr);                                               \
        if (mc_t_rc_ != MC_OK) {                                             \
            fprintf(stderr, "%s:%d: %s returned %d (%s) (test aborted)\n",   \
                    __FILE__, __LINE__, #expr, mc_t_rc_, mc_strerror(mc_t_rc_)); \
            mc_t_fail();                                                     \
            return;                                                          \
        }                                                                    \
    } while (0)

/* --------------------------------------------------------- registration */

typedef void (*mc_t_fn)(void);

#define MC_T_MAX_TESTS 128
static const char *mc_t_names[MC_T_MAX_TESTS];
static mc_t_fn mc_t_fns[MC_T_MAX_TESTS];
static int mc_t_count;

static inline void mc_t_register(const char *name, mc_t_fn fn)
{
    if (mc_t_count < MC_T_MAX_TESTS - 1) {
        mc_t_names[mc_t_count] = name;
        mc_t_fns[mc_t_count] = fn;
        mc_t_count++;
    } else {
        mc_t_count = MC_T_MAX_TESTS; /* main() refuses to run */
    }
}

#define TEST(name)                                                           \
    static void name(void);                                                  \
    __attribute__((constructor)) static void mc_t_reg_##name(void)           \
    {                                                                        \
        mc_t_register(#name, name);                                          \
    }                                                                        \
    static void name(void)

/* --------------------------------------------------------------- timing */

static inline double mc_t_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline double mc_t_thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep that resumes after signals (usable inside task functions). */
static inline void mc_t_sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---------------------------------------------------------- /proc helpers */

/* Number of entries of a /proc directory (not "." and ".."), -1 if it
   cannot be opened. */
static inline int mc_t_count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Number of open file descriptors of this process. */
static inline int mc_t_count_fds(void)
{
    int n = mc_t_count_entries("/proc/self/fd");
    return n < 0 ? -1 : n - 1; /* the descriptor opendir() itself holds */
}

/* Number of threads of this process. */
static inline int mc_t_count_threads(void) { return mc_t_count_entries("/proc/self/task"); }

/* Number of lines of /proc/self/maps; with `needle`, only lines containing it. */
static inline int mc_t_count_maps_matching(const char *needle)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        int complete = len > 0 && line[len - 1] == '\n';
        if (!needle || strstr(line, needle))
            n++;
        while (!complete && fgets(line, sizeof line, f)) { /* rest of a long line */
            len = strlen(line);
            complete = len > 0 && line[len - 1] == '\n';
        }
    }
    fclose(f);
    return n;
}

/* Running under valgrind (which preloads its vgpreload_*.so into the
   client)? */
static inline int mc_t_under_valgrind(void)
{
    const char *p = getenv("LD_PRELOAD");
    return p && strstr(p, "vgpreload") != NULL;
}

/* Under valgrind, its own allocator maps and unmaps anonymous memory inside
   the client's address space as it runs, so there only the mappings with a
   path (files, memfds) are counted. */
static inline int mc_t_count_maps(void)
{
    return mc_t_count_maps_matching(mc_t_under_valgrind() ? "/" : NULL);
}

/*
 * Parse /proc/PID/stat: fills *state, *ppid, *pgrp and *ticks (utime +
 * stime) for the non-NULL ones. Returns 0, or -1 if the process does not
 * exist.
 */
static inline int mc_t_proc_stat_pgrp(pid_t pid, char *state, pid_t *ppid, pid_t *pgrp,
                                      long long *ticks)
{
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* comm may contain spaces and parentheses */
    if (!p)
        return -1;
    p++;
    char st = 0;
    int pp = 0, pg = 0;
    unsigned long long ut = 0, stt = 0;
    /* fields 3..15: state ppid pgrp session tty tpgid flags minflt cminflt
       majflt cmajflt utime stime */
    if (sscanf(p, " %c %d %d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &st, &pp, &pg,
               &ut, &stt) != 5)
        return -1;
    if (state)
        *state = st;
    if (ppid)
        *ppid = pp;
    if (pgrp)
        *pgrp = pg;
    if (ticks)
        *ticks = (long long)(ut + stt);
    return 0;
}

static inline int mc_t_proc_stat(pid_t pid, char *state, pid_t *ppid, long long *ticks)
{
    return mc_t_proc_stat_pgrp(pid, state, ppid, NULL, ticks);
}

/* The next process listed in /proc (opened with opendir), or 0 at the end. */
static inline pid_t mc_t_next_proc(DIR *proc)
{
    struct dirent *e;
    while ((e = readdir(proc)) != NULL) {
        char *end;
        long v = strtol(e->d_name, &end, 10);
        if (*end == '\0' && v > 0)
            return (pid_t)v;
    }
    return 0;
}

/* utime + stime of a process in clock ticks, or -1 if it does not exist. */
static inline long long mc_t_proc_cpu_ticks(pid_t pid)
{
    long long t;
    return mc_t_proc_stat(pid, NULL, NULL, &t) == 0 ? t : -1;
}

/*
 * Context switches (voluntary + involuntary) of every thread of process
 * `pid`, from /proc/PID/task/x/status; -1 if the process does not exist. A
 * process that sleeps in one blocking call gains none; one that polls gains
 * one per wake-up.
 */
static inline long long mc_t_proc_ctxt_switches(pid_t pid)
{
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long long total = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char sp[160], line[256];
        snprintf(sp, sizeof sp, "/proc/%d/task/%.20s/status", (int)pid, e->d_name);
        FILE *f = fopen(sp, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f)) {
            long long v;
            if (sscanf(line, "voluntary_ctxt_switches: %lld", &v) == 1 ||
                sscanf(line, "nonvoluntary_ctxt_switches: %lld", &v) == 1)
                total += v;
        }
        fclose(f);
    }
    closedir(d);
    return total;
}

/*
 * Child processes of this process (zombies included): up to max pids go to
 * pids[] and their states to states[] (either may be NULL). Returns the
 * total number found.
 */
static inline int mc_t_children(pid_t *pids, char *states, int max)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    pid_t me = getpid(), v;
    int n = 0;
    while ((v = mc_t_next_proc(d)) != 0) {
        char st;
        pid_t pp;
        if (mc_t_proc_stat(v, &st, &pp, NULL) != 0 || pp != me)
            continue;
        if (n < max) {
            if (pids)
                pids[n] = v;
            if (states)
                states[n] = st;
        }
        n++;
    }
    closedir(d);
    return n;
}

static inline int mc_t_count_children(void) { return mc_t_children(NULL, NULL, 0); }

static inline int mc_t_count_zombie_children(void)
{
    pid_t pids[256];
    char states[256];
    int n = mc_t_children(pids, states, 256), z = 0;
    for (int i = 0; i < n && i < 256; i++)
        if (states[i] == 'Z')
            z++;
    return z;
}

/* 1 if no process `pid` exists any more (not even as a zombie). */
static inline int mc_t_pid_gone(pid_t pid)
{
    if (pid <= 0)
        return 0;
    return kill(pid, 0) == -1 && errno == ESRCH;
}

/*
 * Files under /dev/shm that process `pid` maps or holds open (POSIX shared
 * memory, which the engine must never use: its region is a memfd). Only
 * the process's own mappings and descriptors are looked at, so what other
 * programs on the machine keep in /dev/shm does not matter. -1 if the
 * process does not exist.
 */
static inline int mc_t_proc_dev_shm_refs(pid_t pid)
{
    char path[64], line[4096], link[4096];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, " /dev/shm/") != NULL;
    fclose(f);
    snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char fp[96];
        snprintf(fp, sizeof fp, "/proc/%d/fd/%.20s", (int)pid, e->d_name);
        ssize_t len = readlink(fp, link, sizeof link - 1);
        if (len > 0) {
            link[len] = '\0';
            n += strncmp(link, "/dev/shm/", 9) == 0;
        }
    }
    closedir(d);
    return n;
}

/* ------------------------------------------- "nothing left behind" checks */

/* ThreadSanitizer's runtime maps shadow memory on its own as the process
   runs, and AddressSanitizer's allocator maps a new region of a size class
   when the process first needs more (in a fresh process per test case,
   that can be at any cycle of a loop), so a count of all mappings says
   nothing there; the count of memfd mappings (the pool's regions) is
   checked in every build, and all mappings in the others. */
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define MC_T_SANITIZER_RUNTIME_MAPS 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer)
#define MC_T_SANITIZER_RUNTIME_MAPS 1
#endif
#endif

typedef struct {
    int fds;
    int memfd_maps;
    int children;
} mc_t_snapshot;

static inline void mc_t_snap(mc_t_snapshot *s)
{
    s->fds = mc_t_count_fds();
    s->memfd_maps = mc_t_count_maps_matching("memfd:");
    s->children = mc_t_count_children();
}

/*
 * After every pool of the test has been stopped: the same descriptors, no
 * memfd mapping and no child process (zombie or not) more than in `before`.
 */
#define CHECK_NOTHING_LEFT(before)                                          \
    do {                                                                    \
        mc_t_snapshot mc_t_after_;                                          \
        mc_t_snap(&mc_t_after_);                                            \
        CHECK_EQ_INT(mc_t_after_.fds, (before)->fds);                       \
        CHECK_EQ_INT(mc_t_after_.memfd_maps, (before)->memfd_maps);         \
        CHECK_EQ_INT(mc_t_after_.children, (before)->children);             \
        CHECK_EQ_INT(mc_t_count_zombie_children(), 0);                      \
    } while (0)

/* ------------------------------------------------------------------ gates */

/*
 * A gate forces an order of events across processes: a task that must not
 * finish before the caller has looked at it waits at a gate the caller
 * opens. The gate is a futex word in a MAP_SHARED anonymous page, so it
 * must be made before the pool starts (the zygote and the workers are
 * forked from the caller and inherit the page).
 *
 *   mc_t_gate *g = mc_t_gate_new();          before mc_pool_start
 *   in a task:    mc_t_gate_wait(g, 30)      0 once open, -1 past 30 s
 *   in the test:  mc_t_gate_open(g);  ...  mc_t_gate_free(g);
 */
typedef struct {
    uint32_t open; /* futex word: 0 shut, 1 open (__atomic builtins) */
} mc_t_gate;

static inline mc_t_gate *mc_t_gate_new(void)
{
    void *p = mmap(NULL, sizeof(mc_t_gate), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    return p == MAP_FAILED ? NULL : (mc_t_gate *)p;
}

static inline void mc_t_gate_free(mc_t_gate *g)
{
    if (g)
        munmap(g, sizeof *g);
}

static inline void mc_t_gate_open(mc_t_gate *g)
{
    __atomic_store_n(&g->open, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &g->open, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

static inline int mc_t_gate_is_open(mc_t_gate *g)
{
    return __atomic_load_n(&g->open, __ATOMIC_SEQ_CST) != 0;
}

/* Waits until the gate is open: 0, or -1 after `seconds`. */
static inline int mc_t_gate_wait(mc_t_gate *g, double seconds)
{
    double deadline = mc_t_now() + seconds;
    while (!mc_t_gate_is_open(g)) {
        double left = deadline - mc_t_now();
        if (left <= 0)
            return -1;
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        syscall(SYS_futex, &g->open, FUTEX_WAIT, 0, &ts, NULL, 0);
    }
    return 0;
}

/* ------------------------------------------------------------ pool helpers */

/*
 * MULTICORE_TEST_REGION_SIZE (bytes, or with a K, M or G suffix), when set,
 * replaces the default region size (twice the RAM) for every pool a test
 * starts without an explicit region_size. The valgrind stage of
 * tests/run_all.sh sets it: memcheck treats the mapping as defined memory,
 * and its leak check at the exit of every process of the pool (caller,
 * zygote, each worker) reads all of it, committing the untouched memfd
 * pages, which for tens of GiB takes minutes per process. Tests that set
 * their own region_size keep it.
 */
static inline int mc_t_pool_start(mc_pool **pool, const mc_pool_options *opts)
{
    const char *env = getenv("MULTICORE_TEST_REGION_SIZE");
    if (!pool || !env || !*env || (opts && opts->region_size))
        return mc_pool_start(pool, opts);
    char *end;
    unsigned long long v = strtoull(env, &end, 10);
    switch (*end) {
    case 'G': case 'g': v <<= 10; /* fall through */
    case 'M': case 'm': v <<= 10; /* fall through */
    case 'K': case 'k': v <<= 10; break;
    default: break;
    }
    mc_pool_options o;
    if (opts)
        o = *opts;
    else
        mc_pool_options_init(&o);
    o.region_size = (size_t)v;
    return mc_pool_start(pool, &o);
}
#define mc_pool_start(pool, opts) mc_t_pool_start((pool), (opts))

/* Start a pool with `workers` workers (0: online CPUs) and default options. */
static inline int mc_t_start(mc_pool **pool, int workers)
{
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = workers;
    return mc_pool_start(pool, &o);
}

#define MC_T_MAX_PIDS 256
typedef struct {
    pid_t zygote;
    int n;
    pid_t workers[MC_T_MAX_PIDS];
} mc_t_pool_pids;

/* Record the zygote's and the live workers' pids (call before mc_pool_stop). */
static inline void mc_t_get_pool_pids(const mc_pool *pool, mc_t_pool_pids *pp)
{
    pp->zygote = mc_pool_zygote_pid(pool);
    pp->n = mc_pool_worker_pids(pool, pp->workers, MC_T_MAX_PIDS);
    if (pp->n < 0)
        pp->n = 0;
}

/* After mc_pool_stop(): the zygote and every recorded worker are gone. */
#define CHECK_POOL_PIDS_GONE(pp)                                            \
    do {                                                                    \
        CHECK((pp)->zygote > 0);                                            \
        CHECK(mc_t_pid_gone((pp)->zygote));                                 \
        for (int mc_t_i_ = 0; mc_t_i_ < (pp)->n; mc_t_i_++)                 \
            CHECK(mc_t_pid_gone((pp)->workers[mc_t_i_]));                   \
    } while (0)

/* Shared-memory bytes in use by live blocks (UINT64_MAX if unknown). */
static inline uint64_t mc_t_shm_in_use(mc_pool *pool)
{
    mc_pool_stats ps;
    if (mc_pool_get_stats(pool, &ps, NULL, 0) < 0)
        return UINT64_MAX;
    return ps.shm_in_use;
}

/* Workers drop their reference on a finished task just after publishing
   its result (a worker preempted in between, on a loaded machine, holds it
   a while longer): wait up to MC_T_SETTLE_S for the count to settle at
   `want`, or below `limit`. */
#define MC_T_SETTLE_S 10.0
static inline int mc_t_shm_settles_at(mc_pool *pool, uint64_t want)
{
    double t0 = mc_t_now();
    while (mc_t_shm_in_use(pool) != want && mc_t_now() - t0 < MC_T_SETTLE_S)
        mc_t_sleep_ms(1);
    return mc_t_shm_in_use(pool) == want;
}

static inline uint64_t mc_t_shm_settles_below(mc_pool *pool, uint64_t limit)
{
    double t0 = mc_t_now();
    uint64_t now;
    while ((now = mc_t_shm_in_use(pool)) >= limit && mc_t_now() - t0 < MC_T_SETTLE_S)
        mc_t_sleep_ms(1);
    return now;
}

/* ------------------------------------------------------------------ main */

/*
 * The runner (libuv's is the model). Every test case runs in a process of
 * its own, forked from the runner, so that one case that crashes, hangs or
 * corrupts its process is reported by name and the others still run:
 *
 *   test_x                 every case, one after another, each in a child
 *   test_x NAME...         only those cases (an unknown name is an error)
 *   test_x --list          the case names, one a line (ctest registers
 *                          each case as a test of its own from this list)
 *
 * Each child is the leader of a process group of its own, so that the
 * pools it starts (zygote, workers) are in that group too. The runner is a
 * child subreaper, so whatever the case leaves orphaned is reparented to
 * it and reaped here. A case fails if it
 *   - records a CHECK failure (exit status 1),
 *   - dies by a signal, or exits with any other status (a sanitizer
 *     report, for instance),
 *   - runs past its timeout (it is then killed, its whole group with it,
 *     after mc_t_dump_group() has printed where each of its processes is):
 *     MULTICORE_TEST_CASE_TIMEOUT seconds, default MC_T_CASE_TIMEOUT
 *     (MC_T_CASE_TIMEOUT_VALGRIND under valgrind),
 *   - or leaves any process of its group behind once it has exited, for
 *     longer than MC_T_LEFTOVER_GRACE seconds (a pool's zygote and workers
 *     exit by themselves when their caller dies; longer means a leak).
 * The last line is "N passed, N failed"; the exit status is 0 only if
 * every selected case passed (and at least one ran).
 */
#include <sys/prctl.h>
#include <sys/wait.h>

#define MC_T_CASE_TIMEOUT 240.0
#define MC_T_CASE_TIMEOUT_VALGRIND 900.0
#define MC_T_LEFTOVER_GRACE 20.0

static double mc_t_case_timeout(void)
{
    const char *env = getenv("MULTICORE_TEST_CASE_TIMEOUT");
    if (env && *env) {
        char *end;
        double v = strtod(env, &end);
        if (*end == '\0' && v > 0)
            return v;
        fprintf(stderr, "MULTICORE_TEST_CASE_TIMEOUT=%s is not a positive number of seconds\n",
                env);
        exit(2);
    }
    return mc_t_under_valgrind() ? MC_T_CASE_TIMEOUT_VALGRIND : MC_T_CASE_TIMEOUT;
}

/* Reap every child that has exited; the status of `leader` goes to *st and
   *leader_done is set when it is among them. */
static void mc_t_reap(pid_t leader, int *st, int *leader_done)
{
    for (;;) {
        int s;
        pid_t r = waitpid(-1, &s, WNOHANG);
        if (r <= 0)
            return;
        if (r == leader) {
            *st = s;
            *leader_done = 1;
        }
    }
}

/* 1 if process group `pgid` has no process left (zombies reaped first). */
static int mc_t_group_empty(pid_t pgid)
{
    return kill(-pgid, 0) == -1 && errno == ESRCH;
}

/* Print one /proc file of process pid, each line prefixed, at most
   max_lines lines. */
static void mc_t_print_proc_file(pid_t pid, const char *file, const char *prefix, int max_lines)
{
    char path[96], line[512];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    for (int n = 0; n < max_lines && fgets(line, sizeof line, f); n++)
        printf("%s%s%s", prefix, line, strchr(line, '\n') ? "" : "\n");
    fclose(f);
}

/* The user-space stacks of pid, from gdb if it is installed (bounded by
   gdb's own time limit: a stuck gdb must not hang the runner). */
static void mc_t_print_gdb_stack(pid_t pid)
{
    if (access("/usr/bin/gdb", X_OK) != 0)
        return;
    fflush(NULL);
    pid_t g = fork();
    if (g == 0) {
        char target[32];
        snprintf(target, sizeof target, "%d", (int)pid);
        alarm(30);
        execl("/usr/bin/gdb", "gdb", "-nx", "-batch", "-q", "-p", target, "-ex", "thread apply all bt 30",
              (char *)NULL);
        _exit(127);
    }
    if (g > 0)
        while (waitpid(g, NULL, 0) < 0 && errno == EINTR)
            ;
}

/* The processes of group pgid (at most max), from /proc; how many. */
static int mc_t_group_pids(pid_t pgid, pid_t *pids, int max)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    int n = 0;
    pid_t pid, pgrp;
    while (n < max && (pid = mc_t_next_proc(d)) != 0)
        if (mc_t_proc_stat_pgrp(pid, NULL, NULL, &pgrp, NULL) == 0 && pgrp == pgid)
            pids[n++] = pid;
    closedir(d);
    return n;
}

/*
 * A case that timed out is still there, stuck: before it is killed, say
 * where each process of its group is, so that a hang seen once in CI can
 * be explained from its log alone. First the kernel's view, as things are
 * (state, wait channel, the system call with its arguments, the kernel
 * stack); then the group is stopped, so that the user-space stacks gdb
 * prints next are of one instant.
 */
static void mc_t_dump_group(pid_t pgid)
{
    pid_t pids[MC_T_MAX_PIDS];
    int n = mc_t_group_pids(pgid, pids, MC_T_MAX_PIDS);
    printf("---- processes of the timed-out case (group %d), before they are killed\n", (int)pgid);
    for (int i = 0; i < n; i++) {
        char state;
        pid_t ppid;
        if (mc_t_proc_stat(pids[i], &state, &ppid, NULL) != 0)
            continue;
        printf("-- pid %d (parent %d), state %c\n", (int)pids[i], (int)ppid, state);
        mc_t_print_proc_file(pids[i], "wchan", "   wchan: ", 1);
        mc_t_print_proc_file(pids[i], "syscall", "   syscall: ", 1);
        mc_t_print_proc_file(pids[i], "stack", "   kernel: ", 12);
    }
    kill(-pgid, SIGSTOP);
    for (int i = 0; i < n; i++) {
        printf("-- pid %d, user-space stacks:\n", (int)pids[i]);
        mc_t_print_gdb_stack(pids[i]);
    }
    printf("---- end of the timed-out case's processes\n");
}

/* Run case i in a child; returns 1 if it passed. */
static int mc_t_run_case(int i, const sigset_t *old_mask, double timeout)
{
    fflush(NULL);
    pid_t runner = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork: %s\n", strerror(errno));
        return 0;
    }
    if (pid == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* the runner killed: so is the case */
        if (getppid() != runner)
            _exit(3);
        sigprocmask(SIG_SETMASK, old_mask, NULL);
        mc_t_fns[i]();
        fflush(NULL);
        /* exit(), not _exit(): sanitizers' and valgrind's leak checks run at
           exit and make the status non-zero if they report. */
        exit(mc_t_failure_count() == 0 ? 0 : 1);
    }
    setpgid(pid, pid); /* also here: no window in which the group is not made */

    double t0 = mc_t_now(), left_since = 0;
    int st = 0, done = 0, timed_out = 0, leftovers = 0;
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    for (;;) {
        mc_t_reap(pid, &st, &done);
        double now = mc_t_now();
        if (done && mc_t_group_empty(pid))
            break;
        if (!done && !timed_out && now - t0 > timeout) {
            timed_out = 1;
            mc_t_dump_group(pid);
            kill(-pid, SIGKILL);
        }
        if (done && !left_since)
            left_since = now;
        if (done && !leftovers && now - left_since > MC_T_LEFTOVER_GRACE) {
            leftovers = 1;
            kill(-pid, SIGKILL);
        }
        /* Every orphan of the group is our child (subreaper), so each exit
           is a SIGCHLD here; the 100 ms cap only bounds a missed one. */
        struct timespec ts = {0, 100 * 1000000L};
        sigtimedwait(&chld, NULL, &ts);
    }
    double dt = mc_t_now() - t0;
    const char *name = mc_t_names[i];
    if (timed_out) {
        printf("FAIL %s (timed out after %.1f s; killed with its process group)\n", name, timeout);
        return 0;
    }
    if (WIFSIGNALED(st)) {
        printf("FAIL %s (%.2f s; killed by signal %d, %s)\n", name, dt, WTERMSIG(st),
               strsignal(WTERMSIG(st)));
        return 0;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        printf("FAIL %s (%.2f s; exit status %d%s)\n", name, dt, WEXITSTATUS(st),
               WEXITSTATUS(st) == 1 ? ": checks failed" : "");
        return 0;
    }
    if (leftovers) {
        printf("FAIL %s (%.2f s; processes of its group still ran %.0f s after it exited)\n",
               name, dt, MC_T_LEFTOVER_GRACE);
        return 0;
    }
    printf("PASS %s (%.2f s)\n", name, dt);
    return 1;
}

int main(int argc, char **argv)
{
    /* Unbuffered: the workers are forked copies of this process and must
       never inherit pending output. */
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc == 2 && strcmp(argv[1], "--list") == 0) {
        for (int i = 0; i < mc_t_count; i++)
            printf("%s\n", mc_t_names[i]);
        return 0;
    }
    if (mc_t_count >= MC_T_MAX_TESTS) {
        fprintf(stderr, "more than %d tests in one program: raise MC_T_MAX_TESTS\n",
                MC_T_MAX_TESTS - 1);
        return 2;
    }
    for (int a = 1; a < argc; a++) {
        int known = 0;
        for (int i = 0; i < mc_t_count; i++)
            known |= strcmp(argv[a], mc_t_names[i]) == 0;
        if (!known) {
            fprintf(stderr, "%s: no test named '%s' (--list lists them)\n", argv[0], argv[a]);
            return 2;
        }
    }
    double timeout = mc_t_case_timeout();
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
        fprintf(stderr, "prctl(PR_SET_CHILD_SUBREAPER): %s\n", strerror(errno));
        return 2;
    }
    sigset_t chld, old_mask;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &old_mask);

    int passed = 0, failed = 0;
    for (int i = 0; i < mc_t_count; i++) {
        if (argc > 1) {
            int wanted = 0;
            for (int a = 1; a < argc; a++)
                if (strcmp(argv[a], mc_t_names[i]) == 0)
                    wanted = 1;
            if (!wanted)
                continue;
        }
        printf("RUN  %s\n", mc_t_names[i]);
        if (mc_t_run_case(i, &old_mask, timeout))
            passed++;
        else
            failed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}

#endif /* MC_TEST_HARNESS_H */
