/* test_backpressure.c — a full queue blocks mc_submit, with a timeout. */
#include "harness.h"

/* arg: {sleep_ms, value}; sleeps, then returns value as its result. */
static int task_sleep_echo(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    if (arg_len != 2 * sizeof(int32_t))
        return 99;
    int32_t a[2];
    memcpy(a, arg, sizeof a);
    mc_t_sleep_ms(a[0]);
    return mc_result_set(ctx, &a[1], sizeof a[1]) == MC_OK ? 0 : 1;
}

static int start_pool(mc_pool **pool, int workers, size_t queue_capacity)
{
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = workers;
    o.queue_capacity = queue_capacity;
    return mc_pool_start(pool, &o);
}

static int echo_value(mc_group *g, size_t i, int32_t *v)
{
    mc_result r;
    if (mc_group_result(g, i, &r) != MC_OK || r.status != MC_OK || r.len != sizeof *v)
        return 0;
    memcpy(v, r.data, sizeof *v);
    return 1;
}

TEST(test_full_queue_times_out_then_succeeds)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(start_pool(&pool, 1, 4));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));

    /* Fill: 4 tasks wait in the queue, and possibly one more is already
       running in the single worker. The 200 ms tasks make no room for the
       50 ms that each timed-out submit waits. */
    int accepted = 0, rc = MC_OK;
    double blocked_for = 0;
    for (int i = 0; i < 20; i++) {
        int32_t a[2] = {200, i};
        double t0 = mc_t_now();
        rc = mc_submit(g, task_sleep_echo, a, sizeof a, 0.05);
        if (rc == MC_ETIMEDOUT) {
            blocked_for = mc_t_now() - t0;
            break;
        }
        CHECK_OK(rc);
        if (rc != MC_OK)
            break;
        accepted++;
    }
    printf("  accepted %d tasks before MC_ETIMEDOUT (blocked %.3f s)\n", accepted, blocked_for);
    CHECK_RC(rc, MC_ETIMEDOUT);
    CHECK(accepted >= 4 && accepted <= 5);
    CHECK(blocked_for >= 0.045);             /* it did wait for room */
    CHECK_EQ_INT(mc_group_size(g), accepted); /* the timed-out task is not in the group */

    /* timeout 0 does not wait at all on a full queue */
    int32_t z[2] = {200, -1};
    CHECK_RC(mc_submit(g, task_sleep_echo, z, sizeof z, 0), MC_ETIMEDOUT);

    /* with a longer timeout the submit succeeds once a task leaves the queue */
    int32_t a[2] = {200, accepted};
    double t0 = mc_t_now();
    CHECK_OK(mc_submit(g, task_sleep_echo, a, sizeof a, 10));
    printf("  blocking submit waited %.3f s for room\n", mc_t_now() - t0);
    int total = accepted + 1;
    /* and one that waits forever (negative timeout) */
    a[1] = total;
    CHECK_OK(mc_submit(g, task_sleep_echo, a, sizeof a, -1));
    total++;
    CHECK_EQ_INT(mc_group_size(g), total);

    /* the group is far from done: short waits time out */
    CHECK_RC(mc_group_wait(g, 0.05), MC_ETIMEDOUT);
    CHECK_RC(mc_group_wait(g, 0), MC_ETIMEDOUT);
    CHECK_RC(mc_group_wait_one(g, (size_t)total - 1, 0.05), MC_ETIMEDOUT);
    mc_result r;
    CHECK_RC(mc_group_result(g, (size_t)total - 1, &r), MC_ETIMEDOUT);

    CHECK_OK(mc_group_wait(g, 60));
    for (int i = 0; i < total; i++) {
        int32_t v = -2;
        CHECK(echo_value(g, (size_t)i, &v));
        CHECK_EQ_INT(v, i);
    }
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

/* Many more tasks than the queue holds, submitted with blocking submits:
   nothing is lost or reordered. */
TEST(test_many_tasks_small_queue)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(start_pool(&pool, 2, 4));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    enum { N = 3000 };
    for (int32_t i = 0; i < N; i++) {
        int32_t a[2] = {0, i * 3 + 1};
        int rc = mc_submit(g, task_sleep_echo, a, sizeof a, -1);
        CHECK_OK(rc);
        if (rc != MC_OK)
            break;
    }
    CHECK_OK(mc_group_wait(g, 60));
    int bad = 0;
    for (int32_t i = 0; i < N; i++) {
        int32_t v = -1;
        if (!echo_value(g, (size_t)i, &v) || v != i * 3 + 1)
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

/* The queue capacity is shared by groups: a full queue blocks another
   group's submit as well, and room made by one group lets the other in. */
TEST(test_backpressure_across_groups)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(start_pool(&pool, 1, 4));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    mc_group *g1 = NULL, *g2 = NULL;
    REQUIRE_OK(mc_group_create(pool, &g1));
    REQUIRE_OK(mc_group_create(pool, &g2));
    int n1 = 0;
    for (int i = 0; i < 20; i++) {
        int32_t a[2] = {150, i};
        int rc = mc_submit(g1, task_sleep_echo, a, sizeof a, 0.05);
        if (rc == MC_ETIMEDOUT)
            break;
        CHECK_OK(rc);
        n1++;
    }
    CHECK(n1 >= 4 && n1 <= 5);
    int32_t b[2] = {0, 1234};
    CHECK_RC(mc_submit(g2, task_sleep_echo, b, sizeof b, 0.05), MC_ETIMEDOUT);
    CHECK_OK(mc_submit(g2, task_sleep_echo, b, sizeof b, 10));
    CHECK_OK(mc_group_wait(g2, 30));
    int32_t v = 0;
    CHECK(echo_value(g2, 0, &v));
    CHECK_EQ_INT(v, 1234);
    CHECK_OK(mc_group_wait(g1, 30));
    for (int i = 0; i < n1; i++) {
        CHECK(echo_value(g1, (size_t)i, &v));
        CHECK_EQ_INT(v, i);
    }
    mc_group_destroy(g1);
    mc_group_destroy(g2);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}
