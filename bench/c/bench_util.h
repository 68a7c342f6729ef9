/*
 * bench_util.h — clocks, sleeps and percentiles shared by the C benchmarks
 * (header-only, so each benchmark stays a single cc command).
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline void bench_sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static int bench_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Sorts samples in place; returns the q-quantile (0..1), nearest rank. */
static inline int64_t bench_quantile(int64_t *samples, size_t n, double q)
{
    if (n == 0)
        return 0;
    qsort(samples, n, sizeof *samples, bench_cmp_i64);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return samples[i < n ? i : n - 1];
}

/* One JSON object per line: {"name":..., "mode":..., "n":..., "p50_ns":...} */
static inline void bench_report(const char *name, const char *mode, int workers,
                                int64_t *samples, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)samples[i];
    int64_t p50 = bench_quantile(samples, n, 0.50);
    int64_t p99 = bench_quantile(samples, n, 0.99);
    printf("{\"name\": \"%s\", \"mode\": \"%s\", \"workers\": %d, \"n\": %zu, "
           "\"p50_ns\": %lld, \"p99_ns\": %lld, \"mean_ns\": %.0f, "
           "\"min_ns\": %lld, \"max_ns\": %lld}\n",
           name, mode, workers, n, (long long)p50, (long long)p99,
           n ? sum / (double)n : 0.0, (long long)samples[0],
           (long long)samples[n ? n - 1 : 0]);
    fflush(stdout);
}

#endif /* BENCH_UTIL_H */
