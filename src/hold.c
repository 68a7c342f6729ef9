/*
 * hold.c — holds: a task record kept alive past its group, so that a
 * zygote-free reader can keep using its bytes in place (the Python binding
 * hands out numpy arrays that are views of shared memory this way).
 *
 * A hold is one more reference on the task record (journaled, like the
 * group's and the queue's), so the record and its result are freed by
 * whichever release comes last. In the caller a hold also keeps a
 * reference on the pool handle, which keeps the mapping alive after
 * mc_pool_stop(). In a worker the hold is also written in the worker's
 * slot, so that the zygote can release it if the worker dies.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdlib.h>
#include <unistd.h>

static void task_ref(mc_header *h, uint64_t off)
{
    mc_task *t = (mc_task *)mc_ptr(h, off);
    mc_txn_store(h, &t->refs, t->refs + 1);
}

int mc_group_hold_task(mc_pool *pool, uint64_t off, mc_hold **out)
{
    mc_hold *hold = malloc(sizeof *hold);
    if (!hold)
        return MC_ENOMEM;
    mc_header *h = pool->hdr;
    int r = mc_lock(h);
    if (r != MC_OK) {
        free(hold);
        return r;
    }
    task_ref(h, off);
    mc_unlock(h);
    mc_pool_ref(pool);
    *hold = (mc_hold){.pool = pool, .h = h, .task_off = off, .pid = getpid()};
    *out = hold;
    return MC_OK;
}

int mc_worker_hold_task(mc_header *h, mc_worker_slot *slot, uint64_t off, mc_hold **out)
{
    mc_hold *hold = malloc(sizeof *hold);
    if (!hold)
        return MC_ENOMEM;
    int r = mc_lock(h);
    if (r != MC_OK) {
        free(hold);
        return r;
    }
    int free_at = -1;
    for (int i = 0; i < MC_WORKER_HOLDS && free_at < 0; i++)
        if (!slot->holds[i])
            free_at = i;
    if (free_at >= 0) {
        mc_txn_store(h, &slot->holds[free_at], off);
        task_ref(h, off);
    }
    mc_unlock(h);
    if (free_at < 0) {
        free(hold);
        return MC_ENOMEM;
    }
    *hold = (mc_hold){.pool = NULL, .h = h, .task_off = off, .pid = getpid()};
    *out = hold;
    return MC_OK;
}

void mc_release_worker_holds(mc_header *h, mc_worker_slot *slot)
{
    for (int i = 0; i < MC_WORKER_HOLDS; i++) {
        if (!slot->holds[i])
            continue;
        mc_task_unref(h, slot->holds[i]);
        mc_txn_store(h, &slot->holds[i], 0);
        mc_txn_commit(h); /* one release per change: the journal is bounded */
    }
}

void mc_hold_release(mc_hold *hold)
{
    if (!hold)
        return;
    if (hold->pid != getpid()) { /* a fork() child's copy: not ours to release */
        free(hold);
        return;
    }
    mc_header *h = hold->h;
    if (hold->pool) {
        mc_pool *pool = hold->pool;
        /* After mc_pool_stop() the records are gone with the pool; only
           the mapping, kept by our pool reference, remains. */
        if (mc_pool_enter(pool) == MC_OK) {
            if (mc_lock(h) == MC_OK) {
                mc_task_unref(h, hold->task_off);
                mc_unlock(h);
            }
            mc_pool_leave(pool);
        }
        mc_pool_unref(pool);
    } else {
        mc_worker_slot *slot = mc_worker_own_slot();
        if (slot && mc_lock(h) == MC_OK) {
            for (int i = 0; i < MC_WORKER_HOLDS; i++) {
                if (slot->holds[i] == hold->task_off) {
                    mc_txn_store(h, &slot->holds[i], 0);
                    mc_task_unref(h, hold->task_off);
                    break;
                }
            }
            mc_unlock(h);
        }
    }
    free(hold);
}
