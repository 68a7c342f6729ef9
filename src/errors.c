/*
 * errors.c — names for the MC_E* codes. Kept apart so the one table that
 * users read in logs is easy to find and to keep in step with multicore.h.
 */
#include "internal.h"

const char *mc_strerror(int err)
{
    switch (err) {
    case MC_OK: return "success";
    case MC_EINVAL: return "invalid argument";
    case MC_ENOMEM: return "not enough memory for the request";
    case MC_ETIMEDOUT: return "timed out";
    case MC_EINTR: return "interrupted by a signal";
    case MC_ESTATE: return "the pool is stopped or belongs to another process";
    case MC_EWORKERDIED: return "the worker running the task died";
    case MC_ETASK: return "the task reported a failure";
    case MC_ECANCELED: return "the task was cancelled";
    case MC_ESYSTEM: return "a system call failed (see errno)";
    case MC_EPOOLDIED: return "the pool's zygote process died";
    case MC_EWORKERINIT: return "a worker's init callback failed";
    default: return "unknown multicore error";
    }
}
