/* test_errors.c — error codes, invalid arguments, task failures, timeouts,
   use after stop, utilities. */
#include <limits.h>
#include <sys/wait.h>

#include "harness.h"

static int task_fail7(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    mc_result_set(ctx, "seven went wrong", 16);
    return 7;
}

static int task_fail_negative(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    (void)ctx;
    return -3;
}

static int task_ok(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    return mc_result_set(ctx, arg, arg_len) == MC_OK ? 0 : 1;
}

static int task_sleep_ms(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)ctx;
    if (arg_len == sizeof(int))
        mc_t_sleep_ms(*(const int *)arg);
    return 0;
}

TEST(test_strerror)
{
    static const int codes[] = {MC_OK,        MC_EINVAL,      MC_ENOMEM,    MC_ETIMEDOUT,
                                MC_EINTR,     MC_ESTATE,      MC_EWORKERDIED, MC_ETASK,
                                MC_ECANCELED, MC_ESYSTEM,     MC_EPOOLDIED, MC_EWORKERINIT};
    enum { NC = sizeof codes / sizeof codes[0] };
    /* the codes are 0 .. -11 */
    for (int i = 0; i < NC; i++)
        CHECK_EQ_INT(codes[i], -i);
    for (int i = 0; i < NC; i++) {
        const char *s = mc_strerror(codes[i]);
        REQUIRE(s != NULL);
        CHECK(s[0] != '\0');
        for (int j = 0; j < i; j++)
            if (strcmp(s, mc_strerror(codes[j])) == 0) {
                fprintf(stderr, "codes %d and %d share \"%s\"\n", codes[i], codes[j], s);
                CHECK(0);
            }
    }
    static const int unknown[] = {1, -12, -1000, 12345, INT_MIN, INT_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        const char *s = mc_strerror(unknown[i]);
        REQUIRE(s != NULL);
        CHECK(s[0] != '\0');
        for (int j = 1; j < NC; j++) /* not confused with a real error */
            CHECK(strcmp(s, mc_strerror(codes[j])) != 0);
    }
}

TEST(test_invalid_arguments)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);

    mc_pool *pool = NULL;
    CHECK_RC(mc_pool_start(NULL, NULL), MC_EINVAL);
    mc_pool_options bad;
    mc_pool_options_init(&bad);
    bad.workers = -1;
    CHECK_RC(mc_pool_start(&pool, &bad), MC_EINVAL);
    CHECK(pool == NULL);
    CHECK_RC(mc_pool_wait_ready(NULL, 1), MC_EINVAL);
    CHECK_RC(mc_pool_stop(NULL), MC_EINVAL);
    mc_group *g = NULL;
    CHECK_RC(mc_group_create(NULL, &g), MC_EINVAL);
    CHECK(g == NULL);
    mc_group_destroy(NULL); /* harmless */
    mc_submit_abort(NULL);  /* harmless */
    CHECK_RC(mc_submit(NULL, task_ok, "x", 1, 1), MC_EINVAL);
    void *buf = NULL;
    CHECK_RC(mc_submit_reserve(NULL, 10, &buf), MC_EINVAL);
    CHECK_RC(mc_submit_commit(NULL, task_ok, 1), MC_EINVAL);
    CHECK_RC(mc_group_wait(NULL, 1), MC_EINVAL);
    CHECK_RC(mc_group_wait_one(NULL, 0, 1), MC_EINVAL);
    mc_result r;
    CHECK_RC(mc_group_result(NULL, 0, &r), MC_EINVAL);
    CHECK_RC(mc_loadavg(NULL), MC_EINVAL);
    CHECK_EQ_INT(snap.children, mc_t_count_children()); /* nothing was started */

    REQUIRE_OK(mc_t_start(&pool, 1));
    CHECK_RC(mc_group_create(pool, NULL), MC_EINVAL);
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_RC(mc_submit(g, NULL, "x", 1, 1), MC_EINVAL);        /* NULL fn */
    CHECK_RC(mc_submit(g, task_ok, NULL, 5, 1), MC_EINVAL);    /* NULL arg, len 5 */
    CHECK_RC(mc_submit_reserve(g, 10, NULL), MC_EINVAL);       /* NULL buf */
    CHECK_EQ_INT(mc_group_size(g), 0);
    /* index out of range: nothing submitted yet */
    CHECK_RC(mc_group_result(g, 0, &r), MC_EINVAL);
    CHECK_RC(mc_group_wait_one(g, 0, 0.5), MC_EINVAL);
    CHECK_OK(mc_group_wait(g, 0)); /* an empty group is complete */

    CHECK_OK(mc_submit(g, task_ok, "abc", 3, 10));
    CHECK_OK(mc_submit_reserve(g, 4, &buf));
    if (buf)
        memcpy(buf, "defg", 4);
    CHECK_RC(mc_submit_commit(g, NULL, 1), MC_EINVAL); /* NULL fn on commit */
    mc_submit_abort(g);
    CHECK_EQ_INT(mc_group_size(g), 1);
    CHECK_OK(mc_group_wait(g, 30));
    CHECK_RC(mc_group_result(g, 1, &r), MC_EINVAL);
    CHECK_RC(mc_group_result(g, (size_t)-1, &r), MC_EINVAL);
    CHECK_RC(mc_group_result(g, 0, NULL), MC_EINVAL);
    CHECK_RC(mc_group_wait_one(g, 1, 0.5), MC_EINVAL);
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK(r.status == MC_OK && r.len == 3 && memcmp(r.data, "abc", 3) == 0);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_task_failure_codes)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(mc_submit(g, task_fail7, NULL, 0, 10));
    CHECK_OK(mc_submit(g, task_ok, "fine", 4, 10));
    CHECK_OK(mc_submit(g, task_fail_negative, NULL, 0, 10));
    CHECK_OK(mc_group_wait(g, 30)); /* a failed task still finishes the group */

    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    mc_result r;
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK_EQ_INT(r.status, MC_ETASK);
    CHECK_EQ_INT(r.task_code, 7);
    CHECK_EQ_INT(r.len, 16);
    CHECK(r.len == 16 && memcmp(r.data, "seven went wrong", 16) == 0);
    CHECK_EQ_INT(r.term_signal, 0);
    int known = 0;
    for (int k = 0; k < pp.n; k++)
        known |= pp.workers[k] == r.worker_pid;
    CHECK(known);

    CHECK_OK(mc_group_result(g, 1, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK(r.len == 4 && memcmp(r.data, "fine", 4) == 0);

    CHECK_OK(mc_group_result(g, 2, &r));
    CHECK_EQ_INT(r.status, MC_ETASK);
    CHECK_EQ_INT(r.task_code, -3);
    CHECK_EQ_INT(r.len, 0);
    CHECK(r.data == NULL);

    /* the worker that saw a failed task keeps running tasks */
    int pids_after;
    pid_t now[8];
    pids_after = mc_pool_worker_pids(pool, now, 8);
    CHECK_EQ_INT(pids_after, 2);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_unfinished_task_timeouts)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 1));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    int ms = 500;
    CHECK_OK(mc_submit(g, task_sleep_ms, &ms, sizeof ms, 10));
    mc_result r;
    CHECK_RC(mc_group_result(g, 0, &r), MC_ETIMEDOUT);
    double t0 = mc_t_now();
    CHECK_RC(mc_group_wait(g, 0.05), MC_ETIMEDOUT);
    double dt = mc_t_now() - t0;
    CHECK(dt >= 0.045); /* it waited, and returned before the task ended */
    CHECK_RC(mc_group_wait_one(g, 0, 0.05), MC_ETIMEDOUT);
    CHECK_RC(mc_group_wait(g, 0), MC_ETIMEDOUT);
    CHECK_RC(mc_group_result(g, 0, &r), MC_ETIMEDOUT);
    CHECK_OK(mc_group_wait_one(g, 0, 30));
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_OK(mc_group_wait(g, 0));
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_group_after_pool_stop)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 1));
    mc_group *done = NULL, *pending = NULL, *empty = NULL, *reserved = NULL;
    REQUIRE_OK(mc_group_create(pool, &done));
    REQUIRE_OK(mc_group_create(pool, &pending));
    REQUIRE_OK(mc_group_create(pool, &empty));
    REQUIRE_OK(mc_group_create(pool, &reserved));
    CHECK_OK(mc_submit(done, task_ok, "x", 1, 10));
    CHECK_OK(mc_group_wait(done, 30));
    int ms = 300;
    for (int i = 0; i < 3; i++)
        CHECK_OK(mc_submit(pending, task_sleep_ms, &ms, sizeof ms, 10));
    void *buf = NULL;
    CHECK_OK(mc_submit_reserve(reserved, 100, &buf));
    CHECK_OK(mc_pool_stop(pool));

    mc_group *gs[4] = {done, pending, empty, reserved};
    for (int k = 0; k < 4; k++) {
        mc_group *g = gs[k];
        mc_result r;
        CHECK_RC(mc_submit(g, task_ok, "y", 1, 1), MC_ESTATE);
        CHECK_RC(mc_group_wait(g, 1), MC_ESTATE);
        CHECK_RC(mc_group_wait_one(g, 0, 1), MC_ESTATE);
        CHECK_RC(mc_group_result(g, 0, &r), MC_ESTATE);
        CHECK_RC(mc_submit_reserve(g, 10, &buf), MC_ESTATE);
        CHECK_RC(mc_submit_commit(g, task_ok, 1), MC_ESTATE);
        mc_submit_abort(g);
        mc_group_destroy(g);
    }
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_fork_child_gets_estate_and_its_own_pool)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 1));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(mc_submit(g, task_ok, "p", 1, 10));
    CHECK_OK(mc_group_wait(g, 30));

    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) {
        /* a fork() child must not use the parent's pool */
        int code = 0;
        if (mc_submit(g, task_ok, "c", 1, 1) != MC_ESTATE)
            code |= 1;
        mc_group *g2 = NULL;
        if (mc_group_create(pool, &g2) != MC_ESTATE)
            code |= 2;
        if (mc_group_wait(g, 1) != MC_ESTATE)
            code |= 4;
        /* ...but it may start a pool of its own, which works and is its
           own: its workers descend from the child, not from the parent */
        mc_pool *own = NULL;
        mc_group *g3 = NULL;
        mc_result r3;
        pid_t worker = 0;
        if (mc_t_start(&own, 1) != MC_OK || mc_group_create(own, &g3) != MC_OK ||
            mc_submit(g3, task_ok, "o", 1, 10) != MC_OK || mc_group_wait(g3, 30) != MC_OK ||
            mc_group_result(g3, 0, &r3) != MC_OK || r3.status != MC_OK || r3.len != 1 ||
            memcmp(r3.data, "o", 1) != 0)
            code |= 8;
        else
            worker = r3.worker_pid;
        pid_t zygote = own ? mc_pool_zygote_pid(own) : 0;
        pid_t worker_parent = 0, zygote_parent = 0;
        char st;
        long long ticks;
        if (worker <= 0 || mc_t_proc_stat(worker, &st, &worker_parent, &ticks) != 0 ||
            worker_parent != zygote || mc_t_proc_stat(zygote, &st, &zygote_parent, &ticks) != 0 ||
            zygote_parent != getpid())
            code |= 16;
        mc_group_destroy(g3);
        if (own && mc_pool_stop(own) != MC_OK)
            code |= 32;
        if (mc_t_count_children() != 0)
            code |= 64;
        _exit(code);
    }
    int status = 0;
    CHECK_EQ_INT(waitpid(child, &status, 0), child);
    CHECK(WIFEXITED(status));
    CHECK_EQ_INT(WEXITSTATUS(status), 0);

    /* the parent's pool is unaffected */
    CHECK_OK(mc_submit(g, task_ok, "q", 1, 10));
    CHECK_OK(mc_group_wait(g, 30));
    mc_result r;
    CHECK_OK(mc_group_result(g, 1, &r));
    CHECK(r.status == MC_OK && r.len == 1 && memcmp(r.data, "q", 1) == 0);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_range_step)
{
    CHECK_EQ_INT(mc_range_step(80, 0, 4), 20);
    CHECK_EQ_INT(mc_range_step(80, 30, 4), 30);
    CHECK_EQ_INT(mc_range_step(80, 100, 4), 100);
    CHECK_EQ_INT(mc_range_step(0, 0, 4), 0);
    CHECK_EQ_INT(mc_range_step(0, 30, 4), 0);
    CHECK_EQ_INT(mc_range_step(81, 0, 4), 21); /* ceil */
    CHECK_EQ_INT(mc_range_step(7, 0, 2), 4);
    CHECK_EQ_INT(mc_range_step(1, 0, 4), 1);
    CHECK_EQ_INT(mc_range_step(3, 0, 8), 1);
    /* workers <= 0: the online CPUs */
    size_t cpus = (size_t)mc_online_cpus();
    CHECK_EQ_INT(mc_range_step(1000, 0, 0), (1000 + cpus - 1) / cpus);
    CHECK_EQ_INT(mc_range_step(1000, 0, -5), (1000 + cpus - 1) / cpus);

    /* the ranges of the original's examples */
    size_t step = mc_range_step(80, 30, 4), n = 0, covered = 0;
    for (size_t s = 0; s < 80; s += step, n++)
        covered += (s + step < 80 ? s + step : 80) - s;
    CHECK_EQ_INT(n, 3);
    CHECK_EQ_INT(covered, 80);
    step = mc_range_step(80, 100, 4);
    n = 0;
    for (size_t s = 0; s < 80; s += step, n++) {
        CHECK_EQ_INT(s, 0);
        CHECK_EQ_INT(s + step < 80 ? s + step : 80, 80);
    }
    CHECK_EQ_INT(n, 1);
}

TEST(test_loadavg_and_cpus)
{
    double la = -1;
    CHECK_OK(mc_loadavg(&la));
    CHECK(la >= 0.0);
    double sys[1];
    if (getloadavg(sys, 1) == 1)
        CHECK(la >= 0.0 && la < sys[0] + 5.0 && la > sys[0] - 5.0);
    CHECK(mc_online_cpus() >= 1);
}
