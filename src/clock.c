/*
 * clock.c — the worker's task clock: CLOCK_MONOTONIC nanoseconds from the
 * CPU's time-stamp counter, without a clock_gettime() per read.
 *
 * A worker reads the time twice per task, around the task function (its
 * busy_ns, and the spinner's mark of queue.c). clock_gettime() costs about
 * 21 ns here, and on x86 the vDSO orders its counter read after every
 * earlier load: on a hand-off those two reads sat on the round trip's
 * critical path, waiting for the task's cache lines, and cost it 40-50 ns
 * of 230 (docs/benchmarks.md, (h)). A plain RDTSC does not wait.
 *
 * So the clock keeps a pair (ns, tsc) read together, and extrapolates
 * from it with a rate measured against CLOCK_MONOTONIC over the worker's
 * own life: ns = ns1 + (tsc - tsc1) * mult / 2^32. It reads the real
 * clock again (and refines the rate over the longer baseline) whenever
 * the counter has moved MC_CLOCK_RESYNC_TICKS past the pair, went
 * backwards, or the rate is not known yet (the first MC_CLOCK_CALIBRATE_NS
 * of the worker's life). A pair's counter reads are at most
 * MC_CLOCK_PAIR_TICKS apart, so a pair is off by half that at most (about
 * 0.4 us here); between two real reads the rate's error adds its share of
 * at most 2^24 ticks, and CLOCK_MONOTONIC's own slewing meanwhile (NTP's
 * usual 500 ppm: 3 us over 6 ms). A real read that finds the
 * extrapolation far off (the counter ran during a suspend, or stood still
 * through a VM snapshot's restore, or the rate was wrong) starts a new
 * baseline and measures the rate again.
 *
 * The counter is used only where the kernel itself keeps time with it
 * (clocksource "tsc": constant, and in step across CPUs, so a process that
 * moves between CPUs reads one counter). Anywhere else, and off x86-64,
 * every read is clock_gettime().
 */
#define _GNU_SOURCE
#include "internal.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#define MC_HAVE_TSC 1
static inline uint64_t read_tsc(void) { return __builtin_ia32_rdtsc(); }
#else
#define MC_HAVE_TSC 0
static inline uint64_t read_tsc(void) { return 0; }
#endif

bool mc__clock_tsc_usable(void)
{
#if MC_HAVE_TSC
    char buf[32] = {0};
    int fd = open("/sys/devices/system/clocksource/clocksource0/current_clocksource", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n >= 3 && strncmp(buf, "tsc", 3) == 0 && (n == 3 || buf[3] == '\n');
#else
    return false;
#endif
}

/* A (ns, tsc) pair read together: the counter is read on both sides of
   clock_gettime(), and the pair kept only if those two reads are close,
   so that a preemption in between cannot skew the rate. false if none of
   a few tries was. */
static bool read_pair(int64_t *ns, uint64_t *tsc)
{
    for (int tries = 0; tries < 4; tries++) {
        uint64_t before = read_tsc();
        int64_t n = mc__now_ns();
        uint64_t after = read_tsc();
        if (after >= before && after - before < MC_CLOCK_PAIR_TICKS) {
            *ns = n;
            *tsc = before + (after - before) / 2;
            return true;
        }
    }
    return false;
}

void mc__clock_init(mc_clock *c, bool use_tsc)
{
    memset(c, 0, sizeof *c);
    c->use_tsc = use_tsc && MC_HAVE_TSC;
    /* A pair that could not be read now is read at the first resync
       (tsc0 == 0 starts a baseline there). */
    if (c->use_tsc && read_pair(&c->ns0, &c->tsc0)) {
        c->ns1 = c->ns0;
        c->tsc1 = c->tsc0;
    }
}

#if MC_HAVE_TSC
/* The real clock, read as a pair; the baseline and the rate follow it. */
static int64_t resync(mc_clock *c)
{
    int64_t ns;
    uint64_t tsc;
    if (!read_pair(&ns, &tsc)) {
        /* Preempted each time, or a clocksource slower than the kernel's
           was at the start: after a few such resyncs in a row, read the
           real clock for good. */
        if (++c->failed_pairs >= MC_CLOCK_PAIR_FAILURES)
            c->use_tsc = false;
        return mc__now_ns();
    }
    c->failed_pairs = 0;
    bool restart = c->tsc0 == 0 || tsc <= c->tsc0 || ns <= c->ns0;
    if (!restart && c->mult != 0 && tsc > c->tsc1) {
        /* Where the extrapolation had got to: far off means the counter
           ran while CLOCK_MONOTONIC did not (a suspend, a VM snapshot),
           or the other way round, or that the rate is wrong. */
        int64_t guess = c->ns1 + (int64_t)(((unsigned __int128)(tsc - c->tsc1) * c->mult) >> 32);
        int64_t off = guess > ns ? guess - ns : ns - guess;
        restart = off > MC_CLOCK_STEP_NS + (ns - c->ns1) / 1024;
    }
    if (restart) {
        /* A new baseline, and the rate measured again over it: until then
           every read is a real one. */
        c->mult = 0;
        c->ns0 = ns;
        c->tsc0 = tsc;
    } else if (ns - c->ns0 >= MC_CLOCK_CALIBRATE_NS) {
        c->mult = (uint64_t)(((unsigned __int128)(uint64_t)(ns - c->ns0) << 32) / (tsc - c->tsc0));
    }
    c->ns1 = ns;
    c->tsc1 = tsc;
    return ns;
}
#endif

int64_t mc__clock_now(mc_clock *c)
{
#if MC_HAVE_TSC
    if (c->use_tsc) {
        uint64_t d = read_tsc() - c->tsc1; /* huge if the counter went backwards */
        if (c->mult != 0 && d < MC_CLOCK_RESYNC_TICKS)
            return c->ns1 + (int64_t)(((unsigned __int128)d * c->mult) >> 32);
        if (c->mult == 0 && c->tsc0 != 0) {
            /* Not calibrated yet: one real read, as without the counter,
               until a baseline long enough for the rate is there. */
            int64_t ns = mc__now_ns();
            if (ns >= c->ns0 && ns - c->ns0 < MC_CLOCK_CALIBRATE_NS)
                return ns;
        }
        return resync(c);
    }
#else
    (void)c;
#endif
    return mc__now_ns();
}
