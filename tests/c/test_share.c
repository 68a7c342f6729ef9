/*
 * test_share.c — shared buffers travel by reference, both ways.
 *
 * Covers: a buffer the caller fills is the very memory the task sees (the
 * task's writes are read back by the caller, nothing copied), and it stays
 * valid after the caller drops its hold (the link keeps it); a buffer a
 * task allocates comes back to the caller through a link and outlives the
 * group and the pool; a task returning the buffer it was given links it
 * once; a worker keeping a linked buffer, and dying with it, frees nothing
 * too early or too late; an aborted reservation drops its links; every
 * misuse is an error code (no reservation, a hold that is not a buffer, a
 * buffer of another pool, too many links, unknown links, NULL pool in the
 * caller). Shared memory in use returns to its baseline after each case.
 */
#include "harness.h"

#include <stdbool.h>

#define BIG (3u << 20)

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i * 7);
}

static bool filled(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i * 7))
            return false;
    return true;
}

/* Submits fn with the links of `bufs` as its argument (one byte each). */
static int submit_linked(mc_group *g, mc_task_fn fn, mc_hold **bufs, int n)
{
    unsigned char *arg;
    int rc = mc_submit_reserve(g, (size_t)n + 1, (void **)&arg);
    if (rc != MC_OK)
        return rc;
    arg[0] = (unsigned char)n;
    for (int i = 0; i < n; i++) {
        unsigned link;
        if ((rc = mc_submit_share(g, bufs[i], &link)) != MC_OK) {
            mc_submit_abort(g);
            return rc;
        }
        arg[1 + i] = (unsigned char)link;
    }
    return mc_submit_commit(g, fn, 5);
}

/* ---- tasks ------------------------------------------------------------- */

/* Checks link arg[1] holds the caller's pattern, then overwrites it in place. */
static int check_and_overwrite(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)len;
    const unsigned char *a = arg;
    size_t n;
    unsigned char *p = (unsigned char *)mc_task_link_data(ctx, a[1], &n);
    if (!p || n != BIG)
        return 1;
    if (!filled(p, n, 1))
        return 2;
    if (mc_task_link_data(ctx, 7, NULL) != NULL)
        return 3;
    mc_hold *none = NULL;
    if (mc_task_link_hold(ctx, MC_SHARE_MAX, &none) != MC_EINVAL || none)
        return 4;
    fill(p, n, 2);
    return 0;
}

/* Opened by task_buffer_comes_back_by_link once it has seen the task
   unfinished (made before the pool starts, so the workers share it). */
static mc_t_gate *g_gate;

/* Allocates a buffer, fills it and returns it by link (its hold dropped).
   With a one-byte argument it first waits for g_gate. */
static int make_shared(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg;
    if (len == 1 && mc_t_gate_wait(g_gate, 60) != 0)
        return 5;
    mc_hold *b;
    if (mc_buffer_alloc(NULL, BIG, &b) != MC_OK)
        return 1;
    size_t n;
    unsigned char *p = mc_hold_data(b, &n);
    if (!p || n != BIG)
        return 2;
    fill(p, n, 5);
    unsigned link = 99, again = 98;
    int rc = mc_result_share(ctx, b, &link);
    int rc2 = mc_result_share(ctx, b, &again);
    mc_hold_release(b);
    if (rc != MC_OK || rc2 != MC_OK || link != again)
        return 3;
    unsigned char *out = mc_result_alloc(ctx, 1);
    if (!out)
        return 4;
    out[0] = (unsigned char)link;
    return 0;
}

/* Returns the buffer it was given: it is linked already, same index. */
static int give_back(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)len;
    const unsigned char *a = arg;
    mc_hold *mine;
    if (mc_task_link_hold(ctx, a[1], &mine) != MC_OK)
        return 1;
    unsigned link = 99;
    int rc = mc_result_share(ctx, mine, &link);
    mc_hold_release(mine);
    if (rc != MC_OK || link != a[1])
        return 2;
    return mc_result_set(ctx, &link, 1) == MC_OK ? 0 : 3;
}

/* Per worker process: a linked buffer kept past the task. */
static mc_hold *g_kept;

static int keep_link(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)len;
    const unsigned char *a = arg;
    return mc_task_link_hold(ctx, a[1], &g_kept) == MC_OK ? 0 : 1;
}

static int check_kept_and_release(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len, (void)ctx;
    size_t n;
    const unsigned char *p = g_kept ? mc_hold_data(g_kept, &n) : NULL;
    if (!p || n != BIG || !filled(p, n, 1))
        return 1;
    mc_hold_release(g_kept);
    g_kept = NULL;
    return 0;
}

/* kept reachable (static) so that memcheck does not count them as leaks */
static mc_hold *g_dying_link, *g_dying_own;

static int keep_and_die(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)len;
    const unsigned char *a = arg;
    if (mc_task_link_hold(ctx, a[1], &g_dying_link) != MC_OK ||
        mc_buffer_alloc(NULL, BIG, &g_dying_own) != MC_OK)
        return 1;
    _exit(7);
}

static int nothing(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len, (void)ctx;
    return 0;
}

/* ---- tests ------------------------------------------------------------- */

static int wait_result(mc_group *g, size_t i, mc_result *r)
{
    int rc = mc_group_wait_one(g, i, 30);
    return rc == MC_OK ? mc_group_result(g, i, r) : rc;
}

TEST(caller_buffer_is_the_tasks_memory)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    uint64_t base = mc_t_shm_in_use(pool);

    mc_hold *b;
    REQUIRE_OK(mc_buffer_alloc(pool, BIG, &b));
    size_t n = 0;
    unsigned char *p = mc_hold_data(b, &n);
    REQUIRE(p != NULL && n == BIG);
    fill(p, n, 1);
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(submit_linked(g, check_and_overwrite, &b, 1));
    mc_result r;
    CHECK_OK(wait_result(g, 0, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_EQ_INT(r.task_code, 0);
    CHECK(filled(p, n, 2)); /* the task wrote into our memory */

    /* The link alone keeps it: drop our hold before the task runs. */
    fill(p, n, 1);
    CHECK_OK(submit_linked(g, check_and_overwrite, &b, 1));
    mc_hold_release(b);
    CHECK_OK(wait_result(g, 1, &r));
    CHECK_EQ_INT(r.task_code, 0);
    mc_group_destroy(g);
    CHECK(mc_t_shm_settles_at(pool, base));
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}

TEST(task_buffer_comes_back_by_link)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    REQUIRE((g_gate = mc_t_gate_new()) != NULL);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    uint64_t base = mc_t_shm_in_use(pool);

    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    /* The task waits at the gate: it cannot have finished here. */
    CHECK_OK(mc_submit(g, make_shared, "g", 1, 5));
    mc_hold *early = NULL;
    CHECK_RC(mc_group_link_hold(g, 0, 0, &early), MC_ETIMEDOUT);
    CHECK(early == NULL);
    mc_t_gate_open(g_gate);
    mc_result r;
    CHECK_OK(wait_result(g, 0, &r));
    CHECK_EQ_INT(r.task_code, 0);
    REQUIRE(r.len == 1);
    unsigned link = ((const unsigned char *)r.data)[0];
    mc_hold *got = NULL, *bad = NULL;
    CHECK_RC(mc_group_link_hold(g, 0, link + 1, &bad), MC_EINVAL);
    CHECK_RC(mc_group_link_hold(g, 1, link, &bad), MC_EINVAL);
    CHECK(bad == NULL);
    REQUIRE_OK(mc_group_link_hold(g, 0, link, &got));
    mc_group_destroy(g);
    size_t n = 0;
    const unsigned char *p = mc_hold_data(got, &n);
    CHECK(p && n == BIG && filled(p, n, 5));
    CHECK(mc_t_shm_in_use(pool) >= base + BIG);

    /* A buffer that came back can be sent on, to another task. */
    unsigned char *w = mc_hold_data(got, NULL);
    fill(w, BIG, 1);
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(submit_linked(g, check_and_overwrite, &got, 1));
    CHECK_OK(wait_result(g, 0, &r));
    CHECK_EQ_INT(r.task_code, 0);
    CHECK(filled(p, BIG, 2));
    mc_group_destroy(g);

    /* Past mc_pool_stop() the bytes stay readable until released. */
    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK(filled(p, BIG, 2));
    mc_hold_release(got);
    mc_t_gate_free(g_gate);
    CHECK_NOTHING_LEFT(&before);
}

TEST(returning_a_given_buffer_links_it_once)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 1));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    uint64_t base = mc_t_shm_in_use(pool);
    mc_hold *b;
    REQUIRE_OK(mc_buffer_alloc(pool, BIG, &b));
    fill(mc_hold_data(b, NULL), BIG, 3);
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(submit_linked(g, give_back, &b, 1));
    mc_hold_release(b);
    mc_result r;
    CHECK_OK(wait_result(g, 0, &r));
    CHECK_EQ_INT(r.task_code, 0);
    mc_hold *got = NULL;
    CHECK_OK(mc_group_link_hold(g, 0, ((const unsigned char *)r.data)[0], &got));
    CHECK(got && filled(mc_hold_data(got, NULL), BIG, 3));
    mc_group_destroy(g);
    mc_hold_release(got);
    CHECK(mc_t_shm_settles_at(pool, base));
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}

TEST(worker_keeps_a_link_and_dies_with_one)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 1)); /* one worker: every task runs there */
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    uint64_t base = mc_t_shm_in_use(pool);
    mc_hold *b;
    REQUIRE_OK(mc_buffer_alloc(pool, BIG, &b));
    fill(mc_hold_data(b, NULL), BIG, 1);

    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(submit_linked(g, keep_link, &b, 1));
    mc_hold_release(b); /* now only the task, then the worker's hold, keep it */
    mc_result r;
    CHECK_OK(wait_result(g, 0, &r));
    CHECK_EQ_INT(r.task_code, 0);
    mc_group_destroy(g);
    CHECK(mc_t_shm_in_use(pool) >= base + BIG); /* the worker holds it */
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(mc_submit(g, check_kept_and_release, NULL, 0, 5));
    CHECK_OK(wait_result(g, 0, &r));
    CHECK_EQ_INT(r.task_code, 0);
    mc_group_destroy(g);
    CHECK(mc_t_shm_settles_at(pool, base));

    /* Dying with a link held and a buffer of its own: the zygote frees both. */
    REQUIRE_OK(mc_buffer_alloc(pool, BIG, &b));
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(submit_linked(g, keep_and_die, &b, 1));
    mc_hold_release(b);
    CHECK_OK(wait_result(g, 0, &r));
    CHECK_EQ_INT(r.status, MC_EWORKERDIED);
    mc_group_destroy(g);
    CHECK(mc_t_shm_settles_at(pool, base));
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}

TEST(misuse_is_an_error)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool, *other;
    REQUIRE_OK(mc_t_start(&pool, 1));
    REQUIRE_OK(mc_t_start(&other, 1));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    uint64_t base = mc_t_shm_in_use(pool);

    mc_hold *none = NULL;
    CHECK_RC(mc_buffer_alloc(NULL, 16, &none), MC_EINVAL); /* not a worker */
    CHECK(none == NULL);
    CHECK(mc_hold_data(NULL, NULL) == NULL);

    mc_hold *bufs[MC_SHARE_MAX + 1], *foreign;
    for (int i = 0; i <= MC_SHARE_MAX; i++)
        REQUIRE_OK(mc_buffer_alloc(pool, 100, &bufs[i]));
    REQUIRE_OK(mc_buffer_alloc(other, 100, &foreign));
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    unsigned link;
    CHECK_RC(mc_submit_share(g, bufs[0], &link), MC_ESTATE); /* no reservation */

    /* A finished task's hold is not a buffer. */
    CHECK_OK(mc_submit(g, nothing, NULL, 0, 5));
    CHECK_OK(mc_group_wait(g, 30));
    mc_hold *task_hold;
    REQUIRE_OK(mc_group_hold(g, 0, &task_hold));
    CHECK(mc_hold_data(task_hold, NULL) == NULL);

    void *arg;
    REQUIRE_OK(mc_submit_reserve(g, 1, &arg));
    CHECK_RC(mc_submit_share(g, task_hold, &link), MC_EINVAL);
    CHECK_RC(mc_submit_share(g, foreign, &link), MC_EINVAL);
    CHECK_RC(mc_submit_share(g, NULL, &link), MC_EINVAL);
    unsigned first = 99, again = 98;
    CHECK_OK(mc_submit_share(g, bufs[0], &first));
    CHECK_OK(mc_submit_share(g, bufs[0], &again));
    CHECK_EQ_INT((int)first, (int)again);
    for (int i = 1; i < MC_SHARE_MAX; i++) {
        CHECK_OK(mc_submit_share(g, bufs[i], &link));
        CHECK_EQ_INT((int)link, i);
    }
    CHECK_RC(mc_submit_share(g, bufs[MC_SHARE_MAX], &link), MC_ENOMEM);
    /* An aborted reservation drops its links: releasing the holds frees all. */
    mc_submit_abort(g);
    mc_hold_release(task_hold);
    mc_group_destroy(g);
    for (int i = 0; i <= MC_SHARE_MAX; i++)
        mc_hold_release(bufs[i]);
    mc_hold_release(foreign);
    CHECK(mc_t_shm_settles_at(pool, base));
    CHECK_OK(mc_pool_stop(other));
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}
