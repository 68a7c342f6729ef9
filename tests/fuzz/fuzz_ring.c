/*
 * fuzz_ring.c — the task ring, the worker slots and the task records, as
 * found by whoever recovers after a process died holding the lock, and as
 * then used by the zygote (mc__recover_worker(): fail the dead worker's
 * task, free its unpublished result), by workers (mc__ring_pop() and the
 * task reference they drop) and by the caller (its group's references).
 *
 * Input:
 *   - a committed pool state: tasks submitted (argument sizes), some taken
 *     by the two worker slots, some with a result allocated, published
 *     (DONE) or cancelled by the caller, some held past their release by a
 *     worker (mc_task_hold);
 *   - the unfinished critical section of a worker that died: taking the
 *     next task, allocating a result, releasing the task it has just
 *     published or failed to publish, taking or dropping a hold;
 *   - edits to the journal aimed at the ring indices and entries, the slot
 *     words (holds included) and the task records (or anywhere).
 *
 * mc__lock() then recovers. If it accepts the state, everything the pool
 * does next with it must stay inside the region and terminate: both
 * workers are recovered as dead, the ring is drained, the caller drops its
 * references. With a genuine journal the result must be exact: nothing
 * left allocated at the end, the arena consistent.
 */
#include "fuzz_common.h"

#include <sys/wait.h>

#define FZ_TASKS 8

typedef struct {
    uint64_t group[FZ_TASKS]; /* the caller's references, in its own memory */
    unsigned n;
} fz_pool;

static mc_task *task(mc_header *h, uint64_t off) { return (mc_task *)mc__ptr(h, off); }

static void submit(mc_header *h, fz_pool *p, uint64_t arg_len)
{
    uint64_t off = mc__arena_alloc(h, mc__record_size(arg_len));
    if (!off)
        return;
    mc_task *t = task(h, off);
    mc__record_init(t, MC_TS_PENDING, arg_len);
    if (!mc__ring_push(h, off)) {
        mc__arena_free(h, off);
        return;
    }
    mc__txn_store(h, &t->refs, 2);
    p->group[p->n++] = off;
}

/* A worker takes the next live task (worker.c: finish_and_take). */
static void take(mc_header *h, mc_worker_slot *s)
{
    uint64_t off;
    while ((off = mc__ring_pop(h)) != 0) {
        mc_task *t = task(h, off);
        if ((atomic_load(&t->state) & MC_TS_MASK) == MC_TS_PENDING) {
            mc__txn_store(h, &s->task_off, off);
            return;
        }
        mc__task_unref(h, off);
    }
}

/* The worker's result (worker.c: mc_result_alloc). */
static void result(mc_header *h, mc_worker_slot *s, uint64_t len)
{
    if (s->pending_result) {
        mc__arena_free(h, s->pending_result);
        mc__txn_store(h, &s->pending_result, 0);
    }
    uint64_t off = mc__arena_alloc(h, len);
    if (off)
        mc__txn_store(h, &s->pending_result, off);
}

/* The worker publishes (outside the lock) and releases its task. Without
   a result block, a result may sit in the room after the arguments. */
static void finish(mc_header *h, mc_worker_slot *s, bool publish, bool inline_result)
{
    if (!s->task_off)
        return;
    mc_task *t = task(h, s->task_off);
    uint64_t room = MC_ALIGN_UP(s->task_off + mc__record_size(t->arg_len), 8);
    uint32_t pending = MC_TS_PENDING;
    if (publish && atomic_compare_exchange_strong(&t->state, &pending, MC_TS_DONE)) {
        t->result_off = s->pending_result;
        if (!t->result_off && inline_result &&
            room <= s->task_off + mc__arena_block_size(h, s->task_off))
            t->result_off = room;
        mc__txn_store(h, &s->pending_result, 0);
    } else if (s->pending_result) {
        mc__arena_free(h, s->pending_result);
        mc__txn_store(h, &s->pending_result, 0);
    }
    mc__task_unref(h, s->task_off);
    mc__txn_store(h, &s->task_off, 0);
}

/* A task function keeps its task's bytes past the task (hold.c:
   mc__worker_hold_task), or lets a hold go (mc_hold_release). */
static void hold(mc_header *h, mc_worker_slot *s, unsigned k)
{
    k %= MC_WORKER_HOLDS;
    if (!s->holds[k] && s->task_off) {
        mc__txn_store(h, &s->holds[k], s->task_off);
        mc__txn_store(h, &task(h, s->task_off)->refs, task(h, s->task_off)->refs + 1);
    } else if (s->holds[k]) {
        uint64_t off = s->holds[k];
        mc__txn_store(h, &s->holds[k], 0);
        mc__task_unref(h, off);
    }
}

/* One step of a worker's life, chosen by the input. */
static void worker_step(mc_header *h, fz_in *in)
{
    uint8_t b = fz_u8(in);
    mc_worker_slot *s = fz_slot(h, b & 1);
    switch ((b >> 1) % 4) {
    case 0:
        if (!s->task_off)
            take(h, s);
        break;
    case 1:
        if (s->task_off)
            result(h, s, fz_u16(in) % 5000);
        break;
    case 2:
        finish(h, s, b & 8, b & 16);
        break;
    default:
        hold(h, s, b >> 3);
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in in = {data, size};
    mc_header *h = fz_reset();
    fz_pool pool = {{0}, 0};

    /* The committed state. */
    FZ_ASSERT(mc__lock(h) == MC_OK);
    for (unsigned n = 1 + fz_u8(&in) % FZ_TASKS; n > 0 && pool.n < FZ_TASKS; n--) {
        submit(h, &pool, fz_u16(&in) % 3000);
        mc__txn_commit(h);
    }
    for (unsigned n = fz_u8(&in) % 12; n > 0; n--) {
        worker_step(h, &in);
        mc__txn_commit(h);
    }
    uint8_t cancel = fz_u8(&in);
    for (unsigned i = 0; i < pool.n; i++) {
        uint32_t pending = MC_TS_PENDING;
        if (cancel >> (i % 8) & 1)
            atomic_compare_exchange_strong(&task(h, pool.group[i])->state, &pending, MC_TS_CANCELLED);
    }
    FZ_ASSERT(mc__arena_check(h));
    mc__unlock(h);

    /* A worker dies inside its next critical section: exactly one, as in
       worker.c (its publication, outside the lock, came before it). */
    FZ_ASSERT(mc__lock(h) == MC_OK);
    worker_step(h, &in);

    /* Edits to the journal. */
    bool edited = false;
    for (unsigned k = 0; k < 32 && fz_more(&in); k++) {
        uint8_t c = fz_u8(&in);
        uint64_t n = atomic_load(&h->journal.count);
        if (c == 0xff) {
            atomic_store(&h->journal.count, fz_value(&in, n));
            edited = true;
            continue;
        }
        unsigned i = c % (n < MC_JOURNAL_MAX - 4 ? n + 4 : MC_JOURNAL_MAX);
        uint64_t off;
        switch (fz_u8(&in) % 4) {
        case 0: /* the ring indices or an entry */
            off = offsetof(mc_header, ring_head) + (fz_u8(&in) % 2) * 8;
            if (fz_u8(&in) & 1)
                off = h->ring_off + (fz_u8(&in) % FZ_RING) * 8;
            break;
        case 1: { /* a slot word: task_off .. error_len, or a hold */
            uint8_t w = fz_u8(&in);
            off = h->slots_off + (w & 1) * sizeof(mc_worker_slot);
            w >>= 1;
            off += w < 64 ? offsetof(mc_worker_slot, task_off) + (w % 4) * 8
                          : offsetof(mc_worker_slot, holds) + (w % MC_WORKER_HOLDS) * 8;
            break;
        }
        case 2: /* a task's reference count */
            off = pool.n ? pool.group[fz_u8(&in) % pool.n] + offsetof(mc_task, refs) : 0;
            break;
        default:
            off = fz_offset(&in, h);
            break;
        }
        uint64_t old;
        memcpy(&old, mc__ptr(h, off < FZ_REGION - 8 ? off : 0), 8);
        h->journal.e[i].off = off;
        h->journal.e[i].old = fz_value(&in, old);
        if (i >= n && n <= MC_JOURNAL_MAX)
            atomic_store(&h->journal.count, i + 1);
        edited = true;
    }

    fz_owner_died(h);
    if (mc__lock(h) != MC_OK) {
        FZ_ASSERT(edited);
        return 0;
    }
    FZ_ASSERT(mc__arena_check(h));

    /* The zygote recovers both workers as dead, ... */
    for (unsigned i = 0; i < FZ_WORKERS; i++) {
        mc__recover_worker(h, fz_slot(h, i), 4242 + (pid_t)i, SIGKILL);
        mc__txn_commit(h);
    }
    /* ... their replacements drain the ring, ... */
    uint64_t off;
    for (unsigned k = 0; (off = mc__ring_pop(h)) != 0; k++) {
        FZ_ASSERT(k <= FZ_RING);
        mc__task_unref(h, off);
        mc__txn_commit(h);
    }
    FZ_ASSERT(h->ring_head == h->ring_tail);
    /* ... and the caller destroys its group. */
    for (unsigned i = 0; i < pool.n; i++) {
        uint32_t pending = MC_TS_PENDING;
        atomic_compare_exchange_strong(&task(h, pool.group[i])->state, &pending, MC_TS_CANCELLED);
        mc__task_unref(h, pool.group[i]);
        mc__txn_commit(h);
    }
    if (!edited) {
        FZ_ASSERT(mc__arena_check(h));
        FZ_ASSERT(h->arena.in_use == 0 && h->arena.top == h->arena.start);
    }
    mc__unlock(h);
    return 0;
}
