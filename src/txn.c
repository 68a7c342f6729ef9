/*
 * txn.c — the pool's one lock, and the undo journal that makes its critical
 * sections survive a process killed inside them.
 *
 * The lock is a robust, process-shared pthread mutex: when its owner dies
 * the kernel hands it to the next locker with EOWNERDEAD instead of leaving
 * it held forever. That alone is not enough, because the dead owner may have
 * been half-way through updating the queue or the allocator. So every store
 * to shared state inside the lock goes through mc_txn_store(), which first
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
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

int mc_lock_init(mc_header *h)
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

/* A journal entry may only name a word outside the lock and the journal. */
static bool journal_target_ok(const mc_header *h, uint64_t off)
{
    if (off % 8 != 0 || off > h->region_size - 8)
        return false;
    uint64_t lock_lo = offsetof(mc_header, lock), lock_hi = lock_lo + sizeof h->lock;
    uint64_t jr_lo = offsetof(mc_header, journal), jr_hi = jr_lo + sizeof h->journal;
    if (off + 8 > lock_lo && off < lock_hi)
        return false;
    if (off + 8 > jr_lo && off < jr_hi)
        return false;
    return true;
}

bool mc_journal_rollback(mc_header *h)
{
    bool intact = true;
    uint64_t n = atomic_load_explicit(&h->journal.count, memory_order_acquire);
    if (n > MC_JOURNAL_MAX) {
        n = MC_JOURNAL_MAX;
        intact = false;
    }
    while (n-- > 0) {
        const mc_journal_entry *e = &h->journal.e[n];
        if (!journal_target_ok(h, e->off)) {
            intact = false;
            continue;
        }
        __atomic_store_n((uint64_t *)mc_ptr(h, e->off), e->old, __ATOMIC_RELAXED);
    }
    atomic_store_explicit(&h->journal.count, 0, memory_order_release);
    return intact;
}

int mc_lock(mc_header *h)
{
    int r = pthread_mutex_lock(&h->lock);
    if (r == EOWNERDEAD) {
        /* The previous owner died inside its critical section. */
        mc_journal_rollback(h);
        r = pthread_mutex_consistent(&h->lock);
    }
    if (r != 0) {
        errno = r;
        return MC_ESYSTEM;
    }
    return MC_OK;
}

void mc_txn_commit(mc_header *h)
{
    atomic_store_explicit(&h->journal.count, 0, memory_order_release);
    mc_arena_after_commit(h);
}

void mc_unlock(mc_header *h)
{
    mc_txn_commit(h);
    pthread_mutex_unlock(&h->lock);
}

void mc_txn_store(mc_header *h, uint64_t *word, uint64_t value)
{
    uint64_t old = __atomic_load_n(word, __ATOMIC_RELAXED);
    if (old == value)
        return;
    uint64_t n = atomic_load_explicit(&h->journal.count, memory_order_relaxed);
    if (n >= MC_JOURNAL_MAX) {
        /* A critical section larger than the journal is an engine bug, and
           carrying on would make it unrecoverable: stop here, loudly. */
        fputs("libmulticore: internal error: undo journal overflow\n", stderr);
        abort();
    }
    h->journal.e[n].off = mc_off(h, word);
    h->journal.e[n].old = old;
    /* The entry is visible before the count that covers it, and the count
       before the store it protects (release orders all earlier stores). */
    atomic_store_explicit(&h->journal.count, n + 1, memory_order_release);
    __atomic_store_n(word, value, __ATOMIC_RELEASE);
}
