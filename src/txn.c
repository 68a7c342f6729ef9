/*
 * txn.c — the pool's one lock, and the undo journal that makes its critical
 * sections survive a process killed inside them.
 *
 * The lock is a robust, process-shared pthread mutex: when its owner dies
 * the kernel hands it to the next locker with EOWNERDEAD instead of leaving
 * it held forever. That alone is not enough, because the dead owner may have
 * been half-way through updating the queue or the allocator. So every store
 * to shared state inside the lock goes through mc__txn_store(), which first
 * records the word's old value in the journal:
 *
 *     journal.e[n] = {offset, old};  journal.count = n + 1;  *word = new;
 *
 * Commit is the single store journal.count = 0. A process that finds the
 * lock's owner dead restores the recorded words newest-first, which brings
 * the state back to exactly what it was when the dead process took the
 * lock; rollback is idempotent, so a recoverer killed while recovering is
 * itself recovered by the next one. Critical sections therefore never have
 * to be written "in a crash-safe order"; they only have to use txn stores.
 *
 * The journal and the state it restores are data another process wrote, so
 * the recoverer trusts neither: an entry may only name a word the engine
 * changes under the lock (never the layout written once at start, the
 * lock or the journal), and after the replay the arena, the ring and the
 * offsets the worker slots hold must pass a full check. If anything fails,
 * the state cannot be followed safely: the mutex is released without being
 * marked consistent, which makes it ENOTRECOVERABLE, and this and every
 * later mc__lock() in every process returns MC_ESYSTEM (errno
 * ENOTRECOVERABLE) instead of handing over a corrupt region.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#ifdef MC_TSAN
#include <sanitizer/tsan_interface.h>
#endif

int mc__lock_init(mc_header *h)
{
    pthread_mutexattr_t a;
    int r = pthread_mutexattr_init(&a);
    if (r == 0)
        r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (r == 0)
        r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (r == 0)
        r = pthread_mutex_init(&h->lock, &a);
    pthread_mutexattr_destroy(&a);
    if (r != 0) {
        errno = r;
        return MC_ESYSTEM;
    }
    return MC_OK;
}

/* A journal entry may only name a word the engine changes under the lock:
   not the layout at the start of the header (magic .. zygote_pid, region
   size and offsets included), the lock, the journal, or the arena's start
   and end. `size` is the region size read before the replay, so that no
   entry can widen the bounds checked for the entries after it. */
static bool journal_target_ok(uint64_t size, uint64_t off)
{
    if (off % 8 != 0 || off > size - 8)
        return false;
    uint64_t lock_hi = offsetof(mc_header, lock) + sizeof(pthread_mutex_t);
    uint64_t jr_lo = offsetof(mc_header, journal), jr_hi = jr_lo + sizeof(mc_journal);
    uint64_t arena = offsetof(mc_header, arena);
    if (off < lock_hi)
        return false;
    if (off + 8 > jr_lo && off < jr_hi)
        return false;
    if (off == arena + offsetof(mc_arena, start) || off == arena + offsetof(mc_arena, end))
        return false;
    return true;
}

bool mc__journal_rollback(mc_header *h)
{
    bool intact = true;
    uint64_t size = h->region_size;
    uint64_t n = atomic_load_explicit(&h->journal.count, memory_order_acquire);
    if (n > MC_JOURNAL_MAX) {
        n = MC_JOURNAL_MAX;
        intact = false;
    }
    if (size < sizeof(mc_header)) {
        n = 0;
        intact = false;
    }
    while (n-- > 0) {
        const mc_journal_entry *e = &h->journal.e[n];
        if (!journal_target_ok(size, e->off)) {
            intact = false;
            continue;
        }
        __atomic_store_n((uint64_t *)mc__ptr(h, e->off), e->old, __ATOMIC_RELAXED);
    }
    atomic_store_explicit(&h->journal.count, 0, memory_order_release);
    return intact;
}

/* A payload offset of a block in the arena with at least `len` bytes
   before top (the arena itself has passed mc__arena_check()). */
static bool block_ok(const mc_header *h, uint64_t off, uint64_t len)
{
    const mc_arena *a = &h->arena;
    return off % MC_BLOCK_ALIGN == 0 && off >= a->start && off < a->top && len <= a->top - off;
}

/* After a replay: can the state be followed? The arena's blocks and free
   lists; the ring's indices and the task offsets between them; what each
   worker slot holds: its task, unpublished result, init error message and
   holds (the zygote fails, frees or releases these when a worker dies).
   Task fields written outside the lock (result_off) are checked where they
   are freed (mc__arena_free). Walks the whole arena: only on EOWNERDEAD. */
static bool recovered_state_ok(mc_header *h)
{
    if (!mc__arena_check(h))
        return false;
    uint64_t head = h->ring_head, tail = h->ring_tail, cap = h->ring_capacity;
    if (tail - head > cap)
        return false;
    const uint64_t *ring = (const uint64_t *)mc__ptr(h, h->ring_off);
    for (uint64_t i = head; i != tail; i++)
        if (!block_ok(h, ring[i % cap], sizeof(mc_task)))
            return false;
    for (uint32_t i = 0; i < h->nworkers; i++) {
        const mc_worker_slot *s = mc__slot(h, i);
        if ((s->task_off && !block_ok(h, s->task_off, sizeof(mc_task))) ||
            (s->pending_result && !block_ok(h, s->pending_result, 0)) ||
            (s->error_off && !block_ok(h, s->error_off, s->error_len)))
            return false;
        for (unsigned k = 0; k < MC_WORKER_HOLDS; k++)
            if (s->holds[k] && !block_ok(h, s->holds[k], sizeof(mc_task)))
                return false;
    }
    return true;
}

/* ---- debug checks ------------------------------------------------------ */

#if MC_DEBUG
/* The region whose lock this thread holds. One at a time: the engine never
   nests two pools' locks (nor takes one lock twice, which would deadlock). */
static _Thread_local const mc_header *t_locked;

bool mc__lock_held(const mc_header *h)
{
    return h != NULL && t_locked == h;
}

void mc__assert_fail(const char *cond, const char *file, int line, const char *func)
{
    fprintf(stderr, "libmulticore: internal error: assertion failed: %s (%s:%d, in %s)\n", cond, file,
            line, func);
    abort();
}

static void note_locked(const mc_header *h, bool locked)
{
    /* The fuzz targets fake a dead owner while this thread holds the lock,
       so taking the same region's lock again is let through here. */
    MC_ASSERT(!locked || t_locked == NULL || t_locked == h);
    t_locked = locked ? h : NULL;
}
#else
static inline void note_locked(const mc_header *h, bool locked)
{
    (void)h;
    (void)locked;
}
#endif

/* ---- the lock ------------------------------------------------------------ */

/* The lock is held for a few hundred nanoseconds at a time, mostly by a
   caller and a worker handing a task over. Blocking at once on contention
   (as pthread_mutex_lock does for a robust mutex) put the loser to sleep
   on a futex and made the winner wake it: tens of microseconds on a VM for
   a wait of a fraction of one. So watch the lock word for up to
   MC_LOCK_SPIN_NS while it is taken, then lock. Only watch: taking it
   stays with pthread_mutex_timedlock, which alone handles a dead owner
   (glibc's trylock on a robust mutex made unrecoverable returns
   ENOTRECOVERABLE but leaves the word taken, so every later lock waits
   forever).

   Why timed: a process killed while it waits for the lock can take a
   wake-up with it. The unlock clears the word's waiters bit and wakes one
   sleeper; if that sleeper is a worker the zygote has just sent SIGKILL
   (stop_cancelled() kills under the lock, so a worker whose cancelled task
   just ended is often asleep on it) and still queued on the futex, it
   takes the wake-up and dies. The kernel passes a dying waiter's wake-up
   on only while the word is free (robust list, list_op_pending); once
   another process has taken the lock uncontended, so with no waiters bit,
   its unlock wakes nobody and the other sleepers sleep on a free lock,
   for good (seen once in CI: a caller stuck for 240 s). A sleeper
   therefore looks again every MC_LOCK_SLICE_NS: a wake-up lost that way
   costs one slice, never a hang. */
_Static_assert(MC_LOCK_SLICE_NS > 0 && MC_LOCK_SLICE_NS < 1000000000, "one slice adds less than a second");

static int lock_mutex(pthread_mutex_t *m)
{
#ifdef __GLIBC__
    int *word = &m->__data.__lock; /* the futex word: 0 when free */
    if (__atomic_load_n(word, __ATOMIC_RELAXED) != 0) {
        int64_t until = mc__now_ns() + MC_LOCK_SPIN_NS;
        do {
            for (int i = 0; i < 8; i++)
                mc__cpu_relax();
        } while (__atomic_load_n(word, __ATOMIC_RELAXED) != 0 && mc__now_ns() < until);
    }
#endif
    /* The end of this thread's last slice, kept: the uncontended lock
       reads no clock (the deadline only counts once the lock must be
       waited for; one already past makes that wait return at once, and
       the next try gets a fresh one). CLOCK_REALTIME, which
       pthread_mutex_timedlock measures against; a clock set back while
       a thread sleeps only lengthens that one slice. */
    static _Thread_local struct timespec slice_end;
    for (;;) {
        int r = pthread_mutex_timedlock(m, &slice_end);
#ifdef MC_TSAN
        /* TSan's interceptor records the lock as taken only on 0; with
           EOWNERDEAD we hold it too (pthread_mutex_lock's interceptor
           knew that). */
        if (r == EOWNERDEAD) {
            __tsan_mutex_pre_lock(m, __tsan_mutex_try_lock);
            __tsan_mutex_post_lock(m, __tsan_mutex_try_lock, 0);
        }
#endif
        if (r != ETIMEDOUT)
            return r;
        clock_gettime(CLOCK_REALTIME_COARSE, &slice_end);
        slice_end.tv_nsec += MC_LOCK_SLICE_NS;
        slice_end.tv_sec += slice_end.tv_nsec / 1000000000;
        slice_end.tv_nsec %= 1000000000;
    }
}

int mc__lock(mc_header *h)
{
    int r = lock_mutex(&h->lock);
    if (r == EOWNERDEAD) {
        /* The previous owner died inside its critical section. */
        if (!mc__journal_rollback(h) || !recovered_state_ok(h)) {
            /* Unlocking an inconsistent robust mutex makes it unusable for
               good: every process of the pool now gets ENOTRECOVERABLE. */
            static _Atomic int said;
            if (!atomic_exchange_explicit(&said, 1, memory_order_relaxed))
                fputs("libmulticore: the shared region is corrupt after a process died holding its lock; "
                      "the pool cannot be used any more\n", stderr);
            pthread_mutex_unlock(&h->lock);
            note_locked(h, false);
            errno = ENOTRECOVERABLE;
            return MC_ESYSTEM;
        }
        r = pthread_mutex_consistent(&h->lock);
    }
    if (r != 0) {
        note_locked(h, false);
        errno = r;
        return MC_ESYSTEM;
    }
    note_locked(h, true);
    return MC_OK;
}

void mc__txn_commit(mc_header *h)
{
    MC_ASSERT_LOCKED(h);
    atomic_store_explicit(&h->journal.count, 0, memory_order_release);
    mc__arena_after_commit(h);
}

void mc__unlock(mc_header *h)
{
    mc__txn_commit(h);
    note_locked(h, false);
    pthread_mutex_unlock(&h->lock);
}

static void journal(mc_header *h, uint64_t *word, uint64_t old);

void mc__txn_store(mc_header *h, uint64_t *word, uint64_t value)
{
    MC_ASSERT_LOCKED(h);
    uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED);
    if (old == value)
        return;
    journal(h, word, old);
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
}

void mc__txn_note(mc_header *h, uint64_t *word)
{
    MC_ASSERT_LOCKED(h);
    journal(h, word, __atomic_load_n(word, __ATOMIC_RELAXED));
}

static void journal(mc_header *h, uint64_t *word, uint64_t old)
{
    uint64_t n = atomic_load_explicit(&h->journal.count, memory_order_relaxed);
    if (n >= MC_JOURNAL_MAX) {
        /* A critical section larger than the journal is an engine bug, and
           carrying on would make it unrecoverable: stop here, loudly. */
        fputs("libmulticore: internal error: undo journal overflow\n", stderr);
        abort();
    }
    h->journal.e[n].off = mc__off(h, word);
    h->journal.e[n].old = old;
    /* The entry is visible before the count that covers it, and the count
       before the store it protects (release orders all earlier stores). */
    atomic_store_explicit(&h->journal.count, n + 1, memory_order_release);
}
