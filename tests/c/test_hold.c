/*
 * test_hold.c — holds keep a task's bytes in place beyond its group.
 *
 * Covers: a caller's hold on a result survives mc_group_destroy() and
 * mc_pool_stop() with its bytes intact, and releasing it frees the shared
 * memory; a worker's hold on its argument survives the task and is released
 * by a later task; holds of a worker that dies are released by the zygote;
 * the per-worker limit is an error, not an overflow.
 */
#include "harness.h"

#include <stdbool.h>

#define BIG (3u << 20) /* a large block: its pages are returned on free */

static int make_big(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)len;
    unsigned char seed;
    memcpy(&seed, arg, 1);
    unsigned char *out = mc_result_alloc(ctx, BIG);
    if (!out)
        return 1;
    for (size_t i = 0; i < BIG; i++)
        out[i] = (unsigned char)(seed + i * 7);
    return 0;
}

static bool big_ok(const unsigned char *p, unsigned char seed)
{
    for (size_t i = 0; i < BIG; i++)
        if (p[i] != (unsigned char)(seed + i * 7))
            return false;
    return true;
}

TEST(caller_hold_outlives_group_and_pool)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    uint64_t base = mc_t_shm_in_use(pool);

    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    unsigned char seeds[3] = {1, 2, 3};
    for (int i = 0; i < 3; i++)
        CHECK_OK(mc_submit(g, make_big, &seeds[i], 1, 5));
    mc_hold *early = NULL;
    CHECK_OK(mc_group_wait(g, 30));
    CHECK_RC(mc_group_hold(g, 3, &early), MC_EINVAL); /* out of range */
    mc_hold *h0 = NULL, *h2 = NULL;
    CHECK_OK(mc_group_hold(g, 0, &h0));
    CHECK_OK(mc_group_hold(g, 2, &h2));
    mc_result r0, r2;
    CHECK_OK(mc_group_result(g, 0, &r0));
    CHECK_OK(mc_group_result(g, 2, &r2));
    mc_group_destroy(g);

    /* The group is gone; the held results are not; the unheld one is (once
       its worker has let go of it too). */
    CHECK(big_ok(r0.data, 1) && big_ok(r2.data, 3));
    uint64_t held = mc_t_shm_settles_below(pool, base + 3 * (uint64_t)BIG);
    CHECK(held >= base + 2 * (uint64_t)BIG && held < base + 3 * (uint64_t)BIG);
    /* Releasing h0 frees result 0 once its worker has let go of it too: a
       worker preempted between publishing task 0 and releasing it can
       still hold it while the other worker ran tasks 1 and 2. */
    mc_hold_release(h0);
    CHECK(mc_t_shm_settles_below(pool, held - BIG + 4096) < held - BIG + 4096);

    /* Past mc_pool_stop() the held bytes are still readable. */
    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK(big_ok(r2.data, 3));
    CHECK_EQ_INT(mc_t_count_maps_matching("memfd:"), before.memfd_maps + 1);
    mc_hold_release(h2); /* the last reference: the region is unmapped */
    CHECK_NOTHING_LEFT(&before);
}

/* ---- worker holds ------------------------------------------------------ */

/* Per worker process: the argument held by the previous task. */
static mc_hold *g_held;
static const unsigned char *g_held_arg;
static size_t g_held_len;

/* Holds its argument and remembers where it is. */
static int hold_arg(const void *arg, size_t len, mc_task_ctx *ctx)
{
    if (g_held)
        return 2;
    if (mc_task_hold(ctx, &g_held) != MC_OK)
        return 1;
    g_held_arg = arg;
    g_held_len = len;
    return 0;
}

/* Checks the argument held by an earlier task is intact, then releases it. */
static int check_and_release(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len, (void)ctx;
    if (!g_held)
        return 3;
    for (size_t i = 0; i < g_held_len; i++)
        if (g_held_arg[i] != (unsigned char)(i * 13))
            return 4;
    mc_hold_release(g_held);
    g_held = NULL;
    return 0;
}

static int hold_many_then_die(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len;
    for (int i = 0; i < 3; i++) {
        mc_hold *h;
        if (mc_task_hold(ctx, &h) != MC_OK)
            return 1;
    }
    _exit(9);
}

static int hold_too_many(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len;
    mc_hold *holds[MC_WORKER_HOLDS];
    int rc = 0;
    for (int i = 0; i < MC_WORKER_HOLDS; i++)
        if (mc_task_hold(ctx, &holds[i]) != MC_OK)
            rc = 1;
    mc_hold *extra = NULL;
    if (mc_task_hold(ctx, &extra) != MC_ENOMEM || extra != NULL)
        rc = 2;
    for (int i = 0; i < MC_WORKER_HOLDS; i++)
        mc_hold_release(holds[i]);
    return rc;
}

static int run_one(mc_pool *pool, mc_task_fn fn, const void *arg, size_t len, mc_result *out)
{
    mc_group *g;
    int rc = mc_group_create(pool, &g);
    if (rc == MC_OK)
        rc = mc_submit(g, fn, arg, len, 5);
    if (rc == MC_OK)
        rc = mc_group_wait(g, 30);
    if (rc == MC_OK)
        rc = mc_group_result(g, 0, out);
    mc_group_destroy(g);
    return rc;
}

TEST(worker_hold_outlives_its_task)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 1)); /* one worker: both tasks run there */
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    uint64_t base = mc_t_shm_in_use(pool);

    unsigned char *arg = malloc(BIG);
    REQUIRE(arg != NULL);
    for (size_t i = 0; i < BIG; i++)
        arg[i] = (unsigned char)(i * 13);
    mc_result r;
    CHECK_OK(run_one(pool, hold_arg, arg, BIG, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    /* The group is destroyed, the worker still holds the argument. */
    CHECK(mc_t_shm_in_use(pool) >= base + BIG);
    CHECK_OK(run_one(pool, check_and_release, NULL, 0, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_EQ_INT(r.task_code, 0);
    CHECK(mc_t_shm_settles_at(pool, base));

    /* The limit per worker is an error. */
    CHECK_OK(run_one(pool, hold_too_many, NULL, 0, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK(mc_t_shm_settles_at(pool, base));

    /* A worker that dies holding tasks: the zygote releases its holds. */
    CHECK_OK(run_one(pool, hold_many_then_die, arg, BIG, &r));
    CHECK_EQ_INT(r.status, MC_EWORKERDIED);
    CHECK_EQ_INT(r.exit_status, 9);
    CHECK(mc_t_shm_settles_at(pool, base));

    free(arg);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}
