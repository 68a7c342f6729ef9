/*
 * queue.c — the submit ring and the sleep/wake protocol around it.
 *
 * The ring holds payload offsets of task records waiting for a worker. Its
 * indices only change under the lock through the journal, so a worker
 * killed while taking a task either took it (and the zygote fails it) or did
 * not (and it is still queued). It is bounded: a full ring makes the caller
 * wait for room, which is the pool's backpressure. Completed results never
 * occupy it, so a caller that submits a million tasks before collecting any
 * is only slowed down, never deadlocked.
 *
 * Sleeping: a waiter increments a sleepers count, issues a full fence, looks
 * at the ring once more and only then sleeps on a sequence word; a producer
 * changes the ring, fences, and makes the wake-up syscall only when the
 * sleepers count is non-zero. One of the two always sees the other, so no
 * wake-up is lost and a busy pool makes no syscalls at all.
 *
 * Waking for a task: no system call while a worker spins for work (it
 * takes the task), and at most one wake-up in flight (the woken worker
 * wakes the next if more work is queued once it has taken a task). With
 * many more workers than CPUs, waking one sleeper per submitted task made
 * every woken worker fight the caller for a CPU only to find the queue
 * already drained.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>
#include <sched.h>

static inline uint64_t load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

bool mc__ring_push(mc_header *h, uint64_t task_off)
{
    MC_ASSERT_LOCKED(h);
    uint64_t head = h->ring_head, tail = h->ring_tail;
    if (tail - head >= h->ring_capacity)
        return false;
    uint64_t *ring = (uint64_t *)mc__ptr(h, h->ring_off);
    mc__txn_store(h, &ring[tail % h->ring_capacity], task_off);
    mc__txn_store(h, &h->ring_tail, tail + 1);
    return true;
}

uint64_t mc__ring_pop(mc_header *h)
{
    MC_ASSERT_LOCKED(h);
    uint64_t head = h->ring_head;
    if (head == h->ring_tail)
        return 0;
    uint64_t *ring = (uint64_t *)mc__ptr(h, h->ring_off);
    uint64_t off = ring[head % h->ring_capacity];
    mc__txn_store(h, &h->ring_head, head + 1);
    return off;
}

bool mc__ring_has_work(mc_header *h)
{
    return load64(&h->ring_tail) != load64(&h->ring_head);
}

bool mc__ring_has_room(mc_header *h)
{
    return load64(&h->ring_tail) - load64(&h->ring_head) < h->ring_capacity;
}

/* The producer's half of the protocol (top of file), after it changed
   what the sleepers of seq wait for. */
static void wake_sleepers(_Atomic uint32_t *seq, _Atomic uint32_t *sleepers, int n)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(sleepers, memory_order_relaxed) == 0)
        return;
    mc__futex_bump_wake(seq, n);
}

void mc__wake_workers(mc_header *h, uint32_t n)
{
    wake_sleepers(&h->work_seq, &h->work_sleepers, n > INT_MAX ? INT_MAX : (int)n);
}

void mc__wake_for_task(mc_header *h)
{
    /* A worker spinning for work takes the task without a system call.
       The spinner ends its spin by clearing work_spin_until, then looks at
       the ring once more after registering as a sleeper (see
       mc__wait_for_work): if we still see its mark it will see our task. A
       mark past its time is ignored (a spinner preempted or killed). */
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&h->work_sleepers, memory_order_relaxed) == 0)
        return; /* every worker is awake and will look at the ring */
    int64_t now = mc__now_ns();
    int64_t until = atomic_load_explicit(&h->work_spin_until, memory_order_relaxed);
    if (until != 0 && now < until)
        return;
    /* One wake-up in flight at a time. The worker it wakes clears the mark
       before it takes a task (mc__wait_for_work) and, having taken one,
       wakes the next sleeper if more are queued (mc__worker_main): a burst
       of tasks is spread along that chain instead of by one system call
       per task, each waking a worker that would compete for the CPUs with
       the caller and with the workers already woken. If we still see the
       mark, the woken worker has not taken a task yet, so the task we
       queued is still in the ring when it looks. */
    int64_t pending = atomic_load_explicit(&h->work_wake_until, memory_order_relaxed);
    if (pending != 0 && now < pending)
        return;
    int64_t mine = now + MC_WAKE_PENDING_NS;
    if (!atomic_compare_exchange_strong_explicit(&h->work_wake_until, &pending, mine, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return; /* another producer's wake-up has just left: its worker chains */
    if (mc__futex_bump_wake(&h->work_seq, 1) != 0)
        return;
    /* Nobody was inside the wait (the sleepers we counted were on their
       way in, and see the bumped word, or on their way out), so no worker
       will clear the mark: we do. A producer that saw our mark meanwhile
       skipped its wake-up; after the fence we see its task, and wake for
       it the plain way (top of file), on its behalf. */
    if (atomic_compare_exchange_strong_explicit(&h->work_wake_until, &mine, 0, memory_order_seq_cst,
                                                memory_order_relaxed)) {
        atomic_thread_fence(memory_order_seq_cst);
        if (mc__ring_has_work(h))
            mc__wake_workers(h, 1);
    }
}

void mc__wake_done(mc_header *h)
{
    wake_sleepers(&h->done_seq, &h->done_watchers, INT_MAX);
}

void mc__wake_space(mc_header *h)
{
    wake_sleepers(&h->space_seq, &h->space_sleepers, INT_MAX);
}

static bool worker_should_look(mc_header *h)
{
    return mc__ring_has_work(h) || atomic_load_explicit(&h->stopping, memory_order_acquire);
}

/* One spinner is enough to take the next task at once; more would only
   compete with the caller for the CPUs (it spins too, waiting for the
   result). The spinner that takes a task wakes a sleeping worker if more
   work is queued (mc__worker_main). mark: the spinner's mark this worker
   claimed when its last task ended (mc__claim_spin), or 0. also: the
   worker's hand-off word while it is armed (handoff.c). */
bool mc__spin_for_work(mc_header *h, int64_t mark, _Atomic uint32_t *also, uint32_t armed)
{
    static mc_spin spin; /* a worker has one thread that waits for work */
    int64_t start = mc__now_ns(), now = start, until = start + mc__spin_budget(&spin);
    int64_t held = atomic_load_explicit(&h->work_spin_until, memory_order_relaxed);
    bool ours = mark != 0 && held == mark; /* claimed after our last task: extend it */
    if ((!ours && held != 0 && held > start) ||
        !atomic_compare_exchange_strong_explicit(&h->work_spin_until, &held, until, memory_order_seq_cst,
                                                 memory_order_relaxed))
        return false;
    bool found = false;
    do {
        for (int i = 0; i < 64; i++) {
            if (worker_should_look(h) || (also && atomic_load_explicit(also, memory_order_acquire) != armed)) {
                /* The last round's clock, not a fresh read: a hand-off's
                   go ends this spin, and the task waits for the read. */
                found = true;
                break;
            }
            mc__cpu_relax();
        }
        if (found)
            break;
        now = mc__now_ns();
        if (now - start > MC_SPIN_YIELD_NS)
            mc__spin_yield(&now); /* let a caller woken on this CPU run */
    } while (now < until);
    int64_t mine = until;
    atomic_compare_exchange_strong_explicit(&h->work_spin_until, &mine, 0, memory_order_seq_cst,
                                            memory_order_relaxed);
    mc__spin_done(&spin, found, now - start);
    return found;
}

int64_t mc__claim_spin(mc_header *h, int64_t now)
{
    int64_t held = atomic_load_explicit(&h->work_spin_until, memory_order_relaxed);
    if (held != 0 && held > now)
        return 0; /* another worker spins: it takes the next task */
    int64_t mine = now + MC_SPIN_MIN_NS;
    return atomic_compare_exchange_strong_explicit(&h->work_spin_until, &held, mine, memory_order_seq_cst,
                                                   memory_order_relaxed)
               ? mine
               : 0;
}

void mc__release_spin(mc_header *h, int64_t mark)
{
    MC_ASSERT(mark != 0);
    atomic_compare_exchange_strong_explicit(&h->work_spin_until, &mark, 0, memory_order_seq_cst,
                                            memory_order_relaxed);
    /* A producer that saw the mark skipped its wake-up; after this fence
       our look at the ring sees its task (and wakes for it). */
    atomic_thread_fence(memory_order_seq_cst);
}

void mc__wait_for_work(mc_header *h, int64_t mark, bool spin)
{
    /* A short spin first: handing over a task to a spinning worker costs
       well under a microsecond, waking a sleeping one tens of them. */
    if (spin && mc__spin_for_work(h, mark, NULL, 0))
        return;

    uint32_t seq = atomic_load_explicit(&h->work_seq, memory_order_acquire);
    atomic_fetch_add_explicit(&h->work_sleepers, 1, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
    if (!worker_should_look(h)) {
        /* No timeout needed: if the zygote dies, PR_SET_PDEATHSIG kills us. */
        mc__futex_wait(&h->work_seq, seq, INT64_MAX);
    }
    /* Back, for whatever reason: a wake-up in flight has arrived (see
       mc__wake_for_task); we look at the ring next. Clearing a mark meant
       for another sleeper only lets one more wake-up go out. */
    if (atomic_load_explicit(&h->work_wake_until, memory_order_relaxed) != 0)
        atomic_store_explicit(&h->work_wake_until, 0, memory_order_seq_cst);
    atomic_fetch_sub_explicit(&h->work_sleepers, 1, memory_order_seq_cst);
}

int mc__wait_for_space(mc_pool *pool, int64_t deadline_ns)
{
    mc_header *h = pool->hdr;
    uint32_t seq = atomic_load_explicit(&h->space_seq, memory_order_acquire);
    atomic_fetch_add_explicit(&h->space_sleepers, 1, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
    int r = MC_OK;
    if (!mc__ring_has_room(h))
        r = mc__pool_wait_word(pool, &h->space_seq, seq, deadline_ns);
    atomic_fetch_sub_explicit(&h->space_sleepers, 1, memory_order_seq_cst);
    return r;
}
