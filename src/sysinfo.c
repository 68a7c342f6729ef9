/*
 * sysinfo.c — facts about the machine the pool sizes itself by: online
 * CPUs, the load average, and how to split work into per-worker ranges.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdlib.h>
#include <unistd.h>

int mc_online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (n > MC_WORKERS_MAX ? MC_WORKERS_MAX : (int)n);
}

int mc_loadavg(double *one_minute)
{
    if (!one_minute)
        return MC_EINVAL;
    double l[1];
    if (getloadavg(l, 1) != 1)
        return MC_ESYSTEM;
    *one_minute = l[0];
    return MC_OK;
}

size_t mc_range_step(size_t count, size_t min_range_size, int workers)
{
    if (count == 0)
        return 0;
    size_t w = workers > 0 ? (size_t)workers : (size_t)mc_online_cpus();
    size_t step = count / w + (count % w != 0); /* ceil(count / workers) */
    return step > min_range_size ? step : (min_range_size ? min_range_size : 1);
}
