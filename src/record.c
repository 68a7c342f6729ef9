/*
 * record.c — the task record's life, in one place.
 *
 * A record (mc_task, internal.h) heads every task block, its arguments
 * behind it, and every shared buffer block (state MC_TS_BUFFER, its bytes
 * where a task's arguments would be). What it owns besides its block: a
 * result block (a DONE task's result too large to sit in the record's own
 * block), and a links block naming the shared buffers it keeps alive.
 * Its steps:
 *
 *   init      the submitter (group.c) or mc_buffer_alloc (hold.c) writes a
 *             fresh record while nobody else can see it: one reference.
 *   ref/unref references (the group's, the queue's or worker's, holds',
 *             links') change under the lock through the journal, so a
 *             process killed in between loses none; the last unref frees
 *             the block, its result and the buffers it links.
 *   finish    the state word, which is also the futex the caller sleeps
 *             on, moves from PENDING to exactly one final state by
 *             compare-and-swap, outside the lock: DONE by the worker that
 *             ran it, FAILED by the zygote when that worker died, CANCELLED
 *             by the group that gives up on it. Whoever wins owns the
 *             outcome; a worker or the zygote then wakes the caller (only
 *             if its WAITER bit says it sleeps) and the watchers.
 *
 * Releasing the task a worker slot holds (its result, its reference, the
 * slot's words) is the slot's business: worker.c.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>
#include <string.h>

void mc__record_init(mc_task *t, uint32_t state, uint64_t data_len)
{
    memset(t, 0, sizeof *t);
    atomic_init(&t->state, state);
    t->refs = 1;
    t->arg_len = data_len;
}

void mc__task_ref(mc_header *h, uint64_t off)
{
    MC_ASSERT_LOCKED(h);
    mc_task *t = mc__task_at(h, off);
    mc__txn_store(h, &t->refs, t->refs + 1);
}

/* Does the record at task_off own a result block (a DONE task's result
   that is not stored inside the record's own block)? An empty result
   stored inline may sit at the very end of the block; another block's
   payload starts a header further. */
static bool owns_result_block(mc_header *h, uint64_t task_off, const mc_task *t)
{
    if (mc__task_state(t) != MC_TS_DONE || !t->result_off)
        return false;
    uint64_t own = mc__arena_block_size(h, task_off);
    return t->result_off < task_off || t->result_off - task_off > own;
}

void mc__task_unref(mc_header *h, uint64_t task_off)
{
    MC_ASSERT_LOCKED(h);
    mc_task *t = mc__task_at(h, task_off);
    uint64_t refs = t->refs - 1;
    mc__txn_store(h, &t->refs, refs);
    if (refs != 0)
        return;
    /* The links are read before the blocks are freed: freeing writes into them. */
    uint64_t links[MC_SHARE_MAX], n = 0, lo = t->links_off;
    if (lo && mc__arena_block_size(h, lo) >= sizeof links) {
        const uint64_t *l = mc__ptr(h, lo);
        for (; n < MC_SHARE_MAX && l[n]; n++)
            links[n] = l[n];
        mc__arena_free(h, lo);
    }
    if (owns_result_block(h, task_off, t)) {
        mc__arena_release_pages(h, t->result_off);
        mc__arena_free(h, t->result_off);
    }
    mc__arena_release_pages(h, task_off);
    mc__arena_free(h, task_off);
    for (uint64_t i = 0; i < n; i++) {
        /* mc__link_add() only links buffers, which link nothing themselves */
        if (mc__arena_block_size(h, links[i]) >= sizeof(mc_task) &&
            (atomic_load_explicit(&mc__task_at(h, links[i])->state, memory_order_relaxed) &
             MC_TS_MASK) == MC_TS_BUFFER)
            mc__task_unref(h, links[i]);
    }
}

/* PENDING -> final by compare-and-swap (the WAITER bit goes with PENDING).
   true if this call made the move; *was is then the word it replaced. */
static bool settle(mc_task *t, uint32_t final, uint32_t *was)
{
    MC_ASSERT(mc__state_is_final(final) && !(final & MC_TS_WAITER));
    uint32_t s = atomic_load_explicit(&t->state, memory_order_acquire);
    while (!mc__state_is_final(s)) {
        if (atomic_compare_exchange_weak_explicit(&t->state, &s, final, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            *was = s;
            return true;
        }
    }
    return false;
}

bool mc__task_finish(mc_header *h, mc_task *t, uint32_t final)
{
    MC_ASSERT(final == MC_TS_DONE || final == MC_TS_FAILED);
    uint32_t was;
    if (!settle(t, final, &was))
        return false;
    if (was & MC_TS_WAITER)
        mc__futex_wake(&t->state, INT_MAX);
    mc__wake_done(h);
    return true;
}

bool mc__task_cancel(mc_task *t)
{
    uint32_t was;
    return settle(t, MC_TS_CANCELLED, &was);
}
