/*
 * memory.c — shared memory per task: how many bytes of the pool's arena a
 * task takes beyond its payload (its argument bytes, and its result
 * bytes once it has run), read from mc_pool_get_stats().shm_in_use.
 *
 * One worker is held in a first task (behind a gate in shared memory)
 * while N tasks with arg_len argument bytes are queued: the growth of
 * shm_in_use over N is the cost of a queued task. The gate then opens,
 * every task runs and sets a result of result_len bytes, and the growth
 * over N is the cost of a finished task whose result waits for the caller.
 * Memory is deterministic: one pass each suffices.
 *
 * Output: one JSON object per line and (arg_len, result_len) pair:
 *   {"name": "memory", "tasks": N, "arg_len": A, "result_len": R,
 *    "queued_bytes": per task, "queued_overhead": per task beyond A,
 *    "done_bytes": per task, "done_overhead": per task beyond A + R}
 *
 *   memory [tasks] [arg_len:result_len ...]   (default 100000; a sweep)
 */
#define _GNU_SOURCE
#include <multicore.h>

#include <linux/futex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static _Atomic uint32_t *g_gate; /* shared with the worker: 1 = open */

static void die(const char *what, int err)
{
    fprintf(stderr, "memory: %s: %s\n", what, mc_strerror(err));
    exit(1);
}

static int gate_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)len;
    (void)ctx;
    while (!atomic_load(g_gate))
        syscall(SYS_futex, g_gate, FUTEX_WAIT, 0, NULL, NULL, 0);
    return 0;
}

/* Sets a result of the length its first 4 argument bytes say (else 0). */
static int result_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    uint32_t want = 0;
    if (len >= 4)
        memcpy(&want, arg, 4);
    char *p = mc_result_alloc(ctx, want);
    if (!p)
        return 1;
    memset(p, 0x5a, want);
    return 0;
}

static uint64_t in_use(mc_pool *pool)
{
    mc_pool_stats s;
    int r = mc_pool_get_stats(pool, &s, NULL, 0);
    if (r < 0)
        die("mc_pool_get_stats", r);
    return s.shm_in_use;
}

static void measure(size_t n, uint32_t arg_len, uint32_t result_len)
{
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 1;
    o.queue_capacity = n + 1;
    mc_pool *pool;
    mc_group *g;
    int err;
    atomic_store(g_gate, 0);
    if ((err = mc_pool_start(&pool, &o)) != MC_OK || (err = mc_pool_wait_ready(pool, 30)) != MC_OK)
        die("start", err);
    if ((err = mc_group_create(pool, &g)) != MC_OK || (err = mc_submit(g, gate_task, NULL, 0, -1)) != MC_OK)
        die("gate", err);
    /* the worker holds the gate task (not queued) before the count starts */
    for (mc_pool_stats s;; usleep(100))
        if (mc_pool_get_stats(pool, &s, NULL, 0) >= 0 && s.queued == 0)
            break;
    char *arg = calloc(1, arg_len ? arg_len : 1);
    if (arg_len >= 4)
        memcpy(arg, &result_len, 4);
    uint64_t base = in_use(pool);
    for (size_t i = 0; i < n; i++)
        if ((err = mc_submit(g, result_task, arg, arg_len, -1)) != MC_OK)
            die("mc_submit", err);
    uint64_t queued = in_use(pool) - base;
    atomic_store(g_gate, 1);
    syscall(SYS_futex, g_gate, FUTEX_WAKE, 1, NULL, NULL, 0);
    if ((err = mc_group_wait(g, -1)) != MC_OK)
        die("mc_group_wait", err);
    uint64_t done = in_use(pool) - base;
    mc_result r;
    if ((err = mc_group_result(g, n, &r)) != MC_OK || r.status != MC_OK || r.len != (arg_len >= 4 ? result_len : 0))
        die("result", err ? err : MC_EINVAL);
    uint32_t rl = arg_len >= 4 ? result_len : 0;
    printf("{\"name\": \"memory\", \"tasks\": %zu, \"arg_len\": %u, \"result_len\": %u, "
           "\"queued_bytes\": %.1f, \"queued_overhead\": %.1f, \"done_bytes\": %.1f, "
           "\"done_overhead\": %.1f}\n",
           n, arg_len, rl, (double)queued / (double)n, (double)queued / (double)n - arg_len,
           (double)done / (double)n, (double)done / (double)n - arg_len - rl);
    fflush(stdout);
    free(arg);
    mc_group_destroy(g);
    if ((err = mc_pool_stop(pool)) != MC_OK)
        die("mc_pool_stop", err);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    g_gate = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (n == 0 || g_gate == MAP_FAILED) {
        fprintf(stderr, "usage: memory [tasks] [arg_len:result_len ...]\n");
        return 2;
    }
    if (argc > 2) {
        for (int i = 2; i < argc; i++) {
            unsigned a, r;
            if (sscanf(argv[i], "%u:%u", &a, &r) != 2) {
                fprintf(stderr, "memory: bad pair %s (want arg_len:result_len)\n", argv[i]);
                return 2;
            }
            measure(n, a, r);
        }
        return 0;
    }
    /* A sweep over small payloads, and the Python binding's typical task
       (about 102 argument bytes, a 32-byte result for an int). */
    static const unsigned pairs[][2] = {{8, 0},   {8, 8},    {16, 16},  {32, 32},  {48, 48},
                                        {64, 8},  {100, 32}, {102, 32}, {112, 48}, {128, 64},
                                        {200, 100}, {1000, 100}, {4096, 8}, {65536, 65536}};
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        measure(pairs[i][0] >= 65536 ? n / 100 : n, pairs[i][0], pairs[i][1]);
    return 0;
}
