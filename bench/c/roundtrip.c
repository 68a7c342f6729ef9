/*
 * roundtrip.c — the C API's round trip: submit one empty task, wait for
 * it, read its result; through the public API only (<multicore.h>).
 *
 * Two ways of using a group, each timed "hot" (back to back) and "after
 * sleep" (the caller pauses sleep_us between tasks, so the worker's spin
 * runs out and it sleeps on its futex):
 *   group_per_task: mc_group_create, mc_submit, mc_group_wait,
 *                   mc_group_result, mc_group_destroy for every task;
 *   reused_group:   mc_submit, mc_group_wait_one, mc_group_result on one
 *                   group (recreated, untimed, every 1024 tasks).
 * Output: one JSON object per line (see bench_util.h).
 *
 *   roundtrip [hot_iterations] [sleep_iterations] [sleep_us] [workers]
 */
#include <multicore.h>

#include "bench_util.h"

#include <string.h>

#define REUSE_LIMIT 1024

static int empty_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)len;
    (void)ctx;
    return 0;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "roundtrip: %s: %s\n", what, mc_strerror(err));
    exit(1);
}

static int64_t one_fresh_group(mc_pool *pool)
{
    mc_group *g;
    mc_result r;
    int err;
    int64_t t0 = bench_now_ns();
    if ((err = mc_group_create(pool, &g)) != MC_OK)
        die("mc_group_create", err);
    if ((err = mc_submit(g, empty_task, NULL, 0, -1.0)) != MC_OK)
        die("mc_submit", err);
    if ((err = mc_group_wait(g, -1.0)) != MC_OK)
        die("mc_group_wait", err);
    if ((err = mc_group_result(g, 0, &r)) != MC_OK || r.status != MC_OK)
        die("mc_group_result", err != MC_OK ? err : r.status);
    mc_group_destroy(g);
    return bench_now_ns() - t0;
}

static int64_t one_reused_group(mc_pool *pool, mc_group **g)
{
    mc_result r;
    int err;
    if (mc_group_size(*g) >= REUSE_LIMIT) {   /* untimed: frees the results */
        mc_group_destroy(*g);
        if ((err = mc_group_create(pool, g)) != MC_OK)
            die("mc_group_create", err);
    }
    size_t i = mc_group_size(*g);
    int64_t t0 = bench_now_ns();
    if ((err = mc_submit(*g, empty_task, NULL, 0, -1.0)) != MC_OK)
        die("mc_submit", err);
    if ((err = mc_group_wait_one(*g, i, -1.0)) != MC_OK)
        die("mc_group_wait_one", err);
    if ((err = mc_group_result(*g, i, &r)) != MC_OK || r.status != MC_OK)
        die("mc_group_result", err != MC_OK ? err : r.status);
    return bench_now_ns() - t0;
}

int main(int argc, char **argv)
{
    size_t hot_n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    size_t sleep_n = argc > 2 ? strtoul(argv[2], NULL, 10) : 500;
    long sleep_us = argc > 3 ? strtol(argv[3], NULL, 10) : 5000;
    int workers = argc > 4 ? atoi(argv[4]) : 1;
    if (hot_n == 0 || sleep_n == 0) {
        fprintf(stderr, "usage: roundtrip [hot_iterations] [sleep_iterations] "
                        "[sleep_us] [workers]\n");
        return 2;
    }

    mc_pool_options opts;
    mc_pool_options_init(&opts);
    opts.workers = workers;
    mc_pool *pool;
    int err;
    if ((err = mc_pool_start(&pool, &opts)) != MC_OK)
        die("mc_pool_start", err);
    if ((err = mc_pool_wait_ready(pool, 30.0)) != MC_OK)
        die("mc_pool_wait_ready", err);
    workers = mc_pool_workers(pool);

    size_t cap = hot_n > sleep_n ? hot_n : sleep_n;
    int64_t *samples = malloc(cap * sizeof *samples);
    if (samples == NULL)
        die("malloc", MC_ENOMEM);

    for (int reuse = 0; reuse < 2; reuse++) {
        const char *name = reuse ? "multicore_reused_group" : "multicore_group_per_task";
        mc_group *g = NULL;
        if (reuse && (err = mc_group_create(pool, &g)) != MC_OK)
            die("mc_group_create", err);
        for (int pass = 0; pass < 2; pass++) {
            size_t n = pass == 0 ? hot_n : sleep_n;
            size_t warm = pass == 0 ? n / 10 + 10 : 0;
            for (size_t i = 0; i < warm + n; i++) {
                if (pass == 1)
                    bench_sleep_us(sleep_us);
                int64_t dt = reuse ? one_reused_group(pool, &g) : one_fresh_group(pool);
                if (i >= warm)
                    samples[i - warm] = dt;
            }
            bench_report(name, pass == 0 ? "hot" : "after_sleep", workers, samples, n);
        }
        if (g != NULL)
            mc_group_destroy(g);
    }
    free(samples);
    if ((err = mc_pool_stop(pool)) != MC_OK)
        die("mc_pool_stop", err);
    return 0;
}
