/*
 * startup.c — start-up against the number of workers: mc_pool_start()
 * until mc_pool_wait_ready() returns (every worker forked and its init
 * done), and until the first result, against bare fork floors measured in
 * the same run, the repetitions of all of them interleaved (this machine's
 * other load comes and goes).
 *
 *   pool        mc_pool_start + mc_pool_wait_ready; "first_result" adds one
 *               empty task's round trip
 *   fork_chain  the floor for the pool's shape: the caller forks one
 *               process, which forks N children one after another; each
 *               child bumps a shared counter and wakes the caller, which
 *               waits for N (the children stay alive until the sample ends)
 *   fork_tree   the same N children forked in parallel: the first process
 *               forks a few children that each fork their share, so that
 *               every core forks (what a parallel start can gain at best)
 *
 * Stopping is not timed. Output: one JSON object per line (bench_util.h):
 * name, mode ("ready" / "first_result"), workers, percentiles in ns.
 *
 *   startup [-m MiB] [repetitions] [workers ...]   (default: 15; 2 8 64)
 *
 * -m MiB first allocates and touches that much private memory, so that
 * every fork copies the page tables of a process of that size (a Python
 * program with numpy imported has some 30-60 MiB of it).
 */
#define _GNU_SOURCE
#include <multicore.h>

#include "bench_util.h"

#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void die(const char *what, int err)
{
    fprintf(stderr, "startup: %s: %s\n", what, err ? mc_strerror(err) : strerror(errno));
    exit(1);
}

static int empty_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)len;
    (void)ctx;
    return 0;
}

static void pool_sample(int workers, int64_t *ready_ns, int64_t *first_ns)
{
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = workers;
    mc_pool *pool;
    mc_group *g;
    mc_result r;
    int err;
    int64_t t0 = bench_now_ns();
    if ((err = mc_pool_start(&pool, &o)) != MC_OK)
        die("mc_pool_start", err);
    if ((err = mc_pool_wait_ready(pool, 60.0)) != MC_OK)
        die("mc_pool_wait_ready", err);
    int64_t t1 = bench_now_ns();
    if ((err = mc_group_create(pool, &g)) != MC_OK || (err = mc_submit(g, empty_task, NULL, 0, -1)) != MC_OK ||
        (err = mc_group_wait(g, 60.0)) != MC_OK || (err = mc_group_result(g, 0, &r)) != MC_OK)
        die("first task", err);
    int64_t t2 = bench_now_ns();
    mc_group_destroy(g);
    if ((err = mc_pool_stop(pool)) != MC_OK)
        die("mc_pool_stop", err);
    *ready_ns = t1 - t0;
    *first_ns = t2 - t0;
}

/* ---- floors ------------------------------------------------------------ */

typedef struct {
    _Atomic uint32_t ready; /* children up */
    _Atomic uint32_t quit;  /* set when the sample ends */
} shared_words;

static shared_words *g_sw;

static void futex_wait(_Atomic uint32_t *w, uint32_t val)
{
    syscall(SYS_futex, w, FUTEX_WAIT, val, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, w, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* A floor child: what a worker does at the least (die with its parent,
   say it is up), then sleep until the sample ends. */
static _Noreturn void floor_child(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    atomic_fetch_add(&g_sw->ready, 1);
    futex_wake(&g_sw->ready);
    while (!atomic_load(&g_sw->quit))
        futex_wait(&g_sw->quit, 0);
    _exit(0);
}

/* Fork n floor children from this process, `fanout` of them forking a
   share of the rest each (fanout 0: all from here, one after another).
   The forking process waits for its own children before it exits. */
static _Noreturn void floor_parent(int n, int fanout)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    int direct = fanout > 0 && fanout < n ? fanout : n;
    int rest = n - direct;
    for (int i = 0; i < direct; i++) {
        int share = fanout > 0 ? rest / direct + (i < rest % direct) : 0;
        pid_t pid = fork();
        if (pid < 0)
            _exit(1);
        if (pid == 0) {
            for (int k = 0; k < share; k++) {
                pid_t c = fork();
                if (c < 0)
                    _exit(1);
                if (c == 0)
                    floor_child();   /* its parent dies at quit; PDEATHSIG targets this forker */
            }
            floor_child();
        }
    }
    /* The subreaper reaps every descendant, grandchildren included. */
    while (wait(NULL) > 0 || errno == EINTR)
        ;
    _exit(0);
}

static int64_t floor_sample(int n, int fanout)
{
    atomic_store(&g_sw->ready, 0);
    atomic_store(&g_sw->quit, 0);
    int64_t t0 = bench_now_ns();
    pid_t z = fork();
    if (z < 0)
        die("fork", 0);
    if (z == 0)
        floor_parent(n, fanout);
    uint32_t v;
    while ((v = atomic_load(&g_sw->ready)) < (uint32_t)n)
        futex_wait(&g_sw->ready, v);
    int64_t dt = bench_now_ns() - t0;
    atomic_store(&g_sw->quit, 1);
    futex_wake(&g_sw->quit);
    int st;
    if (waitpid(z, &st, 0) != z || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        die("floor process", 0);
    return dt;
}

int main(int argc, char **argv)
{
    size_t heap_mib = 0;
    if (argc > 2 && strcmp(argv[1], "-m") == 0) {
        heap_mib = strtoul(argv[2], NULL, 10);
        argc -= 2;
        argv += 2;
    }
    if (heap_mib) {
        char *heap = malloc(heap_mib << 20);
        if (!heap)
            die("malloc", MC_ENOMEM);
        memset(heap, 1, heap_mib << 20);
    }
    int reps = argc > 1 ? atoi(argv[1]) : 15;
    int counts[16] = {2, 8, 64}, ncounts = 3;
    if (argc > 2) {
        ncounts = 0;
        for (int i = 2; i < argc && ncounts < 16; i++)
            counts[ncounts++] = atoi(argv[i]);
    }
    if (reps <= 0 || ncounts == 0) {
        fprintf(stderr, "usage: startup [-m MiB] [repetitions] [workers ...]\n");
        return 2;
    }
    g_sw = mmap(NULL, sizeof *g_sw, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_sw == MAP_FAILED)
        die("mmap", 0);
    int64_t *ready = malloc(sizeof(int64_t) * (size_t)reps), *first = malloc(sizeof(int64_t) * (size_t)reps);
    int64_t *chain = malloc(sizeof(int64_t) * (size_t)reps), *tree = malloc(sizeof(int64_t) * (size_t)reps);
    if (!ready || !first || !chain || !tree)
        die("malloc", MC_ENOMEM);

    for (int c = 0; c < ncounts; c++) {
        int n = counts[c];
        int fanout = n < 4 ? n : 4;
        pool_sample(n, &ready[0], &first[0]); /* warm-up: page cache, allocator */
        for (int i = 0; i < reps; i++) {
            pool_sample(n, &ready[i], &first[i]);
            chain[i] = floor_sample(n, 0);
            tree[i] = floor_sample(n, fanout);
        }
        bench_report("pool", "ready", n, ready, (size_t)reps);
        bench_report("pool", "first_result", n, first, (size_t)reps);
        bench_report("fork_chain", "ready", n, chain, (size_t)reps);
        bench_report("fork_tree", "ready", n, tree, (size_t)reps);
    }
    return 0;
}
