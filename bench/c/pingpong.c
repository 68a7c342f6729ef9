/*
 * pingpong.c — the floors for a cross-process round trip: two processes
 * (fork) hand a sequence number back and forth through one shared page.
 *
 *   spin:  both sides busy-wait on the word (the partner burns a core);
 *   futex: both sides sleep in FUTEX_WAIT and wake each other with
 *          FUTEX_WAKE on every hand-off (no spinning at all);
 *   spin_record: spin, and a second line each way, as a task record
 *          moves: the caller writes the task into it before the ping,
 *          the partner reads it and writes the result there before the
 *          pong, the caller reads the result (the least a hand-off with
 *          a record apart from the signalling word can cost).
 *
 * Each is timed "hot" (round trips back to back) and "after sleep" (the
 * caller pauses sleep_us between round trips, so caches and the partner's
 * CPU go cold). Output: one JSON object per line (see bench_util.h).
 *
 *   pingpong [hot_iterations] [sleep_iterations] [sleep_us]
 */
#define _GNU_SOURCE
#include "bench_util.h"

#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    _Alignas(64) _Atomic uint32_t ping;   /* caller -> partner */
    _Alignas(64) _Atomic uint32_t pong;   /* partner -> caller */
    _Alignas(64) _Atomic uint32_t quit;
    _Alignas(64) uint64_t record[8];      /* spin_record: task in [0], result in [1] */
} shared_words;

static void futex_wait(_Atomic uint32_t *w, uint32_t expected)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT, expected, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *w)
{
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE, 1, NULL, NULL, 0);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield" ::: "memory");
#endif
}

static _Noreturn void partner(shared_words *s, int use_futex, int use_record)
{
    uint32_t last = 0;
    for (;;) {
        uint32_t v;
        while ((v = atomic_load_explicit(&s->ping, memory_order_acquire)) == last) {
            if (atomic_load_explicit(&s->quit, memory_order_relaxed))
                _exit(0);
            if (use_futex)
                futex_wait(&s->ping, last);
            else
                cpu_relax();
        }
        last = v;
        if (use_record)
            s->record[1] = s->record[0] + 1;
        atomic_store_explicit(&s->pong, v, memory_order_release);
        if (use_futex)
            futex_wake(&s->pong);
    }
}

static void run(const char *name, int use_futex, int use_record, size_t hot_n, size_t sleep_n,
                long sleep_us)
{
    shared_words *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (s == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    memset(s, 0, sizeof *s);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(1);
    }
    if (pid == 0) {
        /* A partner left behind (the caller killed, or by SIGPIPE when
           its output is cut short) would spin on a core for good. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        partner(s, use_futex, use_record);
    }

    size_t cap = hot_n > sleep_n ? hot_n : sleep_n;
    int64_t *samples = malloc(cap * sizeof *samples);
    uint32_t seq = 0;
    for (int pass = 0; pass < 2; pass++) {
        size_t n = pass == 0 ? hot_n : sleep_n;
        /* warm-up for the hot pass */
        size_t warm = pass == 0 ? n / 10 + 10 : 0;
        for (size_t i = 0; i < warm + n; i++) {
            if (pass == 1)
                bench_sleep_us(sleep_us);
            int64_t t0 = bench_now_ns();
            uint32_t want = ++seq;
            if (use_record)
                s->record[0] = want;
            atomic_store_explicit(&s->ping, want, memory_order_release);
            if (use_futex)
                futex_wake(&s->ping);
            uint32_t v;
            while ((v = atomic_load_explicit(&s->pong, memory_order_acquire)) != want) {
                if (use_futex)
                    futex_wait(&s->pong, v);
                else
                    cpu_relax();
            }
            if (use_record && s->record[1] != (uint64_t)want + 1) {
                fprintf(stderr, "pingpong: the record's result is wrong\n");
                exit(1);
            }
            int64_t t1 = bench_now_ns();
            if (i >= warm)
                samples[i - warm] = t1 - t0;
        }
        bench_report(name, pass == 0 ? "hot" : "after_sleep", 1, samples, n);
    }
    atomic_store_explicit(&s->quit, 1, memory_order_relaxed);
    atomic_store_explicit(&s->ping, ++seq, memory_order_release); /* so it looks */
    if (use_futex)
        futex_wake(&s->ping);
    waitpid(pid, NULL, 0);
    free(samples);
    munmap(s, sizeof *s);
}

int main(int argc, char **argv)
{
    size_t hot_n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    size_t sleep_n = argc > 2 ? strtoul(argv[2], NULL, 10) : 500;
    long sleep_us = argc > 3 ? strtol(argv[3], NULL, 10) : 5000;
    if (hot_n == 0 || sleep_n == 0) {
        fprintf(stderr, "usage: pingpong [hot_iterations] [sleep_iterations] [sleep_us]\n");
        return 2;
    }
    run("spin_floor", 0, 0, hot_n, sleep_n, sleep_us);
    run("spin_record_floor", 0, 1, hot_n, sleep_n, sleep_us);
    run("futex_floor", 1, 0, hot_n, sleep_n, sleep_us);
    return 0;
}
