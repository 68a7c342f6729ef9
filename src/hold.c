/*
 * hold.c — holds and shared buffers: records kept alive past their group,
 * so that a reader can keep using their bytes in place (the Python binding
 * hands out numpy arrays that are views of shared memory this way).
 *
 * A shared buffer is a record of its own (state MC_TS_BUFFER, never
 * queued, its bytes where a task's arguments would be) owned only by holds
 * and by the task records that link it. Linking is what lets a buffer
 * travel by reference: the link is a reference the receiver's side cannot
 * lose (it lives as long as the task record), and the receiver turns it
 * into a hold of its own before the record goes.
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
#include <string.h>
#include <unistd.h>

int mc__group_hold_task(mc_pool *pool, uint64_t off, mc_hold **out)
{
    mc_hold *hold = malloc(sizeof *hold);
    if (!hold)
        return MC_ENOMEM;
    mc_header *h = pool->hdr;
    int r = mc__lock(h);
    if (r != MC_OK) {
        free(hold);
        return r;
    }
    mc__task_ref(h, off);
    mc__unlock(h);
    mc__pool_ref(pool);
    *hold = (mc_hold){.pool = pool, .h = h, .task_off = off, .pid = getpid()};
    *out = hold;
    return MC_OK;
}

int mc__worker_hold_task(mc_header *h, mc_worker_slot *slot, uint64_t off, mc_hold **out)
{
    mc_hold *hold = malloc(sizeof *hold);
    if (!hold)
        return MC_ENOMEM;
    int r = mc__lock(h);
    if (r != MC_OK) {
        free(hold);
        return r;
    }
    int free_at = -1;
    for (int i = 0; i < MC_WORKER_HOLDS && free_at < 0; i++)
        if (!slot->holds[i])
            free_at = i;
    if (free_at >= 0) {
        mc__txn_store(h, &slot->holds[free_at], off);
        mc__task_ref(h, off);
    }
    mc__unlock(h);
    if (free_at < 0) {
        free(hold);
        return MC_ENOMEM;
    }
    *hold = (mc_hold){.pool = NULL, .h = h, .task_off = off, .pid = getpid()};
    *out = hold;
    return MC_OK;
}

/* ---- shared buffers ---------------------------------------------------- */

/* Under the lock: a new buffer record with one reference, or 0. The block
   is not yet visible to anyone, so its header is written with plain
   stores (a rollback frees the block itself). */
static uint64_t buffer_new(mc_header *h, size_t len, uint64_t *populate)
{
    MC_ASSERT_LOCKED(h);
    uint64_t off = mc__arena_alloc(h, mc__record_size(len));
    *populate = off ? mc__arena_to_populate(h, off, mc__record_size(len)) : 0;
    if (off)
        mc__record_init(mc__task_at(h, off), MC_TS_BUFFER, len);
    return off;
}

int mc_buffer_alloc(mc_pool *pool, size_t len, mc_hold **out)
{
    if (!out)
        return MC_EINVAL;
    *out = NULL;
    if (len > SIZE_MAX / 2)
        return MC_ENOMEM;
    mc_header *h = pool ? pool->hdr : mc__worker_own_header();
    mc_worker_slot *slot = pool ? NULL : mc__worker_own_slot();
    if (!h)
        return MC_EINVAL;
    mc_hold *hold = malloc(sizeof *hold);
    if (!hold)
        return MC_ENOMEM;
    int r = pool ? mc__pool_enter(pool) : MC_OK;
    if (r != MC_OK) {
        free(hold);
        return r;
    }
    uint64_t off = 0;
    uint64_t populate = 0;
    if ((r = mc__lock(h)) == MC_OK) {
        int free_at = -1;
        for (int i = 0; slot && i < MC_WORKER_HOLDS && free_at < 0; i++)
            if (!slot->holds[i])
                free_at = i;
        if (!slot || free_at >= 0)
            off = buffer_new(h, len, &populate);
        if (off && slot)
            mc__txn_store(h, &slot->holds[free_at], off);
        mc__unlock(h);
        if (!off)
            r = MC_ENOMEM;
    }
    if (r != MC_OK) {
        if (pool)
            mc__pool_leave(pool);
        free(hold);
        return r;
    }
    if (pool)
        mc__pool_ref(pool);
    *hold = (mc_hold){.pool = pool, .h = h, .task_off = off, .pid = getpid()};
    if (pool)
        mc__pool_leave(pool);
    if (mc__arena_commit(h, off, populate) != MC_OK) {
        mc_hold_release(hold);   /* no memory behind it: an error now, not SIGBUS later */
        return MC_ENOMEM;
    }
    *out = hold;
    return MC_OK;
}

void *mc_hold_data(const mc_hold *hold, size_t *len)
{
    if (!hold || !hold->task_off)
        return NULL;
    mc_task *t = mc__task_at(hold->h, hold->task_off);
    if (mc__task_state(t) != MC_TS_BUFFER)
        return NULL;
    if (len)
        *len = (size_t)t->arg_len;
    return mc__record_data(t, t->arg_len);
}

bool mc__hold_is_shareable(const mc_hold *hold, const mc_header *h)
{
    return hold && hold->h == h && hold->pid == getpid() && mc_hold_data(hold, NULL) != NULL;
}

/* The links block of a record, if it has one that stays in the arena. */
static uint64_t *links_of(mc_header *h, const mc_task *t)
{
    uint64_t lo = __atomic_load_n(&t->links_off, __ATOMIC_ACQUIRE);
    if (!lo || mc__arena_block_size(h, lo) < MC_SHARE_MAX * sizeof(uint64_t))
        return NULL;
    return (uint64_t *)mc__ptr(h, lo);
}

int mc__link_add(mc_header *h, uint64_t task_off, uint64_t buf_off)
{
    MC_ASSERT_LOCKED(h);
    mc_task *t = mc__task_at(h, task_off);
    uint64_t *l = links_of(h, t);
    if (!l) {
        /* The first link: a block of its own, so that the many records
           that never link anything do not carry room for links. Zeroed
           through the journal: a rollback restores what the arena keeps
           in a free block's first words. */
        uint64_t lo = mc__arena_alloc(h, MC_SHARE_MAX * sizeof(uint64_t));
        if (!lo)
            return -1;
        l = (uint64_t *)mc__ptr(h, lo);
        for (unsigned i = 0; i < MC_SHARE_MAX; i++)
            mc__txn_store(h, &l[i], 0);
        mc__txn_store(h, &t->links_off, lo);
    }
    for (unsigned i = 0; i < MC_SHARE_MAX; i++) {
        if (l[i] == buf_off)
            return (int)i;
        if (!l[i]) {
            mc__task_ref(h, buf_off);
            mc__txn_store(h, &l[i], buf_off);
            return (int)i;
        }
    }
    return -1;
}

uint64_t mc__link_get(mc_header *h, uint64_t task_off, unsigned link)
{
    const uint64_t *l = links_of(h, (const mc_task *)mc__ptr(h, task_off));
    if (!l || link >= MC_SHARE_MAX)
        return 0;
    uint64_t off = __atomic_load_n(&l[link], __ATOMIC_ACQUIRE);
    /* the record crosses processes: check it is a buffer inside the arena */
    uint64_t size = off ? mc__arena_block_size(h, off) : 0;
    if (size < sizeof(mc_task))
        return 0;
    const mc_task *b = (const mc_task *)mc__ptr(h, off);
    if (mc__task_state(b) != MC_TS_BUFFER || b->arg_len > size ||
        mc__data_offset(b->arg_len) > size - b->arg_len)
        return 0;
    return off;
}

void mc__release_worker_holds(mc_header *h, mc_worker_slot *slot)
{
    MC_ASSERT_LOCKED(h);
    for (int i = 0; i < MC_WORKER_HOLDS; i++) {
        if (!slot->holds[i])
            continue;
        mc__task_unref(h, slot->holds[i]);
        mc__txn_store(h, &slot->holds[i], 0);
        mc__txn_commit(h); /* one release per change: the journal is bounded */
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
        if (mc__pool_enter(pool) == MC_OK) {
            if (mc__lock(h) == MC_OK) {
                mc__task_unref(h, hold->task_off);
                mc__unlock(h);
            }
            mc__pool_leave(pool);
        }
        mc__pool_unref(pool);
    } else {
        mc_worker_slot *slot = mc__worker_own_slot();
        if (slot && mc__lock(h) == MC_OK) {
            for (int i = 0; i < MC_WORKER_HOLDS; i++) {
                if (slot->holds[i] == hold->task_off) {
                    mc__txn_store(h, &slot->holds[i], 0);
                    mc__task_unref(h, hold->task_off);
                    break;
                }
            }
            mc__unlock(h);
        }
    }
    free(hold);
}
