/*
 * handoff.c — a task handed straight to the worker spinning for work,
 * past the ring, and the worker's lock left untaken.
 *
 * The ring's way costs two critical sections a task: the caller's (queue
 * it) and the worker's (release the task it finished, take this one).
 * When a caller submits right after it collected a result, the two meet
 * on the lock: the worker releasing its last task while the caller
 * queues the next, the lock's lines going back and forth between their
 * CPUs. So a worker that has just published a result does not take the
 * lock at all: it arms its slot's hand-off word and spins, keeping the
 * finished task in hand. A caller that finds the ring empty and a worker
 * armed does the worker's part in its own critical section: it claims
 * the word, releases the task the worker still holds and makes its new
 * task the slot's task_off; after the unlock it lets the worker go. One
 * critical section per task, by the caller; the worker only reads.
 *
 *   worker      NONE --arm--> SPIN --claim (caller, under the lock)--> CLAIMED
 *                              |                                         |
 *                      disarm (worker, CAS)              go (caller, after its unlock)
 *                              v                                         v
 *                            NONE (ring way)                GO --worker takes it--> NONE
 *
 * Every move is a compare-and-swap on the word, so a worker that stops
 * spinning (time out, ring work, a stop) and a caller that claims it
 * cannot both win: the loser of the disarm is committed to wait for GO.
 * The claim is made under the lock, like everything the zygote does with
 * a dead worker's slot: either the claim comes first and the zygote,
 * recovering the slot, fails the task it finds in task_off, or the zygote
 * comes first and disarms the word (mc__handoff_reset), and the claim
 * fails. A claim names one generation of the word, which the worker
 * advances at each arm, so a late go cannot let a later spin go.
 *
 * What is not given this way: a task while the ring holds others (it
 * would overtake them), a task for a worker the zygote has doomed, any
 * task once the pool stops. Those, and every task when no worker is
 * armed, go through the ring (queue.c); an armed worker watches the ring
 * too and disarms to take them the usual way.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <sched.h>

static inline uint32_t ho_state(uint32_t w) { return w & MC_HO_STATE; }
static inline uint32_t ho_with(uint32_t w, uint32_t state) { return (w & ~(MC_HO_STATE | MC_HO_WAITER)) | state; }

/* CLAIMED until GO: the caller is inside its critical section, so this is
   short unless it was preempted; sleep on the word after a spin. */
static uint32_t wait_for_go(mc_worker_slot *slot, uint32_t w)
{
    int64_t start = mc__now_ns(), now = start;
    do {
        for (int i = 0; i < 64; i++) {
            w = atomic_load_explicit(&slot->handoff, memory_order_acquire);
            if (ho_state(w) == MC_HO_GO)
                return w;
            mc__cpu_relax();
        }
        now = mc__now_ns();
        if (now - start > MC_SPIN_YIELD_NS)
            sched_yield();
    } while (now - start < MC_SPIN_NS);
    for (;;) {
        w = atomic_load_explicit(&slot->handoff, memory_order_acquire);
        MC_ASSERT(ho_state(w) == MC_HO_CLAIMED || ho_state(w) == MC_HO_GO);
        if (ho_state(w) == MC_HO_GO)
            return w;
        if (!(w & MC_HO_WAITER) &&
            !atomic_compare_exchange_weak_explicit(&slot->handoff, &w, w | MC_HO_WAITER,
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        /* No timeout: if the caller's process dies, so does the pool. */
        mc__futex_wait(&slot->handoff, w | MC_HO_WAITER, INT64_MAX);
    }
}

uint64_t mc__handoff_wait(mc_header *h, mc_worker_slot *slot, uint32_t index, int64_t mark, bool *idle)
{
    uint32_t w = atomic_load_explicit(&slot->handoff, memory_order_relaxed);
    MC_ASSERT(ho_state(w) == MC_HO_NONE && slot->task_off != 0);
    uint32_t armed = ho_with(w + (1u << MC_HO_GEN_SHIFT), MC_HO_SPIN);
    /* seq_cst: a caller that claims sees the result published before. */
    atomic_store_explicit(&slot->handoff, armed, memory_order_seq_cst);
    if (atomic_load_explicit(&h->handoff_slot, memory_order_relaxed) != index + 1)
        atomic_store_explicit(&h->handoff_slot, index + 1, memory_order_seq_cst);

    bool found = mc__spin_for_work(h, mark, &slot->handoff, armed);
    uint32_t expected = armed;
    if (atomic_compare_exchange_strong_explicit(&slot->handoff, &expected, ho_with(armed, MC_HO_NONE),
                                                memory_order_seq_cst, memory_order_acquire)) {
        *idle = !found;
        return 0; /* disarmed; the finished task is still ours to release */
    }
    w = wait_for_go(slot, expected);
    /* The caller's critical section, committed before its go, set this. */
    uint64_t off = slot->task_off;
    MC_ASSERT(off != 0);
    atomic_store_explicit(&slot->handoff, ho_with(w, MC_HO_NONE), memory_order_relaxed);
    *idle = false;
    return off;
}

mc_worker_slot *mc__handoff_give(mc_header *h, uint64_t off, uint32_t *claim)
{
    MC_ASSERT_LOCKED(h);
    uint32_t i = atomic_load_explicit(&h->handoff_slot, memory_order_relaxed);
    if (i == 0 || i > h->nworkers || h->ring_head != h->ring_tail ||
        atomic_load_explicit(&h->stopping, memory_order_acquire))
        return NULL;
    mc_worker_slot *slot = mc__slot(h, i - 1);
    uint32_t w = atomic_load_explicit(&slot->handoff, memory_order_relaxed);
    if (ho_state(w) != MC_HO_SPIN || atomic_load_explicit(&slot->doomed, memory_order_acquire))
        return NULL;
    uint32_t mine = ho_with(w, MC_HO_CLAIMED);
    if (!atomic_compare_exchange_strong_explicit(&slot->handoff, &w, mine, memory_order_acq_rel,
                                                 memory_order_relaxed))
        return NULL; /* it stopped spinning just now: the ring way */
    /* A worker arms only after its task's outcome is published. */
    MC_ASSERT(slot->task_off != 0 && mc__task_state(mc__task_at(h, slot->task_off)) == MC_TS_DONE);
    mc__slot_release_task(h, slot, true);
    mc_task *t = mc__task_at(h, off);
    MC_ASSERT(t->refs == 1 && mc__task_state(t) == MC_TS_PENDING);
    mc__txn_store(h, &t->refs, 2); /* group + worker */
    mc__txn_store(h, &slot->task_off, off);
    *claim = mine;
    return slot;
}

void mc__handoff_go(mc_worker_slot *slot, uint32_t claim)
{
    uint32_t w = claim;
    for (;;) {
        uint32_t go = ho_with(w, MC_HO_GO);
        if (atomic_compare_exchange_weak_explicit(&slot->handoff, &w, go, memory_order_release,
                                                  memory_order_relaxed))
            break;
        if ((w & ~MC_HO_WAITER) != claim)
            return; /* disarmed by mc__handoff_reset: the worker died */
    }
    if (w & MC_HO_WAITER)
        mc__futex_wake(&slot->handoff, 1);
}

void mc__handoff_reset(mc_worker_slot *slot)
{
    uint32_t w = atomic_load_explicit(&slot->handoff, memory_order_relaxed);
    atomic_store_explicit(&slot->handoff, ho_with(w, MC_HO_NONE), memory_order_release);
}
