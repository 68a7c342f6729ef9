/* test_basic.c — start a pool, run tasks, collect results in order. */
#include "harness.h"

/* ------------------------------------------------------------ task functions */

/* arg: an int64 n; result: n*n as decimal text (no terminating NUL). */
static int task_square(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    if (arg_len != sizeof(int64_t))
        return 99;
    int64_t n;
    memcpy(&n, arg, sizeof n);
    char text[32];
    int len = snprintf(text, sizeof text, "%lld", (long long)(n * n));
    return mc_result_set(ctx, text, (size_t)len) == MC_OK ? 0 : 98;
}

/* result: the argument bytes reversed, written in place via mc_result_alloc. */
static int task_reverse(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    unsigned char *out = mc_result_alloc(ctx, arg_len);
    if (!out)
        return 97;
    const unsigned char *in = arg;
    for (size_t i = 0; i < arg_len; i++)
        out[i] = in[arg_len - 1 - i];
    return 0;
}

/* Succeeds only with an empty argument; sets no result. */
static int task_expect_empty(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)ctx;
    return arg_len == 0 ? 0 : 1;
}

/* Sets an empty result explicitly. */
static int task_empty_result(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    (void)mc_result_alloc(ctx, 0); /* may return NULL or not for 0 bytes */
    return mc_result_set(ctx, "", 0) == MC_OK ? 0 : 1;
}

/* Sets a result, then replaces it: only the second must arrive. */
static int task_replace_result(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    char *first = mc_result_alloc(ctx, 1000);
    if (!first)
        return 1;
    memset(first, 'A', 1000);
    return mc_result_set(ctx, "second", 6) == MC_OK ? 0 : 2;
}

/* Sleeps 20 ms, returns {mc_worker_index(), getpid()}. */
static int task_whoami_slow(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    mc_t_sleep_ms(20);
    int32_t r[2] = {mc_worker_index(), (int32_t)getpid()};
    return mc_result_set(ctx, r, sizeof r) == MC_OK ? 0 : 1;
}

/* Returns mc_worker_shm_size() as seen in the worker. */
static int task_shm_size(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    uint64_t n = mc_worker_shm_size();
    return mc_result_set(ctx, &n, sizeof n) == MC_OK ? 0 : 1;
}

/* ------------------------------------------------------------------- tests */

TEST(test_square_in_order)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);

    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    CHECK_EQ_INT(mc_pool_workers(pool), 2);
    CHECK(strcmp(mc_pool_error(pool), "") == 0);

    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_EQ_INT(mc_group_size(g), 0);
    enum { N = 200 };
    for (int64_t i = 0; i < N; i++) {
        int64_t arg = i * 1000003 - 7; /* negative and large values too */
        CHECK_OK(mc_submit(g, task_square, &arg, sizeof arg, 10));
    }
    CHECK_EQ_INT(mc_group_size(g), N);
    CHECK_OK(mc_group_wait(g, 60));

    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    CHECK_EQ_INT(pp.n, 2);

    int bad = 0;
    for (int64_t i = 0; i < N; i++) {
        int64_t arg = i * 1000003 - 7;
        char want[32];
        int wl = snprintf(want, sizeof want, "%lld", (long long)(arg * arg));
        mc_result r;
        memset(&r, 0xAB, sizeof r);
        int rc = mc_group_result(g, (size_t)i, &r);
        if (rc != MC_OK || r.status != MC_OK || r.len != (size_t)wl ||
            memcmp(r.data, want, (size_t)wl) != 0) {
            if (bad++ < 5)
                fprintf(stderr, "task %lld: rc=%d status=%d len=%zu want %s\n",
                        (long long)i, rc, r.status, r.len, want);
            continue;
        }
        int known = 0;
        for (int k = 0; k < pp.n; k++)
            known |= pp.workers[k] == r.worker_pid;
        if (!known || r.term_signal != 0) {
            if (bad++ < 5)
                fprintf(stderr, "task %lld: worker_pid %d unknown or term_signal %d\n",
                        (long long)i, (int)r.worker_pid, r.term_signal);
        }
    }
    CHECK_EQ_INT(bad, 0);

    /* wait_one on an already finished task returns at once */
    CHECK_OK(mc_group_wait_one(g, N - 1, 0));
    CHECK_OK(mc_group_wait_one(g, 0, 0));

    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_binary_reverse_various_sizes)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));

    /* sizes 0, 1, 2, ... , odd sizes, page-crossing sizes; bytes include NULs */
    static const size_t sizes[] = {0,    1,    2,     3,     7,     8,    15,  16,
                                   255,  4095, 4096,  4097,  65535, 65536, 100001,
                                   1 << 20, (1 << 20) + 13, 3000000};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    unsigned char *bufs[NS];
    uint32_t seed = 12345;
    for (int k = 0; k < NS; k++) {
        bufs[k] = malloc(sizes[k] ? sizes[k] : 1);
        REQUIRE(bufs[k]);
        for (size_t i = 0; i < sizes[k]; i++) {
            seed = seed * 1103515245u + 12345u;
            bufs[k][i] = (unsigned char)(seed >> 16);
        }
        CHECK_OK(mc_submit(g, task_reverse, sizes[k] ? bufs[k] : NULL, sizes[k], 10));
    }
    CHECK_OK(mc_group_wait(g, 60));
    for (int k = 0; k < NS; k++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)k, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        CHECK_EQ_INT(r.len, sizes[k]);
        size_t mism = 0;
        if (r.len == sizes[k] && sizes[k] > 0) {
            const unsigned char *d = r.data;
            for (size_t i = 0; i < sizes[k]; i++)
                mism += d[i] != bufs[k][sizes[k] - 1 - i];
        }
        if (mism)
            fprintf(stderr, "size %zu: %zu bytes differ\n", sizes[k], mism);
        CHECK_EQ_INT(mism, 0);
        free(bufs[k]);
    }
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_empty_argument_and_result)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    char dummy = 'x';
    CHECK_OK(mc_submit(g, task_expect_empty, NULL, 0, 10));   /* 0: NULL, 0 */
    CHECK_OK(mc_submit(g, task_expect_empty, &dummy, 0, 10)); /* 1: ptr, 0 */
    CHECK_OK(mc_submit(g, task_empty_result, NULL, 0, 10));   /* 2 */
    CHECK_OK(mc_submit(g, task_replace_result, NULL, 0, 10)); /* 3 */
    CHECK_OK(mc_submit(g, task_expect_empty, &dummy, 1, 10)); /* 4: fails, code 1 */
    CHECK_OK(mc_group_wait(g, 30));

    mc_result r;
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mc_group_result(g, (size_t)i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        CHECK_EQ_INT(r.len, 0);
    }
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK(r.data == NULL); /* no result set: NULL and 0 */
    CHECK_OK(mc_group_result(g, 3, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_EQ_INT(r.len, 6);
    CHECK(r.len == 6 && memcmp(r.data, "second", 6) == 0);
    CHECK_OK(mc_group_result(g, 4, &r));
    CHECK_EQ_INT(r.status, MC_ETASK);
    CHECK_EQ_INT(r.task_code, 1);

    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_worker_index)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    CHECK_EQ_INT(mc_worker_index(), -1);

    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    CHECK_EQ_INT(mc_worker_index(), -1); /* still -1 in the caller */

    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    CHECK_EQ_INT(pp.n, 2);
    CHECK(pp.n < 2 || pp.workers[0] != pp.workers[1]);
    for (int k = 0; k < pp.n; k++) {
        CHECK(pp.workers[k] > 0 && pp.workers[k] != getpid() && pp.workers[k] != pp.zygote);
        CHECK_EQ_INT(kill(pp.workers[k], 0), 0);
    }
    /* the zygote is our child; the workers are the zygote's children */
    pid_t ppid = 0;
    CHECK_EQ_INT(mc_t_proc_stat(pp.zygote, NULL, &ppid, NULL), 0);
    CHECK_EQ_INT(ppid, getpid());
    for (int k = 0; k < pp.n; k++) {
        CHECK_EQ_INT(mc_t_proc_stat(pp.workers[k], NULL, &ppid, NULL), 0);
        CHECK_EQ_INT(ppid, pp.zygote);
    }
    pid_t one;
    CHECK_EQ_INT(mc_pool_worker_pids(pool, &one, 1), 1); /* at most max */

    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    enum { N = 20 };
    for (int i = 0; i < N; i++)
        CHECK_OK(mc_submit(g, task_whoami_slow, NULL, 0, 10));
    CHECK_OK(mc_group_wait(g, 30));
    int seen[2] = {0, 0};
    pid_t pid_of[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        REQUIRE(r.len == 2 * sizeof(int32_t));
        int32_t v[2];
        memcpy(v, r.data, sizeof v);
        CHECK(v[0] >= 0 && v[0] < 2);
        CHECK_EQ_INT(v[1], r.worker_pid);
        if (v[0] >= 0 && v[0] < 2) {
            seen[v[0]]++;
            if (pid_of[v[0]] == 0)
                pid_of[v[0]] = v[1];
            CHECK_EQ_INT(pid_of[v[0]], v[1]); /* one index, one process */
        }
    }
    printf("  worker 0 ran %d tasks, worker 1 ran %d\n", seen[0], seen[1]);
    CHECK(seen[0] > 0 && seen[1] > 0);
    CHECK(pid_of[0] != pid_of[1]);
    mc_group_destroy(g);

    /* The region's capacity: the stats' figure in a worker, 0 here. */
    CHECK(mc_worker_shm_size() == 0);
    mc_pool_stats st;
    CHECK_OK(mc_pool_get_stats(pool, &st, NULL, 0));
    REQUIRE_OK(mc_group_create(pool, &g));
    CHECK_OK(mc_submit(g, task_shm_size, NULL, 0, 10));
    CHECK_OK(mc_group_wait(g, 30));
    mc_result sr;
    CHECK_OK(mc_group_result(g, 0, &sr));
    uint64_t seen_size = 0;
    REQUIRE(sr.len == sizeof seen_size);
    memcpy(&seen_size, sr.data, sizeof seen_size);
    CHECK(st.shm_size > 0 && seen_size == st.shm_size);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_default_workers)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    int cpus = mc_online_cpus();
    CHECK(cpus >= 1);
    CHECK_EQ_INT(cpus, sysconf(_SC_NPROCESSORS_ONLN));

    /* opts == NULL */
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, NULL));
    CHECK_EQ_INT(mc_pool_workers(pool), cpus);
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    pid_t pids[MC_T_MAX_PIDS];
    CHECK_EQ_INT(mc_pool_worker_pids(pool, pids, MC_T_MAX_PIDS), cpus);
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    int64_t seven = 7;
    CHECK_OK(mc_submit(g, task_square, &seven, sizeof seven, 10));
    CHECK_OK(mc_group_wait(g, 30));
    mc_result r;
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK(r.status == MC_OK && r.len == 2 && memcmp(r.data, "49", 2) == 0);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));

    /* workers = 0 in options */
    pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 0));
    CHECK_EQ_INT(mc_pool_workers(pool), cpus);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_two_pools_at_once)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *a = NULL, *b = NULL;
    REQUIRE_OK(mc_t_start(&a, 1));
    REQUIRE_OK(mc_t_start(&b, 2));
    CHECK_EQ_INT(mc_pool_workers(a), 1);
    CHECK_EQ_INT(mc_pool_workers(b), 2);
    CHECK(mc_pool_zygote_pid(a) != mc_pool_zygote_pid(b));
    mc_group *ga = NULL, *gb = NULL;
    REQUIRE_OK(mc_group_create(a, &ga));
    REQUIRE_OK(mc_group_create(b, &gb));
    for (int64_t i = 0; i < 50; i++) {
        int64_t x = i, y = i + 1000;
        CHECK_OK(mc_submit(ga, task_square, &x, sizeof x, 10));
        CHECK_OK(mc_submit(gb, task_square, &y, sizeof y, 10));
    }
    CHECK_OK(mc_group_wait(ga, 30));
    CHECK_OK(mc_group_wait(gb, 30));
    for (int64_t i = 0; i < 50; i++) {
        char wa[32], wb[32];
        int la = snprintf(wa, sizeof wa, "%lld", (long long)(i * i));
        int lb = snprintf(wb, sizeof wb, "%lld", (long long)((i + 1000) * (i + 1000)));
        mc_result ra, rb;
        CHECK_OK(mc_group_result(ga, (size_t)i, &ra));
        CHECK_OK(mc_group_result(gb, (size_t)i, &rb));
        CHECK(ra.status == MC_OK && ra.len == (size_t)la && memcmp(ra.data, wa, (size_t)la) == 0);
        CHECK(rb.status == MC_OK && rb.len == (size_t)lb && memcmp(rb.data, wb, (size_t)lb) == 0);
    }
    mc_group_destroy(ga);
    mc_group_destroy(gb);
    CHECK_OK(mc_pool_stop(a));
    /* b still works after a stopped */
    REQUIRE_OK(mc_group_create(b, &gb));
    int64_t nine = 9;
    CHECK_OK(mc_submit(gb, task_square, &nine, sizeof nine, 10));
    CHECK_OK(mc_group_wait(gb, 30));
    mc_result r;
    CHECK_OK(mc_group_result(gb, 0, &r));
    CHECK(r.status == MC_OK && r.len == 2 && memcmp(r.data, "81", 2) == 0);
    mc_group_destroy(gb);
    CHECK_OK(mc_pool_stop(b));
    CHECK_NOTHING_LEFT(&snap);
}
