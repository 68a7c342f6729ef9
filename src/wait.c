/*
 * wait.c — clocks and futexes.
 *
 * Every sleep in the engine is a FUTEX_WAIT on a 32-bit word of the shared
 * region, so it is keyed on the memfd page and works across processes (no
 * FUTEX_PRIVATE_FLAG). Deadlines are absolute CLOCK_MONOTONIC times passed
 * to FUTEX_WAIT_BITSET, so a wait that a signal interrupts and the caller
 * resumes keeps its original deadline.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int64_t mc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t mc__spin_budget(mc_spin *s)
{
    if (s->budget_ns < MC_SPIN_MIN_NS || s->budget_ns > MC_SPIN_NS)
        s->budget_ns = MC_SPIN_NS;
    return (s->waits++ & 15) == 0 ? MC_SPIN_NS : s->budget_ns;
}

bool mc__crowding_note(mc_crowding *c, int64_t before, int64_t after)
{
    if (after - before < MC_SPIN_CROWDED_NS) {
        c->streak = 0; /* the yield gave nothing away: we are alone now */
        return false;
    }
    c->streak = c->crowded_at != 0 && after - c->crowded_at < MC_SPIN_CROWDED_GAP_NS ? c->streak + 1 : 1;
    c->crowded_at = after;
    if (c->streak < MC_SPIN_CROWDED_STREAK || (c->moved_at != 0 && after - c->moved_at < MC_SPIN_MOVE_EVERY_NS))
        return false;
    c->streak = 0;
    c->moved_at = after;
    return true;
}

void mc__spin_yield(int64_t *now)
{
    static _Thread_local mc_crowding crowding;
    sched_yield();
    int64_t back = mc__now_ns();
    if (mc__crowding_note(&crowding, *now, back)) {
        /* A timer's wake-up: the scheduler places us anew, on an idle CPU
           if there is one, away from the task we were trading with. */
        struct timespec ts = {0, 1000};
        nanosleep(&ts, NULL);
        back = mc__now_ns();
    }
    *now = back;
}

void mc__spin_done(mc_spin *s, bool found, int64_t spun_ns)
{
    int64_t b = found ? (4 * spun_ns > s->budget_ns ? 4 * spun_ns : s->budget_ns)
                      : s->budget_ns - s->budget_ns / 4;
    s->budget_ns = b < MC_SPIN_MIN_NS ? MC_SPIN_MIN_NS : b > MC_SPIN_NS ? MC_SPIN_NS : b;
}

int64_t mc__deadline(double timeout_s)
{
    if (timeout_s < 0 || isnan(timeout_s))
        return INT64_MAX;
    if (timeout_s > 1e9) /* ~31 years: forever, without overflow */
        return INT64_MAX;
    return mc__now_ns() + (int64_t)(timeout_s * 1e9);
}

int mc__futex_wait(_Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
    struct timespec ts, *tp = NULL;
    if (deadline_ns != INT64_MAX) {
        if (deadline_ns <= mc__now_ns())
            return MC_ETIMEDOUT;
        ts.tv_sec = deadline_ns / 1000000000;
        ts.tv_nsec = deadline_ns % 1000000000;
        tp = &ts;
    }
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_BITSET, expected, tp, NULL,
                     FUTEX_BITSET_MATCH_ANY);
    if (r == 0)
        return MC_OK;
    switch (errno) {
    case EAGAIN:
        return MC_OK; /* the word had already changed */
    case ETIMEDOUT:
        return MC_ETIMEDOUT;
    case EINTR:
        return MC_EINTR;
    default:
        return MC_ESYSTEM;
    }
}

int mc__futex_wake(_Atomic uint32_t *word, int n)
{
    long r = syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, n, NULL, NULL, 0);
    return r < 0 ? 0 : (int)r;
}

int mc__futex_bump_wake(_Atomic uint32_t *seq, int n)
{
    atomic_fetch_add_explicit(seq, 1, memory_order_seq_cst);
    return mc__futex_wake(seq, n);
}
