/*
 * test_spin.c — the one-spinner rule: at most one idle worker spins for
 * work, a submit skips the wake-up system call while it does, and that
 * must never cost parallelism or strand a task.
 *
 * Covers: two tasks submitted together to an idle, hot pool run on two
 * different workers (the spinner takes one and wakes a sleeper for the
 * other), hundreds of times; a task submitted while the spinning worker
 * is stopped (SIGSTOP, so it can neither take the task nor give up its
 * turn) is still run by the other worker, because a caller waiting for a
 * result wakes a sleeping worker whenever work stays queued for a slice.
 */
#include "harness.h"

#include <signal.h>

static int nap_20ms(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len, (void)ctx;
    mc_t_sleep_ms(20);
    return 0;
}

static int nothing(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len, (void)ctx;
    return 0;
}

TEST(a_pair_of_tasks_runs_on_both_workers)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    int rounds = mc_t_under_valgrind() ? 20 : 100, apart = 0;
    for (int i = 0; i < rounds; i++) {
        /* a trivial task first: its worker is then spinning for work */
        mc_group *g;
        REQUIRE_OK(mc_group_create(pool, &g));
        CHECK_OK(mc_submit(g, nothing, NULL, 0, 5));
        CHECK_OK(mc_group_wait(g, 30));
        CHECK_OK(mc_submit(g, nap_20ms, NULL, 0, 5));
        CHECK_OK(mc_submit(g, nap_20ms, NULL, 0, 5));
        CHECK_OK(mc_group_wait(g, 30));
        mc_result a, b;
        CHECK_OK(mc_group_result(g, 1, &a));
        CHECK_OK(mc_group_result(g, 2, &b));
        CHECK_EQ_INT(a.status, MC_OK);
        CHECK_EQ_INT(b.status, MC_OK);
        apart += a.worker_pid != b.worker_pid;
        mc_group_destroy(g);
    }
    /* A worker that finished its nap could take the second one only if
       the other never woke in 20 ms: that would be the lost wake-up. */
    CHECK_EQ_INT(apart, rounds);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}

TEST(a_stopped_spinner_strands_no_task)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    int rounds = mc_t_under_valgrind() ? 10 : 100, slow = 0;
    double worst = 0;
    for (int i = 0; i < rounds; i++) {
        mc_group *g;
        REQUIRE_OK(mc_group_create(pool, &g));
        CHECK_OK(mc_submit(g, nothing, NULL, 0, 5));
        CHECK_OK(mc_group_wait(g, 30));
        mc_result r;
        CHECK_OK(mc_group_result(g, 0, &r));
        /* the worker that ran it is now most likely the spinner: freeze it */
        pid_t spinner = r.worker_pid;
        REQUIRE(kill(spinner, SIGSTOP) == 0);
        double t0 = mc_t_now();
        CHECK_OK(mc_submit(g, nothing, NULL, 0, 5));
        CHECK_OK(mc_group_wait(g, 5)); /* the other worker must run it */
        double took = mc_t_now() - t0;
        CHECK_OK(mc_group_result(g, 1, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        CHECK(r.worker_pid != spinner);
        REQUIRE(kill(spinner, SIGCONT) == 0);
        slow += took > 0.05;
        worst = took > worst ? took : worst;
        mc_group_destroy(g);
    }
    printf("  %d of %d tasks waited for the caller's nudge; longest wait %.1f ms\n", slow, rounds,
           worst * 1e3);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}
