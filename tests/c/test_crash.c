/*
 * test_crash.c — a worker that dies loses exactly the task it was running.
 *
 * Covers: the failed task's outcome names the worker and how it died; the
 * other tasks of the group complete; the pool replaces the worker by itself;
 * and a chaos run that SIGKILLs random workers under load, checking that
 * exactly the killed tasks failed, every other result is right, nothing ran
 * twice and the pool ends at full strength.
 */
#include "harness.h"

#include <sys/mman.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static int echo_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    return mc_result_set(ctx, arg, len);
}

static int die_by_signal(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len, (void)ctx;
    /* Sanitizers catch SIGSEGV to print a report; die the plain way. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGSEGV, &dfl, NULL);
    raise(SIGSEGV);
    return 0;
}

static int die_by_exit(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len, (void)ctx;
    _exit(3);
}

/* Waits until the pool has `want` live workers none of which is in
   `old`, or `seconds` pass; returns how long it took (negative: never). */
static double wait_for_replacement(mc_pool *pool, int want, pid_t old, double seconds)
{
    double t0 = mc_t_now();
    while (mc_t_now() - t0 < seconds) {
        pid_t pids[MC_T_MAX_PIDS];
        int n = mc_pool_worker_pids(pool, pids, MC_T_MAX_PIDS);
        int fresh = 0;
        for (int i = 0; i < n; i++)
            fresh += pids[i] != old;
        if (n == want && fresh == want)
            return mc_t_now() - t0;
        mc_t_sleep_ms(1);
    }
    return -1;
}

TEST(crashed_task_fails_alone)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 10));
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));

    char msg[] = "still here";
    CHECK_OK(mc_submit(g, echo_task, msg, sizeof msg, 5));
    CHECK_OK(mc_submit(g, die_by_signal, NULL, 0, 5));
    CHECK_OK(mc_submit(g, echo_task, msg, sizeof msg, 5));
    CHECK_OK(mc_submit(g, die_by_exit, NULL, 0, 5));
    for (int i = 0; i < 50; i++)
        CHECK_OK(mc_submit(g, echo_task, msg, sizeof msg, 5));
    CHECK_OK(mc_group_wait(g, 30));

    mc_result r;
    CHECK_OK(mc_group_result(g, 1, &r));
    CHECK_EQ_INT(r.status, MC_EWORKERDIED);
    CHECK_EQ_INT(r.term_signal, SIGSEGV);
    CHECK(r.worker_pid > 0);
    CHECK(mc_t_pid_gone(r.worker_pid));
    CHECK_OK(mc_group_result(g, 3, &r));
    CHECK_EQ_INT(r.status, MC_EWORKERDIED);
    CHECK_EQ_INT(r.term_signal, 0);
    CHECK_EQ_INT(r.exit_status, 3);
    for (size_t i = 0; i < mc_group_size(g); i++) {
        if (i == 1 || i == 3)
            continue;
        CHECK_OK(mc_group_result(g, i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        CHECK(r.len == sizeof msg && memcmp(r.data, msg, sizeof msg) == 0);
    }
    mc_group_destroy(g);

    /* Both dead workers are replaced (the last death may be very recent). */
    pid_t pids[8];
    double t0 = mc_t_now();
    while (mc_pool_worker_pids(pool, pids, 8) < 2 && mc_t_now() - t0 < 1.0)
        mc_t_sleep_ms(1);
    CHECK_EQ_INT(mc_pool_worker_pids(pool, pids, 8), 2);
    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK_NOTHING_LEFT(&before);
}

static int slow_echo(const void *arg, size_t len, mc_task_ctx *ctx)
{
    mc_t_sleep_ms(20);
    return mc_result_set(ctx, arg, len);
}

TEST(killed_worker_is_replaced_quickly)
{
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 10));
    pid_t pids[2];
    REQUIRE(mc_pool_worker_pids(pool, pids, 2) == 2);
    CHECK_EQ_INT(kill(pids[0], SIGKILL), 0);
    double took = wait_for_replacement(pool, 2, pids[0], 5.0);
    printf("  replacement worker live after %.1f ms\n", took * 1e3);
    CHECK(took >= 0);
    CHECK(took < 0.1);

    /* The replacement takes work. */
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    for (int i = 0; i < 10; i++)
        CHECK_OK(mc_submit(g, slow_echo, &i, sizeof i, 5));
    CHECK_OK(mc_group_wait(g, 10));
    for (int i = 0; i < 10; i++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        CHECK(r.len == sizeof i && memcmp(r.data, &i, sizeof i) == 0);
    }
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
}

/* ---- chaos ------------------------------------------------------------ */

#define CHAOS_TASKS 10000
#define CHAOS_KILLS 120

static _Atomic int *g_runs; /* shared with the workers: runs per task */

static int chaos_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)len;
    long v;
    memcpy(&v, arg, sizeof v);
    g_runs[v]++;
    /* Vary the time spent and the result size, so kills land everywhere:
       in the lock, in the arena, while writing, while publishing. */
    long spin = 0;
    for (long i = 0; i < (v % 37) * 200; i++)
        __asm__ __volatile__("" : "+r"(spin) : "r"(i)); /* not optimised away */
    size_t n = 8 + (size_t)(v % 13) * 64;
    long *out = mc_result_alloc(ctx, n * sizeof(long));
    if (!out)
        return 1;
    for (size_t i = 0; i < n; i++)
        out[i] = v * 3 + (long)i;
    return 0;
}

TEST(chaos_random_kills)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    g_runs = mmap(NULL, CHAOS_TASKS * sizeof *g_runs, PROT_READ | PROT_WRITE,
                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(g_runs != MAP_FAILED);

    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 2;
    o.queue_capacity = 32; /* backpressure paces the submitter with the workers */
    mc_pool *pool;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    REQUIRE_OK(mc_pool_wait_ready(pool, 10));
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));

    unsigned seed = 12345;
    int kills = 0;
    int every = CHAOS_TASKS / (CHAOS_KILLS + 10);
    for (long i = 0; i < CHAOS_TASKS; i++) {
        CHECK_OK(mc_submit(g, chaos_task, &i, sizeof i, 30));
        if (i % every == every - 1 && kills < CHAOS_KILLS) {
            pid_t pids[2];
            int n = mc_pool_worker_pids(pool, pids, 2);
            if (n > 0 && kill(pids[rand_r(&seed) % (unsigned)n], SIGKILL) == 0)
                kills++;
        }
    }
    CHECK_OK(mc_group_wait(g, 120));

    int failed = 0, wrong = 0, not_once = 0;
    for (long i = 0; i < CHAOS_TASKS; i++) {
        mc_result r;
        if (mc_group_result(g, (size_t)i, &r) != MC_OK) {
            wrong++;
            continue;
        }
        if (r.status == MC_EWORKERDIED) {
            failed++;
            wrong += r.term_signal != SIGKILL;
            continue;
        }
        size_t n = 8 + (size_t)(i % 13) * 64;
        const long *out = r.data;
        if (r.status != MC_OK || r.len != n * sizeof(long) || out[0] != i * 3 ||
            out[n - 1] != i * 3 + (long)n - 1)
            wrong++;
        if (g_runs[i] != 1)
            not_once++;
    }
    printf("  %d tasks, %d kills, %d tasks failed with their worker\n", CHAOS_TASKS, kills, failed);
    CHECK(kills >= 100);
    CHECK(failed <= kills);
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(not_once, 0);
    mc_group_destroy(g);

    /* Back to full strength. */
    double t0 = mc_t_now();
    pid_t pids[2];
    while (mc_pool_worker_pids(pool, pids, 2) < 2 && mc_t_now() - t0 < 5)
        mc_t_sleep_ms(1);
    CHECK_EQ_INT(mc_pool_worker_pids(pool, pids, 2), 2);

    /* And still correct afterwards. */
    REQUIRE_OK(mc_group_create(pool, &g));
    for (long i = 0; i < 100; i++)
        CHECK_OK(mc_submit(g, echo_task, &i, sizeof i, 5));
    CHECK_OK(mc_group_wait(g, 30));
    for (long i = 0; i < 100; i++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)i, &r));
        CHECK(r.status == MC_OK && r.len == sizeof i && memcmp(r.data, &i, sizeof i) == 0);
    }
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    munmap(g_runs, CHAOS_TASKS * sizeof *g_runs);
    CHECK_NOTHING_LEFT(&before);
}

/* ---- the caller dies -------------------------------------------------- */

TEST(caller_killed_takes_its_pool_along)
{
    /* This process becomes the subreaper of what it starts, so the orphaned
       zygote and workers are reparented here and can be reaped here. */
    REQUIRE(prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t caller = fork();
    REQUIRE(caller >= 0);
    if (caller == 0) {
        close(fds[0]);
        mc_pool *pool;
        if (mc_t_start(&pool, 2) != MC_OK || mc_pool_wait_ready(pool, 10) != MC_OK)
            _exit(1);
        pid_t pids[3] = {mc_pool_zygote_pid(pool)};
        if (mc_pool_worker_pids(pool, pids + 1, 2) != 2 || write(fds[1], pids, sizeof pids) != sizeof pids)
            _exit(1);
        for (;;)
            pause(); /* until SIGKILL: no mc_pool_stop, no atexit */
    }
    close(fds[1]);
    pid_t pids[3];
    CHECK(read(fds[0], pids, sizeof pids) == (ssize_t)sizeof pids);
    close(fds[0]);

    double t0 = mc_t_now();
    CHECK_EQ_INT(kill(caller, SIGKILL), 0);
    int st;
    CHECK(waitpid(caller, &st, 0) == caller);
    /* The zygote kills and reaps its workers, then exits; it is ours now. */
    bool zygote_reaped = false, workers_gone = false;
    while (!(zygote_reaped && workers_gone) && mc_t_now() - t0 < 5.0) {
        pid_t p = waitpid(-1, &st, WNOHANG);
        zygote_reaped |= p == pids[0];
        workers_gone = mc_t_pid_gone(pids[1]) && mc_t_pid_gone(pids[2]);
        if (p <= 0)
            mc_t_sleep_ms(1);
    }
    double took = mc_t_now() - t0;
    printf("  zygote and workers gone %.1f ms after the caller's SIGKILL\n", took * 1e3);
    CHECK(zygote_reaped);
    CHECK(workers_gone);
    CHECK(took < 1.0);
    for (int i = 0; i < 3; i++)
        CHECK(mc_t_pid_gone(pids[i]));
    prctl(PR_SET_CHILD_SUBREAPER, 0);
}
