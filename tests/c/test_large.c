/* test_large.c — 256 MiB each way, zero-copy submission, memory limits. */
#include <sys/mman.h>

#include "harness.h"

#define BIG ((size_t)256 << 20)

static uint64_t pattern_word(uint64_t seed, uint64_t i)
{
    uint64_t x = (i + seed) * 0x9E3779B97F4A7C15ull;
    return x ^ (x >> 29) ^ i;
}

static void fill_pattern(void *buf, size_t len, uint64_t seed)
{
    unsigned char *p = buf;
    size_t words = len / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w = pattern_word(seed, i);
        memcpy(p + i * 8, &w, 8);
    }
    for (size_t i = words * 8; i < len; i++)
        p[i] = (unsigned char)(i * 7 + seed);
}

/* Number of bytes that differ from fill_pattern(len, seed). */
static size_t count_pattern_mismatch(const void *buf, size_t len, uint64_t seed)
{
    const unsigned char *p = buf;
    size_t words = len / 8, bad = 0;
    for (size_t i = 0; i < words; i++) {
        uint64_t w;
        memcpy(&w, p + i * 8, 8);
        bad += w != pattern_word(seed, i);
    }
    for (size_t i = words * 8; i < len; i++)
        bad += p[i] != (unsigned char)(i * 7 + seed);
    return bad;
}

/* Order-dependent checksum over every byte. */
static uint64_t checksum(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t words = len / 8;
    for (size_t i = 0; i < words; i++) {
        uint64_t w;
        memcpy(&w, p + i * 8, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 32;
    }
    for (size_t i = words * 8; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ len;
}

/* ------------------------------------------------------------ task functions */

/* result: {checksum(arg), arg_len} */
static int task_checksum(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    uint64_t r[2] = {checksum(arg, arg_len), (uint64_t)arg_len};
    return mc_result_set(ctx, r, sizeof r) == MC_OK ? 0 : 1;
}

/* arg: {seed, len}; result: len bytes of fill_pattern(seed), or code 5 if
   the result memory is not available. */
static int task_make_pattern(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    if (arg_len != 2 * sizeof(uint64_t))
        return 99;
    uint64_t a[2];
    memcpy(a, arg, sizeof a);
    void *out = mc_result_alloc(ctx, (size_t)a[1]);
    if (!out)
        return 5;
    fill_pattern(out, (size_t)a[1], a[0]);
    return 0;
}

static int task_nothing(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    (void)ctx;
    return 0;
}

static int start_pool(mc_pool **pool, int workers, size_t region_size)
{
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = workers;
    o.region_size = region_size;
    return mc_pool_start(pool, &o);
}

/* ------------------------------------------------------------------- tests */

TEST(test_256mib_argument)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(start_pool(&pool, 2, 0));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));

    unsigned char *buf = malloc(BIG);
    REQUIRE(buf);
    fill_pattern(buf, BIG, 42);
    buf[BIG - 1] ^= 0x5a; /* the very last byte must travel too */
    uint64_t want = checksum(buf, BIG);
    double t0 = mc_t_now();
    CHECK_OK(mc_submit(g, task_checksum, buf, BIG, 60));
    double t1 = mc_t_now();
    free(buf); /* the argument was copied into shared memory */
    CHECK_OK(mc_group_wait(g, 120));
    printf("  submit (copy of 256 MiB) %.3f s, total %.3f s\n", t1 - t0, mc_t_now() - t0);

    mc_result r;
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_EQ_INT(r.len, 2 * sizeof(uint64_t));
    if (r.len == 2 * sizeof(uint64_t)) {
        uint64_t got[2];
        memcpy(got, r.data, sizeof got);
        CHECK(got[0] == want);
        CHECK_EQ_INT(got[1], BIG);
    }
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_256mib_result)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(start_pool(&pool, 2, 0));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));

    uint64_t a[2] = {777, BIG};
    double t0 = mc_t_now();
    CHECK_OK(mc_submit(g, task_make_pattern, a, sizeof a, 10));
    CHECK_OK(mc_group_wait(g, 120));
    printf("  256 MiB result produced in %.3f s\n", mc_t_now() - t0);
    mc_result r;
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_EQ_INT(r.len, BIG);
    if (r.status == MC_OK && r.len == BIG) {
        CHECK(r.data != NULL);
        CHECK_EQ_INT(count_pattern_mismatch(r.data, BIG, 777), 0);
        /* the same bytes again: result stays valid until the group is destroyed */
        mc_result r2;
        CHECK_OK(mc_group_result(g, 0, &r2));
        CHECK(r2.data == r.data && r2.len == r.len);
    }
    mc_group_destroy(g);

    /* the region is reusable afterwards: a second 256 MiB result */
    REQUIRE_OK(mc_group_create(pool, &g));
    a[0] = 778;
    CHECK_OK(mc_submit(g, task_make_pattern, a, sizeof a, 10));
    CHECK_OK(mc_group_wait(g, 120));
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_EQ_INT(r.len, BIG);
    if (r.status == MC_OK && r.len == BIG)
        CHECK_EQ_INT(count_pattern_mismatch(r.data, BIG, 778), 0);
    mc_group_destroy(g);

    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_zero_copy_reserve_commit)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(start_pool(&pool, 2, 0));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));

    const size_t sizes[] = {16u << 20, 0, 1, 12345};
    uint64_t want[4];
    for (int k = 0; k < 4; k++) {
        void *buf = NULL;
        CHECK_OK(mc_submit_reserve(g, sizes[k], &buf));
        REQUIRE(sizes[k] == 0 || buf != NULL);
        if (sizes[k])
            fill_pattern(buf, sizes[k], 100 + (uint64_t)k);
        want[k] = checksum(buf, sizes[k]);
        CHECK_EQ_INT(mc_group_size(g), (size_t)k); /* not a task until committed */
        CHECK_OK(mc_submit_commit(g, task_checksum, 10));
        CHECK_EQ_INT(mc_group_size(g), (size_t)k + 1);
    }
    CHECK_OK(mc_group_wait(g, 60));
    for (int k = 0; k < 4; k++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)k, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        REQUIRE(r.len == 2 * sizeof(uint64_t));
        uint64_t got[2];
        memcpy(got, r.data, sizeof got);
        CHECK(got[0] == want[k]);
        CHECK_EQ_INT(got[1], sizes[k]);
    }
    /* a commit without a reservation */
    CHECK_RC(mc_submit_commit(g, task_checksum, 1), MC_ESTATE);
    CHECK_EQ_INT(mc_group_size(g), 4);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_submit_abort)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    /* a 64 MiB region: aborted reservations must give their memory back */
    REQUIRE_OK(start_pool(&pool, 2, (size_t)64 << 20));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));

    mc_submit_abort(g); /* nothing reserved: harmless */
    for (int i = 0; i < 40; i++) {
        void *buf = NULL;
        int rc = mc_submit_reserve(g, (size_t)16 << 20, &buf);
        CHECK_OK(rc);
        if (rc != MC_OK)
            break;
        memset(buf, i, (size_t)16 << 20);
        mc_submit_abort(g);
    }
    CHECK_EQ_INT(mc_group_size(g), 0);
    CHECK_RC(mc_submit_commit(g, task_checksum, 1), MC_ESTATE); /* abort dropped it */

    /* the group and the pool are still usable: plain and zero-copy submits */
    unsigned char small[1000];
    fill_pattern(small, sizeof small, 5);
    CHECK_OK(mc_submit(g, task_checksum, small, sizeof small, 10));
    void *buf = NULL;
    CHECK_OK(mc_submit_reserve(g, sizeof small, &buf));
    if (buf)
        memcpy(buf, small, sizeof small);
    CHECK_OK(mc_submit_commit(g, task_checksum, 10));
    CHECK_EQ_INT(mc_group_size(g), 2);
    CHECK_OK(mc_group_wait(g, 30));
    for (int k = 0; k < 2; k++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)k, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        REQUIRE(r.len == 2 * sizeof(uint64_t));
        uint64_t got[2];
        memcpy(got, r.data, sizeof got);
        CHECK(got[0] == checksum(small, sizeof small));
    }
    /* a reservation still open when the group is destroyed is released */
    CHECK_OK(mc_submit_reserve(g, (size_t)16 << 20, &buf));
    mc_group_destroy(g);
    for (int i = 0; i < 8; i++) {
        REQUIRE_OK(mc_group_create(pool, &g));
        CHECK_OK(mc_submit_reserve(g, (size_t)16 << 20, &buf));
        mc_group_destroy(g);
    }
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_too_large_for_region)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(start_pool(&pool, 2, (size_t)64 << 20));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));

    /* 512 MiB of untouched (never committed) readable memory */
    size_t huge = (size_t)512 << 20;
    void *src = mmap(NULL, huge, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    REQUIRE(src != MAP_FAILED);
    CHECK_RC(mc_submit(g, task_checksum, src, huge, 1), MC_ENOMEM);
    void *buf = NULL;
    CHECK_RC(mc_submit_reserve(g, huge, &buf), MC_ENOMEM);
    munmap(src, huge);
    CHECK_EQ_INT(mc_group_size(g), 0);

    /* a result larger than the region: mc_result_alloc gives NULL */
    uint64_t a[2] = {1, huge};
    CHECK_OK(mc_submit(g, task_make_pattern, a, sizeof a, 10));
    /* and the pool still works afterwards */
    uint64_t b[2] = {2, 4096};
    CHECK_OK(mc_submit(g, task_make_pattern, b, sizeof b, 10));
    CHECK_OK(mc_submit(g, task_nothing, NULL, 0, 10));
    CHECK_OK(mc_group_wait(g, 30));
    mc_result r;
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK_EQ_INT(r.status, MC_ETASK);
    CHECK_EQ_INT(r.task_code, 5);
    CHECK_OK(mc_group_result(g, 1, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_EQ_INT(r.len, 4096);
    if (r.len == 4096)
        CHECK_EQ_INT(count_pattern_mismatch(r.data, 4096, 2), 0);
    CHECK_OK(mc_group_result(g, 2, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}
