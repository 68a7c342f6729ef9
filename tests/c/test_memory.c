/*
 * test_memory.c — what a task costs in shared memory, and where its small
 * result lives.
 *
 * Memory is deterministic, so these assert bytes (mc_pool_stats's
 * shm_in_use, the arena's bytes in live blocks): one worker waits at a gate
 * in a first task while a batch of tasks is queued behind it; their cost is
 * the growth of shm_in_use. Covers: a queued task costs at most 127 bytes
 * beyond its argument bytes below MC_DATA_ALIGN_MIN (one 64-byte line: its
 * block header and record; the rest is the rounding of its block to 64
 * bytes), 100,000 of them included; a result that fits in the room its
 * task's block has left is stored there and costs nothing more, one that
 * does not gets a block of its own; a result set twice keeps only the last
 * (the block of a replaced one is freed); an empty result at the very end
 * of a block; a hold keeps a small result readable after its group; every
 * byte comes back when the group goes; argument and result alignment as
 * multicore.h promises.
 */
#include "harness.h"

#include <stdbool.h>

/* A first task the single worker runs until the test opens the gate, so
   that the tasks submitted after it stay queued. `started` tells the test
   the worker has taken it. */
typedef struct {
    mc_t_gate gate;      /* must be first: mc_t_gate_wait() takes it */
    uint32_t started;    /* futex word */
} hold_back;

static hold_back *g_hb;

static int gate_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)len;
    (void)ctx;
    __atomic_store_n(&g_hb->started, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &g_hb->started, FUTEX_WAKE, 1, NULL, NULL, 0);
    return mc_t_gate_wait(&g_hb->gate, 60) == 0 ? 0 : 1;
}

/* Argument: u32 result length, u8 fill byte (if the argument is that long).
   Sets a result of that length filled with the byte. */
static int result_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    uint32_t want = 0;
    unsigned char fill = 0x5a;
    if (len >= 4)
        memcpy(&want, arg, 4);
    if (len >= 5)
        memcpy(&fill, (const char *)arg + 4, 1);
    unsigned char *p = mc_result_alloc(ctx, want);
    if (!p)
        return 1;
    if ((uintptr_t)p % 8)
        return 2; /* results are at least 8-byte aligned */
    memset(p, fill, want);
    return 0;
}

static mc_pool *start_one_worker(size_t queue)
{
    g_hb = mmap(NULL, sizeof *g_hb, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_hb == MAP_FAILED)
        return NULL;
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 1;
    o.queue_capacity = queue;
    mc_pool *pool;
    if (mc_pool_start(&pool, &o) != MC_OK)
        return NULL;
    if (mc_pool_wait_ready(pool, 60) != MC_OK) {
        mc_pool_stop(pool);
        return NULL;
    }
    return pool;
}

/* Submit the gate task to g and wait until the worker runs it. */
static int hold_worker_back(mc_group *g)
{
    __atomic_store_n(&g_hb->gate.open, 0, __ATOMIC_SEQ_CST);
    __atomic_store_n(&g_hb->started, 0, __ATOMIC_SEQ_CST);
    int r = mc_submit(g, gate_task, NULL, 0, 10);
    if (r != MC_OK)
        return r;
    double deadline = mc_t_now() + 60;
    while (!__atomic_load_n(&g_hb->started, __ATOMIC_SEQ_CST) && mc_t_now() < deadline) {
        struct timespec ts = {1, 0};
        syscall(SYS_futex, &g_hb->started, FUTEX_WAIT, 0, &ts, NULL, 0);
    }
    return __atomic_load_n(&g_hb->started, __ATOMIC_SEQ_CST) ? MC_OK : MC_ETIMEDOUT;
}

typedef struct {
    uint64_t queued, done; /* shm_in_use growth for the batch */
} batch_cost;

/* One batch of n tasks with arg_len argument bytes and results of
   result_len bytes (when arg_len >= 4: a shorter argument sets an empty
   result), queued behind the gate, then run. Checks every result and that
   destroying the group gives every byte back. */
static bool run_batch(mc_pool *pool, size_t n, uint32_t arg_len, uint32_t result_len, batch_cost *cost)
{
    uint64_t before = mc_t_shm_in_use(pool);
    mc_group *g;
    if (mc_group_create(pool, &g) != MC_OK || hold_worker_back(g) != MC_OK)
        return false;
    unsigned char *arg = calloc(1, arg_len + 5);
    if (arg_len >= 4)
        memcpy(arg, &result_len, 4);
    if (arg_len < 4)
        result_len = 0;
    bool ok = arg != NULL;
    uint64_t base = mc_t_shm_in_use(pool);
    for (size_t i = 0; ok && i < n; i++) {
        if (arg_len >= 5)
            arg[4] = (unsigned char)i;
        ok = mc_submit(g, result_task, arg, arg_len, 10) == MC_OK;
    }
    cost->queued = mc_t_shm_in_use(pool) - base;
    mc_t_gate_open(&g_hb->gate);
    ok = ok && mc_group_wait(g, 120) == MC_OK;
    cost->done = mc_t_shm_in_use(pool) - base;
    for (size_t i = 0; ok && i <= n; i++) {
        mc_result r;
        ok = mc_group_result(g, i, &r) == MC_OK && r.status == MC_OK;
        if (ok && i > 0) {
            unsigned char fill = arg_len >= 5 ? (unsigned char)(i - 1) : 0x5a;
            ok = r.len == result_len && (result_len == 0 || r.data != NULL);
            for (size_t k = 0; ok && k < result_len; k++)
                ok = ((const unsigned char *)r.data)[k] == fill;
        }
    }
    mc_group_destroy(g);
    free(arg);
    if (!ok)
        fprintf(stderr, "batch arg_len %u result_len %u failed\n", arg_len, result_len);
    /* the workers' references go right after the results: settle */
    return ok && mc_t_shm_settles_at(pool, before);
}

/* The arena's block for a record with len bytes of data (multicore.h's
   layout: 16-byte header, 48-byte record, data from the record's end, or
   from the next line at MC_DATA_ALIGN_MIN bytes), rounded to 64. */
static uint64_t block_for(uint64_t len)
{
    uint64_t data = len >= MC_DATA_ALIGN_MIN ? 64 : 48;
    return (16 + data + len + 63) / 64 * 64;
}

TEST(a_queued_task_costs_at_most_127_bytes_beyond_its_argument)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool = start_one_worker(4096);
    REQUIRE(pool);
    /* every residue of the 64-byte rounding, around the line boundaries */
    static const uint32_t lens[] = {0,   1,   4,   8,   15,  16,  17,  31,  47,  48,  49,  63,  64,
                                    65,  79,  80,  100, 101, 102, 111, 112, 113, 127, 128, 129,
                                    175, 176, 177, 255, 256, 1000, 4095};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        batch_cost c;
        CHECK(run_batch(pool, 256, lens[i], 0, &c));
        CHECK_EQ_INT(c.queued, 256 * block_for(lens[i]));
        CHECK(c.queued <= 256 * ((uint64_t)lens[i] + 127));
    }
    /* From MC_DATA_ALIGN_MIN the data starts on the next line: 16 more at most. */
    batch_cost c;
    CHECK(run_batch(pool, 64, MC_DATA_ALIGN_MIN, 0, &c));
    CHECK_EQ_INT(c.queued, 64 * block_for(MC_DATA_ALIGN_MIN));
    CHECK(c.queued <= 64 * ((uint64_t)MC_DATA_ALIGN_MIN + 143));
    CHECK_OK(mc_pool_stop(pool));
    munmap(g_hb, sizeof *g_hb);
    CHECK_NOTHING_LEFT(&before);
}

/* What issue 12 measured from Python: many tasks in one group, each about
   102 argument bytes and a 32-byte result (a pickled int). */
TEST(hundred_thousand_tasks_in_one_group_stay_within_128_bytes_beyond_payload)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    size_t n = mc_t_under_valgrind() ? 20000 : 100000;
    mc_pool *pool = start_one_worker(n + 1);
    REQUIRE(pool);
    batch_cost c;
    CHECK(run_batch(pool, n, 102, 32, &c));
    CHECK(c.queued <= n * (102 + 128));
    CHECK(c.done <= n * (102 + 32 + 128));
    fprintf(stderr, "  %zu tasks of 102 + 32 bytes: %.1f bytes a task queued, %.1f done\n", n,
            (double)c.queued / (double)n, (double)c.done / (double)n);
    CHECK_OK(mc_pool_stop(pool));
    munmap(g_hb, sizeof *g_hb);
    CHECK_NOTHING_LEFT(&before);
}

TEST(a_small_result_lives_in_its_tasks_block)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool = start_one_worker(1024);
    REQUIRE(pool);
    /* 8 argument bytes: a 128-byte block, 56 bytes of room after them */
    for (uint32_t r = 0; r <= 56; r += 8) {
        batch_cost c;
        CHECK(run_batch(pool, 128, 8, r, &c));
        CHECK_EQ_INT(c.queued, 128 * 128);
        CHECK_EQ_INT(c.done, c.queued); /* nothing more */
    }
    /* 57 bytes do not fit: a block of their own (16 + 57 -> 128) */
    batch_cost c;
    CHECK(run_batch(pool, 128, 8, 57, &c));
    CHECK_EQ_INT(c.done - c.queued, 128 * 128);
    /* 64 argument bytes leave no room: an empty result sits at the block's
       very end, and the block is still freed whole (run_batch checks) */
    CHECK(run_batch(pool, 128, 64, 0, &c));
    CHECK_EQ_INT(c.queued, 128 * 128);
    CHECK_EQ_INT(c.done, c.queued);
    /* and 102 + 32 (Python's int): the room left (24 bytes) is too small */
    CHECK(run_batch(pool, 128, 102, 32, &c));
    CHECK_EQ_INT(c.queued, 128 * 192);
    CHECK_EQ_INT(c.done - c.queued, 128 * 64);
    CHECK_OK(mc_pool_stop(pool));
    munmap(g_hb, sizeof *g_hb);
    CHECK_NOTHING_LEFT(&before);
}

/* Argument: a sequence of result lengths to set (u32 each); the last one
   stays, filled with 0xc3. */
static int replace_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    const unsigned char *a = arg;
    unsigned char *p = NULL;
    uint32_t want = 0;
    for (size_t off = 0; off + 4 <= len; off += 4) {
        memcpy(&want, a + off, 4);
        if (!(p = mc_result_alloc(ctx, want)))
            return 1;
        memset(p, 0x11, want);
    }
    memset(p, 0xc3, want);
    return 0;
}

TEST(a_result_set_again_replaces_the_previous_one)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool = start_one_worker(64);
    REQUIRE(pool);
    uint64_t base = mc_t_shm_in_use(pool);
    /* 12 argument bytes: a 128-byte block with 48 bytes of room (from 64) */
    static const uint32_t seqs[][3] = {
        {5000, 10, 20},   /* a block, then inline: the block goes */
        {10, 5000, 3000}, /* inline, then two blocks: only the last stays */
        {3000, 40, 48},   /* exactly the room */
    };
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    for (int i = 0; i < 3; i++)
        CHECK_OK(mc_submit(g, replace_task, seqs[i], sizeof seqs[i], 10));
    CHECK_OK(mc_group_wait(g, 60));
    uint64_t want = base + 3 * 128 + (16 + 3000 + 63) / 64 * 64;
    CHECK(mc_t_shm_settles_at(pool, want));
    for (int i = 0; i < 3; i++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        CHECK_EQ_INT(r.len, seqs[i][2]);
        bool same = r.data != NULL;
        for (size_t k = 0; same && k < r.len; k++)
            same = ((const unsigned char *)r.data)[k] == 0xc3;
        CHECK(same);
    }
    mc_group_destroy(g);
    CHECK(mc_t_shm_settles_at(pool, base));
    CHECK_OK(mc_pool_stop(pool));
    munmap(g_hb, sizeof *g_hb);
    CHECK_NOTHING_LEFT(&before);
}

TEST(a_hold_keeps_a_small_result_after_its_group)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool = start_one_worker(64);
    REQUIRE(pool);
    uint64_t base = mc_t_shm_in_use(pool);
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    unsigned char arg[5] = {24, 0, 0, 0, 0x77}; /* a 24-byte result of 0x77: inline */
    CHECK_OK(mc_submit(g, result_task, arg, sizeof arg, 10));
    CHECK_OK(mc_group_wait(g, 60));
    mc_hold *hold = NULL;
    mc_result r;
    CHECK_OK(mc_group_hold(g, 0, &hold));
    CHECK_OK(mc_group_result(g, 0, &r));
    mc_group_destroy(g);
    CHECK(mc_t_shm_settles_at(pool, base + 128)); /* the one block, result inside */
    bool same = r.data != NULL && r.len == 24;
    for (size_t k = 0; same && k < r.len; k++)
        same = ((const unsigned char *)r.data)[k] == 0x77;
    CHECK(same);
    mc_hold_release(hold);
    CHECK(mc_t_shm_settles_at(pool, base));
    CHECK_OK(mc_pool_stop(pool));
    munmap(g_hb, sizeof *g_hb);
    CHECK_NOTHING_LEFT(&before);
}

/* Checks its argument's and its result's alignment: argument and result
   length from the argument's first 8 bytes (u32 each). */
static int align_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    uint32_t want = 0;
    if (len >= 8)
        memcpy(&want, (const char *)arg + 4, 4);
    uintptr_t need = len >= MC_DATA_ALIGN_MIN ? 64 : 16;
    if ((uintptr_t)arg % need)
        return 10;
    unsigned char *p = mc_result_alloc(ctx, want);
    if (!p)
        return 11;
    if ((uintptr_t)p % (want >= MC_DATA_ALIGN_MIN ? 64 : 8))
        return 12;
    return 0;
}

TEST(arguments_and_results_are_aligned_as_documented)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool = start_one_worker(64);
    REQUIRE(pool);
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));
    static const uint32_t lens[] = {8, 9, 13, 100, 4095, 4096, 4097, 70000};
    size_t n = 0;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        for (size_t j = 0; j < sizeof lens / sizeof lens[0]; j += 2) {
            void *buf;
            REQUIRE_OK(mc_submit_reserve(g, lens[i], &buf));
            CHECK((uintptr_t)buf % (lens[i] >= MC_DATA_ALIGN_MIN ? 64 : 16) == 0);
            memset(buf, 0, lens[i]);
            memcpy((char *)buf + 4, &lens[j], 4);
            CHECK_OK(mc_submit_commit(g, align_task, 10));
            n++;
        }
    }
    /* shared buffers too */
    mc_hold *small = NULL, *large = NULL;
    CHECK_OK(mc_buffer_alloc(pool, 24, &small));
    CHECK_OK(mc_buffer_alloc(pool, MC_DATA_ALIGN_MIN, &large));
    CHECK((uintptr_t)mc_hold_data(small, NULL) % 16 == 0);
    CHECK((uintptr_t)mc_hold_data(large, NULL) % 64 == 0);
    mc_hold_release(small);
    mc_hold_release(large);
    CHECK_OK(mc_group_wait(g, 60));
    for (size_t i = 0; i < n; i++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        if (r.status != MC_OK)
            fprintf(stderr, "task %zu: code %d\n", i, r.task_code);
    }
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    munmap(g_hb, sizeof *g_hb);
    CHECK_NOTHING_LEFT(&before);
}
