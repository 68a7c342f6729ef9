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
 * armed does the worker's part in its own critical section: it makes its
 * new task the slot's task_off and lets the worker go, then, while the
 * worker already runs it, releases the task the worker finished. One
 * critical section per task, by the caller; the worker only reads.
 *
 *   worker      NONE --arm--> SPIN --go (caller, under the lock)--> GO
 *                              |                                     |
 *                      disarm (worker, CAS)               worker takes it
 *                              v                                     v
 *                            NONE (ring way)                        NONE
 *
 * Both moves out of SPIN are compare-and-swaps on the word, so a worker
 * that stops spinning (time out, ring work, a stop) and a caller that
 * lets it go cannot both win. The caller writes what the worker will
 * read (task_off, pending_result, and the task's fn and extent, so that
 * the worker starts it from the slot's line alone) before its go, and
 * puts the journaled ones back if the go loses: the worker that disarmed
 * takes the lock next, so it sees them as they were. The go is made under the lock, like everything the
 * zygote does with a dead worker's slot: either the go comes first and
 * the zygote, recovering the slot, fails the task it finds in task_off,
 * or the zygote comes first and disarms the word (mc__handoff_reset), and
 * the go fails. A go names one generation of the word, which the worker
 * advances at each arm, so a caller that read the word of an earlier
 * spin cannot let a later one go. The go is not in the journal: a caller
 * that dies between its go and its unlock leaves a worker running a task
 * whose allocation the next locker rolls back. That costs nothing but
 * noise only because the caller's death ends the pool (the zygote sees
 * the alive pipe close and kills the workers: at worst one crashes, or the
 * region is reported corrupt, on the way out); nothing but the caller
 * makes a go.
 *
 * What is not given this way: a task while the ring holds others (it
 * would overtake them), a task for a worker the zygote has doomed, any
 * task once the pool stops. Those, and every task when no worker is
 * armed, go through the ring (queue.c); an armed worker watches the ring
 * too and disarms to take them the usual way.
 */
#define _GNU_SOURCE
#include "internal.h"

static inline uint32_t ho_state(uint32_t w) { return w & MC_HO_STATE; }
static inline uint32_t ho_with(uint32_t w, uint32_t state) { return (w & ~MC_HO_STATE) | state; }

uint64_t mc__handoff_wait(mc_header *h, mc_worker_slot *slot, uint32_t index, int64_t mark, bool *idle)
{
    uint32_t w = atomic_load_explicit(&slot->handoff, memory_order_relaxed);
    MC_ASSERT(ho_state(w) == MC_HO_NONE && slot->task_off != 0);
    uint32_t armed = ho_with(w + (1u << MC_HO_GEN_SHIFT), MC_HO_SPIN);
    /* seq_cst: a caller that reads it armed sees the result published before. */
    atomic_store_explicit(&slot->handoff, armed, memory_order_seq_cst);
    if (atomic_load_explicit(&h->handoff_slot, memory_order_relaxed) != index + 1)
        atomic_store_explicit(&h->handoff_slot, index + 1, memory_order_seq_cst);

    bool found = mc__spin_for_work(h, mark, &slot->handoff, armed);
    /* A word still armed is disarmed; one that moved was let go (only a
       caller's go moves it while we live). No compare-and-swap then: it
       would pull the line back from the caller's CPU for nothing. */
    uint32_t w2 = atomic_load_explicit(&slot->handoff, memory_order_acquire);
    if (w2 == armed && atomic_compare_exchange_strong_explicit(&slot->handoff, &w2, ho_with(armed, MC_HO_NONE),
                                                               memory_order_seq_cst, memory_order_acquire)) {
        *idle = !found;
        return 0; /* disarmed; the finished task is still ours to release */
    }
    MC_ASSERT(w2 == ho_with(armed, MC_HO_GO));
    /* The caller wrote this before its go (acquire above). */
    uint64_t off = slot->task_off;
    MC_ASSERT(off != 0);
    atomic_store_explicit(&slot->handoff, ho_with(w2, MC_HO_NONE), memory_order_relaxed);
    *idle = false;
    return off;
}

void mc__handoff_prefetch(mc_header *h)
{
    uint32_t i = atomic_load_explicit(&h->handoff_slot, memory_order_relaxed);
    if (i != 0 && i <= h->nworkers)
        __builtin_prefetch(mc__slot(h, i - 1), 0, 3);
}

mc_worker_slot *mc__handoff_give(mc_header *h, uint64_t off)
{
    MC_ASSERT_LOCKED(h);
    uint32_t i = atomic_load_explicit(&h->handoff_slot, memory_order_relaxed);
    if (i == 0 || i > h->nworkers || h->ring_head != h->ring_tail ||
        atomic_load_explicit(&h->stopping, memory_order_acquire))
        return NULL;
    mc_worker_slot *slot = mc__slot(h, i - 1);
    uint32_t w = atomic_load_explicit(&slot->handoff, memory_order_acquire);
    if (ho_state(w) != MC_HO_SPIN || atomic_load_explicit(&slot->doomed, memory_order_acquire))
        return NULL;
    return mc__handoff_go(h, slot, off, w) ? slot : NULL;
}

bool mc__handoff_go(mc_header *h, mc_worker_slot *slot, uint64_t off, uint32_t armed)
{
    MC_ASSERT_LOCKED(h);
    MC_ASSERT(ho_state(armed) == MC_HO_SPIN);
    /* A worker arms only after its task's outcome is published (the
       acquire that read the armed word orders this read after it). */
    uint64_t done = slot->task_off, pending = slot->pending_result;
    MC_ASSERT(done != 0 && mc__task_state(mc__task_at(h, done)) == MC_TS_DONE);
    mc_task *t = mc__task_at(h, off);
    MC_ASSERT(t->refs == 1 && mc__task_state(t) == MC_TS_PENDING);
    /* What the worker reads once it sees the go, written before it. */
    mc__txn_store(h, &slot->pending_result, 0); /* the finished task's now */
    mc__txn_store(h, &t->refs, 2);              /* group + worker */
    mc__txn_store(h, &slot->task_off, off);
    /* So that the worker starts it from the slot's line alone (not
       journaled: read only after a go, which rewrites them first). */
    slot->go_fn = t->fn;
    slot->go_arg_len = t->arg_len;
    slot->go_block_end = off + mc__arena_block_size(h, off);
    uint32_t w = armed;
    if (!atomic_compare_exchange_strong_explicit(&slot->handoff, &w, ho_with(armed, MC_HO_GO),
                                                 memory_order_acq_rel, memory_order_relaxed)) {
        /* It disarmed just now (nothing else moves the word while we hold
           the lock): it takes the lock next, so it must find its slot as
           it left it. */
        mc__txn_store(h, &slot->task_off, done);
        mc__txn_store(h, &t->refs, 1);
        mc__txn_store(h, &slot->pending_result, pending);
        return false;
    }
    /* The worker runs the new task meanwhile: it no longer looks at the
       finished one, whose reference it left to us. */
    mc__task_unref(h, done);
    return true;
}

void mc__handoff_reset(mc_worker_slot *slot)
{
    uint32_t w = atomic_load_explicit(&slot->handoff, memory_order_relaxed);
    atomic_store_explicit(&slot->handoff, ho_with(w, MC_HO_NONE), memory_order_release);
}
