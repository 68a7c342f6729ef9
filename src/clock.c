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
 * of the worker's life). Between two real reads the error is the rate's
 * error times at most a few milliseconds: well below a nanosecond.
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
    c->use_tsc = use_tsc && MC_HAVE_TSC && read_pair(&c->ns0, &c->tsc0);
    c->ns1 = c->ns0;
    c->tsc1 = c->tsc0;
}

int64_t mc__clock_now(mc_clock *c)
{
    if (!c->use_tsc)
        return mc__now_ns();
    uint64_t d = read_tsc() - c->tsc1; /* huge if the counter went backwards */
    if (c->mult != 0 && d < MC_CLOCK_RESYNC_TICKS)
        return c->ns1 + (int64_t)(((unsigned __int128)d * c->mult) >> 32);
    int64_t ns;
    uint64_t tsc;
    if (c->mult == 0) {
        /* Not calibrated yet: one real read, as without the counter, until
           a baseline long enough for the rate is there. */
        ns = mc__now_ns();
        if (ns - c->ns0 < MC_CLOCK_CALIBRATE_NS && ns >= c->ns0)
            return ns;
    }
    if (!read_pair(&ns, &tsc))
        return mc__now_ns(); /* preempted each time: the next read tries again */
    if (tsc <= c->tsc0 || ns <= c->ns0) {
        /* The counter stepped back (not in step after all): start over. */
        c->ns0 = ns;
        c->tsc0 = tsc;
        c->mult = 0;
    } else if (ns - c->ns0 >= MC_CLOCK_CALIBRATE_NS) {
        c->mult = (uint64_t)(((unsigned __int128)(uint64_t)(ns - c->ns0) << 32) / (tsc - c->tsc0));
    }
    c->ns1 = ns;
    c->tsc1 = tsc;
    return ns;
}
