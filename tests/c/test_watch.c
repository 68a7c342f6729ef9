/*
 * test_watch.c — waiting for whichever task finishes first, across groups.
 *
 * Covers: a fast task in one group is seen while a slow one in another is
 * still running; thousands of one-task groups are each seen finished with
 * no lost wake-up (every wait returns long before its timeout); a watcher
 * with nothing finishing times out and does not spin.
 */
#include "harness.h"

#include <stdbool.h>

static int sleep_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    int ms;
    memcpy(&ms, arg, sizeof ms);
    mc_t_sleep_ms(ms);
    return mc_result_set(ctx, arg, len);
}

static bool finished(mc_group *g)
{
    return mc_group_wait(g, 0) == MC_OK;
}

/* Shut until first_finished_across_groups has seen the fast task finish
   (made before the pool starts, so the workers share it). */
static mc_t_gate *g_gate;

static int gated_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len, (void)ctx;
    return mc_t_gate_wait(g_gate, 60) == 0 ? 0 : 1;
}

TEST(first_finished_across_groups)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    REQUIRE((g_gate = mc_t_gate_new()) != NULL);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    mc_group *slow, *fast;
    REQUIRE_OK(mc_group_create(pool, &slow));
    REQUIRE_OK(mc_group_create(pool, &fast));
    int short_ms = 20;
    /* The slow task waits at the gate, opened only after the watch: it
       cannot finish first. */
    CHECK_OK(mc_submit(slow, gated_task, NULL, 0, 5));
    CHECK_OK(mc_submit(fast, sleep_task, &short_ms, sizeof short_ms, 5));

    double t0 = mc_t_now();
    uint32_t seen = mc_watch_begin(slow);
    int rc = MC_OK;
    while (!finished(slow) && !finished(fast) && rc == MC_OK)
        rc = mc_watch_wait(slow, &seen, 10);
    mc_watch_end(slow);
    double dt = mc_t_now() - t0;
    CHECK_OK(rc);
    CHECK(finished(fast) && !finished(slow));
    printf("  the fast task was seen after %.1f ms\n", dt * 1e3);
    CHECK(dt < 5.0); /* woken by the completion, not at the 10 s slice */
    mc_t_gate_open(g_gate);
    CHECK_OK(mc_group_wait(slow, 30));
    mc_group_destroy(slow);
    mc_group_destroy(fast);
    CHECK_OK(mc_pool_stop(pool));
    mc_t_gate_free(g_gate);
    CHECK_NOTHING_LEFT(&before);
}

static int echo_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    return mc_result_set(ctx, arg, len);
}

TEST(no_lost_wakeups)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    double worst = 0;
    for (int i = 0; i < 3000; i++) {
        mc_group *g;
        REQUIRE_OK(mc_group_create(pool, &g));
        uint32_t seen = mc_watch_begin(g);
        CHECK_OK(mc_submit(g, echo_task, &i, sizeof i, 5));
        double t0 = mc_t_now();
        int rc = MC_OK;
        while (!finished(g) && rc == MC_OK)
            rc = mc_watch_wait(g, &seen, 10);
        mc_watch_end(g);
        CHECK_OK(rc);
        double dt = mc_t_now() - t0;
        if (dt > worst)
            worst = dt;
        mc_group_destroy(g);
    }
    printf("  3000 waits, the slowest %.2f ms\n", worst * 1e3);
    CHECK(worst < 1.0); /* a lost wake-up would sit out the 10 s timeout */

    /* nothing to finish: a timed wait times out, asleep */
    mc_group *idle;
    REQUIRE_OK(mc_group_create(pool, &idle));
    uint32_t seen = mc_watch_begin(idle);
    double cpu0 = mc_t_thread_cpu();
    CHECK_RC(mc_watch_wait(idle, &seen, 0.3), MC_ETIMEDOUT);
    mc_watch_end(idle);
    CHECK(mc_t_thread_cpu() - cpu0 < 0.05);
    mc_group_destroy(idle);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}
