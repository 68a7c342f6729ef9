/*
 * worker.c — the life of a worker process, and the task context API that
 * task functions use to hand back results.
 *
 * A worker is forked by the zygote, runs the init callback once, then loops:
 * under the lock it releases the task it just finished and takes the next
 * one in the same critical section (one lock round trip per task), runs it
 * outside the lock, and publishes the outcome by a single compare-and-swap
 * on the task's state word, waking the caller only if it sleeps there. The
 * worker that is to spin for the next task skips the lock: it keeps the
 * finished task in hand and a caller hands it the next one, releasing the
 * finished one in the caller's own critical section (handoff.c).
 * With max_tasks_per_worker, after that many tasks it releases the last
 * one without taking another, marks its slot MC_WS_RETIRED, runs
 * worker_exit and exits; the zygote forks its replacement.
 *
 * What a worker holds is always written in its slot (task in hand, result
 * allocated but not yet published) through the journal, so that the zygote
 * can fail exactly that task and free exactly those blocks if it dies. A
 * small result needs no block at all: it goes in the room the task's own
 * block has left after the arguments (most blocks have some: they are
 * 64-byte multiples), which the task record frees with itself.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

struct mc_task_ctx {
    mc_header *h;
    mc_worker_slot *slot;
    mc_task *task;
    /* The room left in the task's own block after its arguments (8-byte
       aligned): a result that fits is written there, with no allocation
       and no lock, and costs no block of its own. */
    uint64_t inline_off, inline_cap;
    bool result_inline;  /* the result set is the one in that room */
    uint64_t result_len;  /* of the result set (inline or the slot's pending block) */
};

/* This process's identity when it is a worker (its pid cached: getpid() is
   a real system call, and publish() needs it for every task). */
static int g_worker_index = -1;
static pid_t g_worker_pid;
static mc_header *g_hdr;
static mc_worker_slot *g_slot;
static mc_clock g_clock; /* times each task (clock.c) */

int mc_worker_index(void)
{
    return g_worker_index;
}

uint64_t mc_worker_shm_size(void)
{
    /* start and end are layout, written once before the first fork */
    return g_hdr ? g_hdr->arena.end - g_hdr->arena.start : 0;
}

mc_worker_slot *mc__worker_own_slot(void)
{
    return g_slot;
}

mc_header *mc__worker_own_header(void)
{
    return g_hdr;
}

int mc_task_hold(mc_task_ctx *ctx, mc_hold **hold)
{
    if (!ctx || !ctx->h || !hold)
        return MC_EINVAL;
    *hold = NULL;
    return mc__worker_hold_task(ctx->h, ctx->slot, mc__off(ctx->h, ctx->task), hold);
}

int mc_result_share(mc_task_ctx *ctx, const mc_hold *buffer, unsigned *link)
{
    if (!ctx || !ctx->h || !link || !mc__hold_is_shareable(buffer, ctx->h))
        return MC_EINVAL;
    int r = mc__lock(ctx->h);
    if (r != MC_OK)
        return r;
    int k = mc__link_add(ctx->h, mc__off(ctx->h, ctx->task), buffer->task_off);
    mc__unlock(ctx->h);
    if (k < 0)
        return MC_ENOMEM;
    *link = (unsigned)k;
    return MC_OK;
}

const void *mc_task_link_data(mc_task_ctx *ctx, unsigned link, size_t *len)
{
    if (!ctx || !ctx->h)
        return NULL;
    /* The task in hand keeps its links: no lock needed to read one. */
    uint64_t off = mc__link_get(ctx->h, mc__off(ctx->h, ctx->task), link);
    if (!off)
        return NULL;
    mc_task *b = mc__task_at(ctx->h, off);
    if (len)
        *len = (size_t)b->arg_len;
    return mc__record_data(b, b->arg_len);
}

int mc_task_link_hold(mc_task_ctx *ctx, unsigned link, mc_hold **hold)
{
    if (!ctx || !ctx->h || !hold)
        return MC_EINVAL;
    *hold = NULL;
    uint64_t off = mc__link_get(ctx->h, mc__off(ctx->h, ctx->task), link);
    if (!off)
        return MC_EINVAL;
    return mc__worker_hold_task(ctx->h, ctx->slot, off, hold);
}

/* Under the lock: free the slot's unpublished result, if any. */
static void drop_pending_result(mc_header *h, mc_worker_slot *slot)
{
    MC_ASSERT_LOCKED(h);
    if (slot->pending_result) {
        mc__arena_release_pages(h, slot->pending_result);
        mc__arena_free(h, slot->pending_result);
        mc__txn_store(h, &slot->pending_result, 0);
    }
}

void *mc_result_alloc(mc_task_ctx *ctx, size_t len)
{
    if (!ctx || !ctx->h)
        return NULL;
    mc_header *h = ctx->h;
    mc_worker_slot *slot = ctx->slot;
    ctx->result_inline = false;
    ctx->result_len = 0;
    if (len <= ctx->inline_cap) {
        /* In the task's own block: nothing to allocate, nothing a crash
           could leak; only a result block set before is given back. */
        if (slot->pending_result) {
            if (mc__lock(h) != MC_OK)
                return NULL;
            drop_pending_result(h, slot);
            mc__unlock(h);
        }
        ctx->result_inline = true;
        ctx->result_len = len;
        return mc__ptr(h, ctx->inline_off);
    }
    if (mc__lock(h) != MC_OK)
        return NULL;
    drop_pending_result(h, slot);
    uint64_t off = mc__arena_alloc(h, len);
    uint64_t populate = off ? mc__arena_to_populate(h, off, len) : 0;
    if (off)
        mc__txn_store(h, &slot->pending_result, off);
    mc__unlock(h);
    if (!off)
        return NULL;
    void *p = mc__ptr(h, off);
    if (mc__arena_commit(h, off, populate) != MC_OK) {
        if (mc__lock(h) == MC_OK) {
            drop_pending_result(h, slot);
            mc__unlock(h);
        }
        return NULL;
    }
    ctx->result_len = len;
    return p;
}

int mc_result_set(mc_task_ctx *ctx, const void *data, size_t len)
{
    if (!ctx || (!data && len))
        return MC_EINVAL;
    void *p = mc_result_alloc(ctx, len);
    if (!p)
        return MC_ENOMEM;
    if (len)
        memcpy(p, data, len);
    return MC_OK;
}

void mc__slot_set_error(mc_header *h, mc_worker_slot *slot, const char *message)
{
    size_t len = strlen(message);
    if (mc__lock(h) != MC_OK)
        return;
    if (slot->error_off)
        mc__arena_free(h, slot->error_off);
    uint64_t off = mc__arena_alloc(h, len);
    if (off)
        memcpy(mc__ptr(h, off), message, len);
    mc__txn_store(h, &slot->error_off, off);
    mc__txn_store(h, &slot->error_len, off ? len : 0);
    mc__unlock(h);
}

void mc_worker_set_error(const char *message)
{
    if (g_hdr && message)
        mc__slot_set_error(g_hdr, g_slot, message);
}

/* Publish a finished task's outcome; false if the caller had cancelled it
   (a result block then stays pending and is freed with the task's
   release). The task is taken: its fn and arg_len words are free to hold
   the outcome and the result's length. */
static bool publish(mc_header *h, const mc_task_ctx *ctx, int code)
{
    mc_task *t = ctx->task;
    uint64_t off = ctx->result_inline ? ctx->inline_off : ctx->slot->pending_result;
    t->result_off = off;
    t->result_len = off ? ctx->result_len : 0;
    t->out.task_code = code;
    t->out.term_signal = 0;
    t->out.exit_status = 0;
    t->worker_pid = (int32_t)g_worker_pid;
    return mc__task_finish(h, t, MC_TS_DONE);
}

void mc__slot_release_task(mc_header *h, mc_worker_slot *slot, bool published)
{
    MC_ASSERT_LOCKED(h);
    MC_ASSERT(!published || slot->task_off);
    if (published)
        mc__txn_store(h, &slot->pending_result, 0); /* now owned by the task */
    else
        drop_pending_result(h, slot);
    if (slot->task_off) {
        mc__task_unref(h, slot->task_off);
        mc__txn_store(h, &slot->task_off, 0);
    }
    mc__txn_commit(h);
}

/* Under the lock: release the finished task (if any) and, unless the
   worker retires, take the next live one from the ring. Returns its
   offset, or 0. */
static uint64_t finish_and_take(mc_header *h, mc_worker_slot *slot, bool published, bool retire,
                                bool *took)
{
    MC_ASSERT_LOCKED(h);
    *took = false;
    if (slot->task_off)
        mc__slot_release_task(h, slot, published);
    if (retire || atomic_load_explicit(&h->stopping, memory_order_acquire) ||
        atomic_load_explicit(&slot->doomed, memory_order_acquire))
        return 0;
    uint64_t off;
    while ((off = mc__ring_pop(h)) != 0) {
        *took = true;
        mc_task *t = mc__task_at(h, off);
        if (mc__task_state(t) == MC_TS_PENDING) {
            mc__txn_store(h, &slot->task_off, off);
            return off;
        }
        mc__task_unref(h, off); /* cancelled while queued: drop the queue's reference */
        mc__txn_commit(h);
    }
    return 0;
}

static void become_ready(mc_header *h, mc_worker_slot *slot, uint32_t state)
{
    atomic_store_explicit(&slot->state, state, memory_order_release);
    bool replacement = atomic_load_explicit(&slot->respawns, memory_order_relaxed) > 0;
    if (state == MC_WS_INIT_FAILED && !replacement)
        atomic_store_explicit(&h->init_failed, 1, memory_order_release);
    if (state == MC_WS_READY) {
        /* A replacement that finally started: the slot is healthy again. */
        atomic_store_explicit(&slot->start_failures, 0, memory_order_relaxed);
        if (atomic_exchange(&slot->failing, 0))
            atomic_fetch_sub_explicit(&h->workers_failing, 1, memory_order_acq_rel);
    }
    mc__futex_bump_wake(&h->ready_seq, INT_MAX);
}

/* A slot's counters have one writer, the worker alive in the slot (a
   replacement starts only after the zygote has reaped the last one): a
   relaxed load and store, no locked instruction on the way to
   publishing a result. Readers (mc_pool_get_stats) see each whole. */
static inline void counter_add(_Atomic uint64_t *counter, uint64_t n)
{
    atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

_Noreturn void mc__worker_main(mc_header *h, int index, const mc_pool_options *opts,
                              const sigset_t *orig_mask)
{
    /* Die with the zygote; and if it is already gone, do not start. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != h->zygote_pid)
        _exit(MC_EXIT_ZYGOTE_GONE);

    g_worker_index = index;
    g_hdr = h;
    g_slot = mc__slot(h, (uint32_t)index);
    mc_worker_slot *slot = g_slot;
    g_worker_pid = getpid();
    mc__clock_init(&g_clock, h->clock_tsc != 0);
    atomic_store_explicit(&slot->pid, (int32_t)g_worker_pid, memory_order_release);

    if (opts->after_fork_child)
        opts->after_fork_child(opts->fork_hook_arg, MC_ROLE_WORKER);
    sigprocmask(SIG_SETMASK, orig_mask, NULL);

    if (opts->worker_init && opts->worker_init(index, opts->worker_init_arg) != 0) {
        become_ready(h, slot, MC_WS_INIT_FAILED);
        _exit(MC_EXIT_INIT_FAILED);
    }
    become_ready(h, slot, MC_WS_READY);

    bool published = false;
    /* max_tasks_per_worker: this process's tasks so far (a replacement
       starts again at 0; the slot's tasks_done does not). */
    uint64_t ran = 0, limit = opts->max_tasks_per_worker;
    int64_t spin_mark = 0; /* from mc__claim_spin, until we have looked at the ring */
    uint64_t handed = 0;   /* a task a caller handed over (handoff.c) */
    bool spun = false;     /* a hand-off spin just ran out: sleep without another */
    for (;;) {
        uint64_t off = handed;
        bool was_handed = handed != 0;
        handed = 0;
        if (!off) {
            bool took, retire = limit && ran >= limit;
            if (mc__lock(h) != MC_OK)
                _exit(MC_EXIT_LOCK_FAILED);
            off = finish_and_take(h, slot, published, retire, &took);
            mc__unlock(h);
            if (spin_mark && off) {
                mc__release_spin(h, spin_mark); /* no spinner: we run a task */
                spin_mark = 0;
            }
            if (retire) {
                /* The last task is released: leave as at a stop, but tell the
                   zygote first that this exit is a retirement, not a death. */
                atomic_fetch_add_explicit(&slot->retirements, 1, memory_order_relaxed);
                atomic_store_explicit(&slot->state, MC_WS_RETIRED, memory_order_release);
                break;
            }
            if (took) {
                mc__wake_space(h);
                /* Idle workers do not all spin (queue.c): a burst of tasks
                   queued while one spun is spread by waking the next. */
                if (off && mc__ring_has_work(h))
                    mc__wake_for_task(h);
            }
            if (!off) {
                if (atomic_load_explicit(&slot->doomed, memory_order_acquire))
                    _exit(MC_EXIT_CANCELLED); /* the zygote's SIGKILL is on its way */
                if (atomic_load_explicit(&h->stopping, memory_order_acquire))
                    break;
                mc__wait_for_work(h, spin_mark, !spun);
                spin_mark = 0;
                spun = false;
                published = false;
                continue;
            }
        }

        mc_task *t = mc__task_at(h, off);
        uint64_t fn_word, arg_len, end; /* end: of the record's block */
        if (was_handed) {
            /* From the slot's line, where the go came: the record's line
               is fetched meanwhile, for the outcome written into it. */
            __builtin_prefetch(t, 1, 3);
            fn_word = slot->go_fn;
            arg_len = slot->go_arg_len;
            end = slot->go_block_end;
            MC_ASSERT(fn_word == t->fn && arg_len == t->arg_len &&
                      end == off + mc__arena_block_size(h, off));
        } else {
            fn_word = t->fn;
            arg_len = t->arg_len;
            end = off + mc__arena_block_size(h, off);
        }
        mc_task_fn fn = (mc_task_fn)(uintptr_t)fn_word;
        mc_task_ctx ctx = {.h = h, .slot = slot, .task = t};
        /* The room after the arguments, if the record's own block has any. */
        ctx.inline_off = MC_ALIGN_UP(off + mc__record_size(arg_len), 8);
        ctx.inline_cap = ctx.inline_off <= end ? end - ctx.inline_off : 0;
        int64_t began = mc__clock_now(&g_clock);
        int code = fn(mc__record_data(t, arg_len), (size_t)arg_len, &ctx);
        int64_t ended = mc__clock_now(&g_clock);
        uint64_t result_len = ctx.result_len; /* 0 unless a result is set */
        /* Before the caller can see the result: from here until we have
           looked at the ring, we are the spinner (queue.c). A caller
           that submits its next task at once then wakes nobody for it (it
           used to race us to the lock, see no spinner, and wake a second
           worker that took the CPU from us). Not before retiring. */
        if (!(limit && ran + 1 >= limit))
            spin_mark = mc__claim_spin(h, ended);
        /* The counters before the result: a caller that has seen it
           (publish's release, its acquire) reads stats that count it. */
        counter_add(&slot->busy_ns, ended > began ? (uint64_t)(ended - began) : 0);
        counter_add(&slot->bytes_out, result_len);
        counter_add(&slot->tasks_done, 1);
        published = publish(h, &ctx, code);
        ran++;
        /* The spinner, with a published result: wait for the next task
           without taking the lock (handoff.c); the caller that hands it
           over releases this one. A cancelled task (not published) goes
           the lock's way, which frees its result. */
        if (published && spin_mark) {
            handed = mc__handoff_wait(h, slot, (uint32_t)index, spin_mark, &spun);
            spin_mark = 0; /* given back by the spin */
            if (handed && mc__ring_has_work(h))
                mc__wake_for_task(h); /* as when taking one from the ring */
        }
    }

    if (opts->worker_exit)
        opts->worker_exit(index, opts->worker_exit_arg);
    _exit(0);
}

void mc__recover_worker(mc_header *h, mc_worker_slot *slot, pid_t pid, int wstatus)
{
    MC_ASSERT_LOCKED(h);
    mc__handoff_reset(slot); /* a go after this fails (handoff.c) */
    mc__release_worker_holds(h, slot);
    bool published = false;
    if (slot->task_off) {
        mc_task *t = mc__task_at(h, slot->task_off);
        uint32_t state = mc__task_state(t);
        if (state == MC_TS_PENDING) {
            t->result_off = 0;
            t->result_len = 0;
            t->out.task_code = 0;
            t->out.term_signal = (int16_t)(WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);
            t->out.exit_status = (int16_t)(WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 0);
            t->worker_pid = (int32_t)pid;
            mc__task_finish(h, t, MC_TS_FAILED);
        }
        published = state == MC_TS_DONE;
    }
    mc__slot_release_task(h, slot, published);
}
