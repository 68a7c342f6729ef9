/*
 * test_spin.c — the one-spinner rule: at most one idle worker spins for
 * work, a submit skips the wake-up system call while it does, and that
 * must never cost parallelism or strand a task.
 *
 * Covers: two tasks submitted together to an idle, hot pool run on two
 * different workers (the spinner takes one and wakes a sleeper for the
 * other), hundreds of times; a task submitted while a spinner's mark is
 * up but that spinner never comes (stopped or killed mid-spin) is still
 * run, because a caller waiting for a result wakes a sleeping worker
 * whenever work stays queued for a slice.
 */
#include "harness.h"
#include "../../src/internal.h"

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

/* A spinner that holds the mark but never takes the task (it was stopped
   or killed mid-spin: reproduced here by writing the mark ourselves, as
   stopping a real worker could stop it inside the region lock). */
TEST(a_spinner_that_never_comes_strands_no_task)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    mc_header *h = pool->hdr;
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        mc_t_sleep_ms(20); /* both workers asleep */
        atomic_store(&h->work_spin_until, mc__now_ns() + (int64_t)60 * 1000000000);
        mc_group *g;
        REQUIRE_OK(mc_group_create(pool, &g));
        double t0 = mc_t_now();
        CHECK_OK(mc_submit(g, nothing, NULL, 0, 5));  /* skips the wake-up */
        CHECK_OK(mc_group_wait(g, 10));               /* the wait's nudge wakes one */
        double took = mc_t_now() - t0;
        worst = took > worst ? took : worst;
        mc_result r;
        CHECK_OK(mc_group_result(g, 0, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        atomic_store(&h->work_spin_until, 0);
        mc_group_destroy(g);
    }
    printf("  longest wait for a task behind a phantom spinner: %.1f ms\n", worst * 1e3);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}
