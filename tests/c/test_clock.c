/*
 * test_clock.c — the worker's task clock (src/clock.c) and what it feeds:
 * each worker's busy_ns.
 *
 * Covers: the clock stays within CLOCK_MONOTONIC's readings on both sides
 * of it, on the counter path where the kernel keeps time with the TSC (and
 * that path is then really the one taken: calibrated, extrapolating) and
 * on the clock_gettime() path forced; a counter that seems to go backwards
 * or far ahead (a suspend) makes it read the real clock again and start a
 * new baseline, so time read after it is right at once; a clock with no
 * first pair calibrates all the same; and
 * busy_ns counts a task's time: at least a task's sleep, at most the
 * caller's wall time around it, for one long task and for many short ones.
 */
#include "harness.h"
#include "../../src/internal.h"

/* The clock's error against CLOCK_MONOTONIC: a pair is off by 0.4 us at
   most, the rate is measured over MC_CLOCK_CALIBRATE_NS or more, and it
   reads the real clock every 2^24 ticks; NTP's usual slew of
   CLOCK_MONOTONIC, 500 ppm, is 8.4 us over 16.7 ms (2^24 ticks of a 1 GHz
   counter). A faster slew (chrony can, rarely) would fail this test. A
   rate wrong by 1 % is 60 us off by then. */
#define TOLERANCE_NS 20000

/* Read the clock between two CLOCK_MONOTONIC reads for `ms` milliseconds;
   returns how many reads fell outside [before - tol, after + tol]. */
static long outside_bounds(mc_clock *c, int ms, long *reads)
{
    long bad = 0, n = 0;
    int64_t last = 0, end = mc__now_ns() + (int64_t)ms * 1000000;
    for (;;) {
        int64_t before = mc__now_ns();
        int64_t t = mc__clock_now(c);
        int64_t after = mc__now_ns();
        n++;
        if (t < before - TOLERANCE_NS || t > after + TOLERANCE_NS || t < last - TOLERANCE_NS) {
            if (bad < 5)
                printf("  read %ld: %lld not in [%lld, %lld] (last %lld)\n", n, (long long)t,
                       (long long)before, (long long)after, (long long)last);
            bad++;
        }
        last = t;
        if (after >= end)
            break;
    }
    *reads = n;
    return bad;
}

/* Read (checking the bounds) until the rate is measured: at least
   MC_CLOCK_CALIBRATE_NS, longer if this process is kept off its CPU. */
static long calibrate(mc_clock *c)
{
    long bad = 0, reads;
    for (int i = 0; i < 500 && c->mult == 0; i++)
        bad += outside_bounds(c, 10, &reads);
    return bad;
}

TEST(the_clock_follows_the_monotonic_clock)
{
    bool tsc = mc__clock_tsc_usable();
    printf("  clocksource tsc: %s\n", tsc ? "yes" : "no");
    mc_clock c;
    mc__clock_init(&c, tsc);
    long reads;
    if (tsc)
        CHECK_EQ_INT(calibrate(&c), 0);
    CHECK_EQ_INT(outside_bounds(&c, 40, &reads), 0);
    if (tsc) {
        /* The counter path was taken: calibrated, and not a real read
           each time (the pair moves only at a resync). */
        CHECK(c.use_tsc);
        CHECK(c.mult != 0);
        uint64_t tsc1 = c.tsc1;
        for (int i = 0; i < 1000; i++)
            (void)mc__clock_now(&c);
        CHECK(c.tsc1 == tsc1 || c.tsc1 - tsc1 >= MC_CLOCK_RESYNC_TICKS / 2);
    }
    printf("  %ld reads\n", reads);
}

TEST(the_clock_without_the_counter_is_the_monotonic_clock)
{
    mc_clock c;
    mc__clock_init(&c, false);
    CHECK(!c.use_tsc);
    long reads;
    CHECK_EQ_INT(outside_bounds(&c, 10, &reads), 0);
    mc_clock zero; /* zero-initialised: the real clock */
    memset(&zero, 0, sizeof zero);
    CHECK_EQ_INT(outside_bounds(&zero, 5, &reads), 0);
}

TEST(a_counter_out_of_step_makes_a_real_read)
{
    if (!mc__clock_tsc_usable()) {
        printf("  clocksource is not tsc: every read is a real one (tested above)\n");
        return;
    }
    mc_clock c;
    mc__clock_init(&c, true);
    long reads;
    CHECK_EQ_INT(calibrate(&c), 0);
    REQUIRE(c.mult != 0);

    /* The last pair seems to lie ahead of the counter (it went backwards):
       the next read is a real one, and the pair is read again. */
    c.tsc1 += (uint64_t)1 << 40;
    CHECK_EQ_INT(outside_bounds(&c, 2, &reads), 0);
    CHECK(c.tsc1 < c.tsc0 + ((uint64_t)1 << 40));

    /* Even the first pair lies ahead: the rate is measured again from a
       new start, meanwhile every read is real. */
    c.tsc0 = c.tsc1 = c.tsc1 + ((uint64_t)1 << 40);
    int64_t before = mc__now_ns();
    int64_t t = mc__clock_now(&c);
    int64_t after = mc__now_ns();
    CHECK(t >= before && t <= after);
    CHECK(c.mult == 0);
    CHECK_EQ_INT(calibrate(&c), 0);
    CHECK(c.mult != 0);

    /* A rate far off (here 4x) lasts at most until the next resync,
       which finds the extrapolation off and measures the rate again. */
    c.mult *= 4;
    for (int i = 0; i < 2; i++) {
        int64_t end = mc__now_ns() + 20 * 1000000;
        while (mc__now_ns() < end)
            ;
        (void)mc__clock_now(&c);
    }
    CHECK_EQ_INT(outside_bounds(&c, 10, &reads), 0);

    /* The counter ran 400 ms that CLOCK_MONOTONIC did not (a suspend, as
       the pair sees it): the next real read starts a new baseline and
       measures the rate again, so time read after it is right at once. */
    uint64_t rate = c.mult;
    uint64_t ahead = (uint64_t)((((unsigned __int128)400000000) << 32) / rate);
    c.tsc0 -= ahead;
    c.tsc1 -= ahead;
    CHECK_EQ_INT(outside_bounds(&c, 20, &reads), 0);
    int64_t t0 = mc__clock_now(&c), r0 = mc__now_ns();
    while (mc__now_ns() - r0 < 2000000)
        ;
    int64_t dt = mc__clock_now(&c) - t0, dr = mc__now_ns() - r0;
    printf("  after the step: 2 ms of spinning read as %.3f ms (real %.3f)\n", dt / 1e6, dr / 1e6);
    CHECK(dt >= 2000000 - TOLERANCE_NS && dt <= dr + TOLERANCE_NS);
    CHECK(c.mult != 0 && (c.mult > rate ? c.mult - rate : rate - c.mult) < rate / 100);

    /* No pair at the start (init could not read one): the first resync
       makes the baseline, then it calibrates as usual. */
    mc_clock late;
    memset(&late, 0, sizeof late);
    late.use_tsc = true;
    CHECK_EQ_INT(calibrate(&late), 0);
    CHECK(late.mult != 0 && late.tsc0 != 0);
}

static int task_sleep_ms(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)ctx;
    int ms = 0;
    if (len == sizeof ms)
        memcpy(&ms, arg, sizeof ms);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
    return 0;
}

static int task_empty(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)len;
    (void)ctx;
    return 0;
}

static uint64_t busy_ns(mc_pool *pool)
{
    mc_pool_stats st;
    mc_worker_stats ws[1];
    if (mc_pool_get_stats(pool, &st, ws, 1) != 1)
        return UINT64_MAX;
    return ws[0].busy_ns;
}

TEST(busy_ns_counts_the_time_in_tasks)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 1));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));

    /* One long task: at least its sleep, at most the wall time around it. */
    uint64_t b0 = busy_ns(pool);
    int ms = 30;
    int64_t t0 = mc__now_ns();
    CHECK_OK(mc_submit(g, task_sleep_ms, &ms, sizeof ms, 10));
    CHECK_OK(mc_group_wait(g, 30));
    int64_t wall = mc__now_ns() - t0;
    uint64_t d = busy_ns(pool) - b0;
    printf("  a 30 ms task: busy %.3f ms, wall %.3f ms\n", d / 1e6, wall / 1e6);
    CHECK(d >= 30u * 1000000);
    CHECK(d <= (uint64_t)wall);

    /* Many short ones, handed over back to back (the worker's clock is
       calibrated by now): still within the wall time, and each counted. */
    uint64_t b1 = busy_ns(pool);
    t0 = mc__now_ns();
    for (int i = 0; i < 20000; i++) {
        size_t k = mc_group_size(g);
        if (mc_submit(g, task_empty, NULL, 0, 10) != MC_OK || mc_group_wait_one(g, k, 10) != MC_OK) {
            CHECK(!"a short task failed");
            break;
        }
        if (mc_group_size(g) >= 1024) {
            mc_group_destroy(g);
            REQUIRE_OK(mc_group_create(pool, &g));
        }
    }
    wall = mc__now_ns() - t0;
    d = busy_ns(pool) - b1;
    printf("  20,000 empty tasks: busy %.3f ms, wall %.3f ms\n", d / 1e6, wall / 1e6);
    CHECK(d <= (uint64_t)wall);
    /* And a sleeping one among them is still counted whole. */
    uint64_t b2 = busy_ns(pool);
    ms = 5;
    size_t k = mc_group_size(g);
    CHECK_OK(mc_submit(g, task_sleep_ms, &ms, sizeof ms, 10));
    CHECK_OK(mc_group_wait_one(g, k, 30));
    CHECK(busy_ns(pool) - b2 >= 5u * 1000000);

    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK_NOTHING_LEFT(&snap);
}
