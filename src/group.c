/*
 * group.c — task groups: the caller-side record of a batch of tasks whose
 * results come back in submission order (the C counterpart of Task).
 *
 * A group is caller-private memory: the offsets of its task records, in
 * order. Each task record lives in the shared arena with its arguments
 * behind it; the worker writes the outcome into the same record and flips
 * its state word, which is also the futex the caller sleeps on, so
 * collecting a result needs no lock and no queue. A record has two
 * references, the group's and the queue's (later the worker's), or the
 * group's and the worker's at once when it is handed to a spinning worker
 * past the queue (handoff.c); the last one released frees it together
 * with its result.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

struct mc_group {
    mc_pool *pool;
    uint64_t *tasks; /* payload offsets of the task records, in order */
    size_t n, cap;
    size_t finished; /* tasks [0, finished) are known to be final */
    uint64_t reserved; /* record reserved by mc_submit_reserve, or 0 */
};

int mc_group_create(mc_pool *pool, mc_group **out)
{
    if (!pool || !out)
        return MC_EINVAL;
    *out = NULL;
    int r = mc__pool_enter(pool);
    if (r != MC_OK)
        return r;
    mc_group *g = calloc(1, sizeof *g);
    if (g) {
        g->pool = pool;
        mc__pool_ref(pool);
        *out = g;
    }
    mc__pool_leave(pool);
    return g ? MC_OK : MC_ENOMEM;
}

size_t mc_group_size(const mc_group *g)
{
    return g ? g->n : 0;
}

/* Under the lock (a slot's task_off changes only under it). */
static bool held_by_worker(mc_header *h, uint64_t off)
{
    MC_ASSERT_LOCKED(h);
    for (uint32_t i = 0; i < h->nworkers; i++)
        if (mc__slot(h, i)->task_off == off)
            return true;
    return false;
}

/* Under the lock, in its own journal transaction: drop the group's hold on
   a task, cancelling it first if it has not finished. Returns 2 if it was
   cancelled while a worker held it (that worker must be stopped), 1 if it
   was cancelled in the queue, 0 otherwise. */
static int release_task(mc_header *h, uint64_t off)
{
    MC_ASSERT_LOCKED(h);
    bool cancelled = mc__task_cancel(mc__task_at(h, off));
    /* Only a task a worker holds needs a kill; a queued one is skipped
       when a worker pops it. */
    int outcome = !cancelled ? 0 : held_by_worker(h, off) ? 2 : 1;
    mc__task_unref(h, off);
    mc__txn_commit(h);
    return outcome;
}

void mc_submit_abort(mc_group *g)
{
    if (!g || !g->reserved || mc__pool_enter(g->pool) != MC_OK)
        return;
    mc_header *h = g->pool->hdr;
    if (mc__lock(h) == MC_OK) {
        mc__task_unref(h, g->reserved);   /* its only reference; drops its links */
        mc__unlock(h);
    }
    g->reserved = 0;
    mc__pool_leave(g->pool);
}

int mc_submit_share(mc_group *g, const mc_hold *buffer, unsigned *link)
{
    if (!g || !link)
        return MC_EINVAL;
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    mc_header *h = g->pool->hdr;
    if (!g->reserved)
        r = MC_ESTATE;
    else if (!mc__hold_is_shareable(buffer, h))
        r = MC_EINVAL;
    else if ((r = mc__lock(h)) == MC_OK) {
        int k = mc__link_add(h, g->reserved, buffer->task_off);
        mc__unlock(h);
        if (k < 0)
            r = MC_ENOMEM;
        else
            *link = (unsigned)k;
    }
    mc__pool_leave(g->pool);
    return r;
}

void mc_group_destroy(mc_group *g)
{
    if (!g)
        return;
    mc_pool *pool = g->pool;
    mc_submit_abort(g);
    if (g->n && mc__pool_enter(pool) == MC_OK) {
        mc_header *h = pool->hdr;
        /* Release in batches so workers are not locked out for long. */
        bool any_running = false, any_queued = false;
        for (size_t i = 0; i < g->n;) {
            if (mc__lock(h) != MC_OK)
                break;
            for (size_t end = i + 64 < g->n ? i + 64 : g->n; i < end; i++) {
                int outcome = release_task(h, g->tasks[i]);
                any_running |= outcome == 2;
                any_queued |= outcome == 1;
            }
            mc__unlock(h);
        }
        /* A cancelled task may be stuck in its function forever: the zygote
           kills the worker holding it and forks a replacement. Cancelled
           tasks still in the queue take room there until a worker drops
           them: wake the idle ones to do it now. */
        if (any_running)
            mc__pool_kick_zygote(pool);
        if (any_queued)
            mc__wake_workers(h, h->nworkers);
        mc__pool_leave(pool);
    }
    free(g->tasks);
    free(g);
    mc__pool_unref(pool);
}

/* Room in the group's list for the task about to be submitted. */
static int room_for_one_more(mc_group *g)
{
    if (g->n < g->cap)
        return MC_OK;
    size_t cap = g->cap ? g->cap * 2 : 16;
    uint64_t *tasks = realloc(g->tasks, cap * sizeof *tasks);
    if (!tasks)
        return MC_ENOMEM;
    g->tasks = tasks;
    g->cap = cap;
    return MC_OK;
}

/* Under the lock, which every writer of bytes_in holds: so a plain add,
   not a locked one (a stats counter, not journaled). */
static void count_bytes_in(mc_header *h, uint64_t n)
{
    MC_ASSERT_LOCKED(h);
    atomic_store_explicit(&h->bytes_in, atomic_load_explicit(&h->bytes_in, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* Under the lock: queue the record at off (its only reference so far) in
   the ring; false if the ring is full. */
static bool queue_in_ring(mc_header *h, uint64_t off)
{
    MC_ASSERT_LOCKED(h);
    if (!mc__ring_push(h, off))
        return false;
    mc__txn_store(h, &mc__task_at(h, off)->refs, 2); /* group + queue */
    return true;
}

int mc_submit_reserve(mc_group *g, size_t arg_len, void **buf)
{
    if (!g || !buf)
        return MC_EINVAL;
    *buf = NULL;
    if (arg_len > SIZE_MAX - MC_DATA_LINE_OFF)
        return MC_ENOMEM;
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    if (g->reserved) {
        r = MC_ESTATE;
        goto out;
    }
    if ((r = room_for_one_more(g)) != MC_OK) /* now, so that commit cannot fail on memory */
        goto out;

    mc_header *h = g->pool->hdr;
    if ((r = mc__lock(h)) != MC_OK)
        goto out;
    uint64_t off = mc__arena_alloc(h, mc__record_size(arg_len));
    uint64_t populate = off ? mc__arena_to_populate(h, off, mc__record_size(arg_len)) : 0;
    mc__unlock(h);
    if (!off) {
        r = MC_ENOMEM;
        goto out;
    }
    mc_task *t = mc__task_at(h, off);
    if (mc__arena_commit(h, off, populate) != MC_OK) {
        if (mc__lock(h) == MC_OK) {
            mc__arena_free(h, off);
            mc__unlock(h);
        }
        r = MC_ENOMEM;
        goto out;
    }
    /* Nobody else can see the record until it is queued: plain stores. */
    mc__record_init(t, MC_TS_PENDING, arg_len);
    g->reserved = off;
    *buf = mc__record_data(t, arg_len);
out:
    mc__pool_leave(g->pool);
    return r;
}

int mc_submit_commit(mc_group *g, mc_task_fn fn, double timeout)
{
    if (!g || !fn)
        return MC_EINVAL;
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    if (!g->reserved) {
        r = MC_ESTATE;
        goto out;
    }
    mc_header *h = g->pool->hdr;
    uint64_t off = g->reserved;
    mc__task_at(h, off)->fn = (uint64_t)(uintptr_t)fn;
    /* read now: once queued, a worker may take the task and reuse the word */
    uint64_t arg_len = mc__task_at(h, off)->arg_len;
    int64_t deadline = INT64_MIN;
    mc__handoff_prefetch(h);
    for (;;) {
        if ((r = mc__lock(h)) != MC_OK)
            goto out;
        mc_worker_slot *to = mc__handoff_give(h, off);
        bool queued = to != NULL || queue_in_ring(h, off);
        if (queued)
            count_bytes_in(h, arg_len);
        mc__unlock(h);
        if (queued) {
            if (!to) /* in the ring: wake a worker unless one spins */
                mc__wake_for_task(h);
            break;
        }
        if (deadline == INT64_MIN)
            deadline = mc__deadline(timeout);
        if ((r = mc__wait_for_space(g->pool, deadline)) != MC_OK)
            goto out; /* the reservation stays: commit may be called again */
    }
    g->tasks[g->n++] = off;
    g->reserved = 0;
out:
    mc__pool_leave(g->pool);
    return r;
}

/* Arguments up to MC_SUBMIT_INLINE_MAX are copied under the lock, so that
   allocating and queueing take one lock round trip instead of two (the
   lock's cache line is the hand-off's main cost when a worker is spinning
   for work). */
static int submit_small(mc_group *g, mc_task_fn fn, const void *arg, size_t arg_len, double timeout)
{
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    mc_header *h = g->pool->hdr;
    if (g->reserved) {
        r = MC_ESTATE;
        goto out;
    }
    if ((r = room_for_one_more(g)) != MC_OK)
        goto out;
    mc__handoff_prefetch(h);
    if ((r = mc__lock(h)) != MC_OK)
        goto out;
    uint64_t off = mc__arena_alloc(h, mc__record_size(arg_len));
    bool queued = false;
    mc_worker_slot *to = NULL;
    if (off) {
        /* Private until the hand-off or the ring push below publishes it
           (under the lock, which a rollback would undo together with the
           allocation). */
        mc_task *t = mc__task_at(h, off);
        mc__record_init(t, MC_TS_PENDING, arg_len);
        t->fn = (uint64_t)(uintptr_t)fn;
        if (arg_len)
            memcpy(mc__record_data(t, arg_len), arg, arg_len);
        to = mc__handoff_give(h, off);
        queued = to != NULL || queue_in_ring(h, off);
        if (queued)
            count_bytes_in(h, arg_len);
    }
    mc__unlock(h);
    if (!off) {
        r = MC_ENOMEM;
    } else if (!queued) {
        /* The queue is full: keep the record as a reservation and wait for
           room the usual way. */
        g->reserved = off;
        if ((r = mc_submit_commit(g, fn, timeout)) != MC_OK)
            mc_submit_abort(g);
    } else {
        g->tasks[g->n++] = off;
        if (!to) /* in the ring: wake a worker unless one spins */
            mc__wake_for_task(h);
    }
out:
    mc__pool_leave(g->pool);
    return r;
}

int mc_submit(mc_group *g, mc_task_fn fn, const void *arg, size_t arg_len, double timeout)
{
    if (!g || !fn || (!arg && arg_len))
        return MC_EINVAL;
    if (arg_len <= MC_SUBMIT_INLINE_MAX)
        return submit_small(g, fn, arg, arg_len, timeout);
    void *buf;
    int r = mc_submit_reserve(g, arg_len, &buf);
    if (r != MC_OK)
        return r;
    if (arg_len)
        memcpy(buf, arg, arg_len);
    r = mc_submit_commit(g, fn, timeout);
    if (r != MC_OK)
        mc_submit_abort(g);
    return r;
}

/* Wait for one record to reach a final state. Called inside enter/leave. */
static int wait_task(mc_pool *pool, mc_task *t, int64_t deadline)
{
    uint32_t s = atomic_load_explicit(&t->state, memory_order_acquire);
    if (mc__state_is_final(s))
        return MC_OK;
    static _Thread_local mc_spin spin; /* per calling thread */
    int64_t budget = mc__spin_budget(&spin);
    /* The clock is first read after one round, and the spin's time counted
       from there: a result that comes within it, as in a hot round trip,
       costs no read (about 20 ns here), and counts as a spin of 0 ns,
       which leaves the budget as it was. */
    int64_t start = 0, now = 0;
    for (bool first = true;; first = false) {
        for (int i = 0; i < 64; i++) {
            if (mc__state_is_final(atomic_load_explicit(&t->state, memory_order_acquire))) {
                /* The last round's clock, not a fresh read: this is the
                   hot round trip's critical path; short by at most two
                   rounds (the first is not counted), which only makes the
                   budget grow a little later. */
                mc__spin_done(&spin, true, now - start);
                return MC_OK;
            }
            mc__cpu_relax();
        }
        now = mc__now_ns();
        if (first)
            start = now;
        if (now - start > MC_SPIN_YIELD_NS)
            mc__spin_yield(&now);
        if (now - start >= budget || now >= deadline)
            break;
    }
    if (now - start >= budget)   /* a poll that ran out of time teaches nothing */
        mc__spin_done(&spin, false, now - start);

    for (;;) {
        s = atomic_load_explicit(&t->state, memory_order_acquire);
        if (mc__state_is_final(s))
            return MC_OK;
        /* A poll (timeout 0, or past it): no WAITER bit, which would make
           the worker issue a wake-up system call for nobody, and no check
           of the zygote (a poll(2)) either. */
        if (mc__now_ns() >= deadline)
            return MC_ETIMEDOUT;
        if (!(s & MC_TS_WAITER)) {
            if (!atomic_compare_exchange_weak_explicit(&t->state, &s, s | MC_TS_WAITER,
                                                       memory_order_acq_rel, memory_order_acquire))
                continue;
            s |= MC_TS_WAITER;
        }
        int r = mc__pool_wait_word(pool, &t->state, s, deadline);
        if (r != MC_OK)
            return r;
    }
}

int mc_group_wait_one(mc_group *g, size_t index, double timeout)
{
    if (!g)
        return MC_EINVAL;
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    if (index >= g->n)
        r = MC_EINVAL;
    else
        r = wait_task(g->pool, mc__task_at(g->pool->hdr, g->tasks[index]), mc__deadline(timeout));
    mc__pool_leave(g->pool);
    return r;
}

int mc_group_wait(mc_group *g, double timeout)
{
    if (!g)
        return MC_EINVAL;
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    int64_t deadline = mc__deadline(timeout);
    mc_header *h = g->pool->hdr;
    while (g->finished < g->n) {
        if ((r = wait_task(g->pool, mc__task_at(h, g->tasks[g->finished]), deadline)) != MC_OK)
            break;
        g->finished++;
    }
    mc__pool_leave(g->pool);
    return r;
}

int mc_group_result(mc_group *g, size_t index, mc_result *res)
{
    if (!g || !res)
        return MC_EINVAL;
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    if (index >= g->n) {
        r = MC_EINVAL;
        goto out;
    }
    mc_header *h = g->pool->hdr;
    mc_task *t = mc__task_at(h, g->tasks[index]);
    uint32_t s = mc__task_state(t);
    memset(res, 0, sizeof *res);
    switch (s) {
    case MC_TS_PENDING:
        r = MC_ETIMEDOUT;
        goto out;
    case MC_TS_DONE:
        MC_TSAN_ACQUIRE(&h->lock);
        res->task_code = t->out.task_code;
        res->status = res->task_code ? MC_ETASK : MC_OK;
        /* written by the worker: only followed if it stays in the arena */
        if (t->result_off && t->result_off >= h->arena.start && t->result_off <= h->arena.end &&
            t->result_len <= h->arena.end - t->result_off) {
            res->data = mc__ptr(h, t->result_off);
            res->len = (size_t)t->result_len;
        }
        break;
    case MC_TS_FAILED:
        res->status = MC_EWORKERDIED;
        res->term_signal = t->out.term_signal;
        res->exit_status = t->out.exit_status;
        break;
    default:
        res->status = MC_ECANCELED;
        break;
    }
    res->worker_pid = t->worker_pid;
out:
    mc__pool_leave(g->pool);
    return r;
}

/* The record of task `index` if it finished successfully: MC_OK, or
   MC_EINVAL (no such task, or it failed) / MC_ETIMEDOUT (not finished). */
static int done_task(mc_group *g, size_t index, uint64_t *off)
{
    if (index >= g->n)
        return MC_EINVAL;
    mc_task *t = mc__task_at(g->pool->hdr, g->tasks[index]);
    uint32_t s = mc__task_state(t);
    if (s == MC_TS_PENDING)
        return MC_ETIMEDOUT;
    if (s != MC_TS_DONE || t->out.task_code != 0)
        return MC_EINVAL;
    *off = g->tasks[index];
    return MC_OK;
}

int mc_group_hold(mc_group *g, size_t index, mc_hold **hold)
{
    if (!g || !hold)
        return MC_EINVAL;
    *hold = NULL;
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    uint64_t off;
    if ((r = done_task(g, index, &off)) == MC_OK)
        r = mc__group_hold_task(g->pool, off, hold);
    mc__pool_leave(g->pool);
    return r;
}

int mc_group_link_hold(mc_group *g, size_t index, unsigned link, mc_hold **hold)
{
    if (!g || !hold)
        return MC_EINVAL;
    *hold = NULL;
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    uint64_t off, buf;
    if ((r = done_task(g, index, &off)) == MC_OK) {
        /* the group's reference on the task keeps its links alive */
        if ((buf = mc__link_get(g->pool->hdr, off, link)) != 0)
            r = mc__group_hold_task(g->pool, buf, hold);
        else
            r = MC_EINVAL;
    }
    mc__pool_leave(g->pool);
    return r;
}

/* ---- watching completions across groups --------------------------------- */

uint32_t mc_watch_begin(mc_group *g)
{
    if (!g || mc__pool_enter(g->pool) != MC_OK)
        return 0;
    mc_header *h = g->pool->hdr;
    atomic_fetch_add_explicit(&h->done_watchers, 1, memory_order_seq_cst);
    uint32_t seq = atomic_load_explicit(&h->done_seq, memory_order_seq_cst);
    mc__pool_leave(g->pool);
    return seq;
}

int mc_watch_wait(mc_group *g, uint32_t *seen, double timeout)
{
    if (!g || !seen)
        return MC_EINVAL;
    int r = mc__pool_enter(g->pool);
    if (r != MC_OK)
        return r;
    mc_header *h = g->pool->hdr;
    int64_t deadline = mc__deadline(timeout);
    for (;;) {
        uint32_t now = atomic_load_explicit(&h->done_seq, memory_order_acquire);
        if (now != *seen) {
            *seen = now;
            r = MC_OK;
            break;
        }
        r = mc__pool_wait_word(g->pool, &h->done_seq, now, deadline);
        if (r != MC_OK)
            break;
    }
    mc__pool_leave(g->pool);
    return r;
}

void mc_watch_end(mc_group *g)
{
    if (!g || mc__pool_enter(g->pool) != MC_OK)
        return; /* a stopped pool needs no end */
    atomic_fetch_sub_explicit(&g->pool->hdr->done_watchers, 1, memory_order_seq_cst);
    mc__pool_leave(g->pool);
}
