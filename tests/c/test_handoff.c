/*
 * test_handoff.c — a task handed to the worker spinning for work, past
 * the ring (src/handoff.c), and what happens when that worker dies.
 *
 * The order is forced by freezing the worker with SIGSTOP while its
 * hand-off is armed (its slot's word reads SPIN after the stop): the
 * worker cannot disarm, so the next submit must hand its task over. Getting there
 * may take a few tries (the worker disarms when its spin runs out), which
 * are setup, not assertions.
 *
 * Covers: a submit to an armed worker goes past the ring into the slot,
 * and runs once the worker goes on; a worker killed while armed is
 * recovered (its finished task released, its hand-off disarmed) and the
 * next task goes to its replacement; a worker killed after a task was
 * handed to it fails exactly that task; the worker handed a task runs it
 * while the caller still holds the lock; a go that lost the word (the
 * worker disarmed or armed again) changes nothing.
 */
#include "harness.h"
#include "../../src/internal.h"

#include <signal.h>

static int echo_task(const void *arg, size_t len, mc_task_ctx *ctx)
{
    return mc_result_set(ctx, arg, len);
}

static uint32_t ho_state(const mc_worker_slot *s)
{
    return atomic_load(&s->handoff) & MC_HO_STATE;
}

/* Waits until /proc says pid is stopped (T) or `seconds` pass. */
static bool wait_stopped(pid_t pid, double seconds)
{
    double t0 = mc_t_now();
    while (mc_t_now() - t0 < seconds) {
        char state = '?';
        if (mc_t_proc_stat(pid, &state, NULL, NULL) == 0 && (state == 'T' || state == 't'))
            return true;
        mc_t_sleep_ms(1);
    }
    return false;
}

/* One round trip through group g (reused: its tasks keep their records),
   checked. */
static void round_trip(mc_group *g, int value)
{
    size_t i = mc_group_size(g);
    CHECK_OK(mc_submit(g, echo_task, &value, sizeof value, 5));
    CHECK_OK(mc_group_wait_one(g, i, 30));
    mc_result r;
    CHECK_OK(mc_group_result(g, i, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK(r.len == sizeof value && *(const int *)r.data == value);
}

/* Runs tasks on a one-worker pool until its worker is stopped with its
   hand-off armed; returns its pid (0 after `tries`). */
static pid_t freeze_armed(mc_pool *pool, mc_group *g, int tries)
{
    mc_worker_slot *slot = mc__slot(pool->hdr, 0);
    for (int i = 0; i < tries; i++) {
        pid_t pid;
        if (mc_pool_worker_pids(pool, &pid, 1) != 1)
            return 0;
        round_trip(g, i);
        /* it arms right after publishing; catch it before its spin ends */
        for (int k = 0; k < 100000 && ho_state(slot) != MC_HO_SPIN; k++)
            mc__cpu_relax();
        if (ho_state(slot) != MC_HO_SPIN)
            continue;
        kill(pid, SIGSTOP);
        if (!wait_stopped(pid, 10))
            return 0;
        if (ho_state(slot) == MC_HO_SPIN)
            return pid; /* stopped before it could disarm */
        kill(pid, SIGCONT);
    }
    return 0;
}

/* A one-worker pool whose worker is stopped with its hand-off armed. */
typedef struct {
    mc_t_snapshot before;
    mc_pool *pool;
    mc_header *h;
    mc_worker_slot *slot;
    uint64_t idle; /* shared memory in use with no task */
    mc_group *g;
    pid_t pid;     /* the frozen worker; 0 if setup failed */
    uint32_t armed;     /* its hand-off word as it froze (SPIN) */
    uint64_t finished;  /* the task it finished and still holds */
} frozen;

static void frozen_start(frozen *f)
{
    memset(f, 0, sizeof *f);
    mc_t_snap(&f->before);
    REQUIRE_OK(mc_t_start(&f->pool, 1));
    REQUIRE_OK(mc_pool_wait_ready(f->pool, 30));
    f->h = f->pool->hdr;
    f->slot = mc__slot(f->h, 0);
    f->idle = mc_t_shm_in_use(f->pool);
    REQUIRE_OK(mc_group_create(f->pool, &f->g));
    f->pid = freeze_armed(f->pool, f->g, 10000);
    f->armed = atomic_load(&f->slot->handoff);
    f->finished = f->slot->task_off;
}

/* One more task, then every record released (by the callers that handed
   tasks over, by the workers) and nothing of the pool left. */
static void frozen_finish(frozen *f)
{
    round_trip(f->g, 1);
    mc_group_destroy(f->g);
    CHECK(mc_t_shm_settles_at(f->pool, f->idle));
    CHECK_OK(mc_pool_stop(f->pool));
    CHECK_NOTHING_LEFT(&f->before);
}

TEST(a_task_goes_to_the_armed_worker_past_the_ring)
{
    frozen f;
    frozen_start(&f);
    REQUIRE(f.pid > 0);
    mc_header *h = f.h;
    mc_worker_slot *slot = f.slot;
    uint32_t armed = f.armed;
    uint64_t finished = f.finished, tail = h->ring_tail;
    CHECK(finished != 0);
    CHECK_EQ_INT(atomic_load(&h->handoff_slot), 1);

    int value = 4242;
    CHECK_OK(mc_submit(f.g, echo_task, &value, sizeof value, 5));
    size_t last = mc_group_size(f.g) - 1;
    /* Handed over while the worker is frozen: not in the ring, in the
       slot, let go (GO) within the generation the worker armed. */
    CHECK_EQ_INT(h->ring_tail, tail);
    CHECK(slot->task_off != finished);
    CHECK_EQ_INT(ho_state(slot), MC_HO_GO);
    CHECK_EQ_INT(atomic_load(&slot->handoff) >> MC_HO_GEN_SHIFT, armed >> MC_HO_GEN_SHIFT);
    CHECK_EQ_INT(mc__task_state(mc__task_at(h, slot->task_off)), MC_TS_PENDING);
    CHECK_EQ_INT(mc__task_state(mc__task_at(h, finished)), MC_TS_DONE);

    kill(f.pid, SIGCONT);
    CHECK_OK(mc_group_wait_one(f.g, last, 30));
    mc_result r;
    CHECK_OK(mc_group_result(f.g, last, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_EQ_INT(r.worker_pid, f.pid);
    CHECK(r.len == sizeof value && *(const int *)r.data == value);
    frozen_finish(&f);
}

TEST(a_worker_killed_while_armed_is_recovered)
{
    frozen f;
    frozen_start(&f);
    REQUIRE(f.pid > 0);
    kill(f.pid, SIGKILL);
    double t0 = mc_t_now();
    pid_t now = f.pid;
    while ((mc_pool_worker_pids(f.pool, &now, 1) != 1 || now == f.pid) && mc_t_now() - t0 < 30)
        mc_t_sleep_ms(1);
    CHECK(now != f.pid);
    /* The zygote disarmed the dead worker's hand-off under the lock and
       released the finished task it held. */
    CHECK(ho_state(f.slot) != MC_HO_SPIN);

    round_trip(f.g, 99); /* to the replacement */
    mc_result r;
    CHECK_OK(mc_group_result(f.g, mc_group_size(f.g) - 1, &r));
    CHECK_EQ_INT(r.worker_pid, now);
    for (size_t i = 0; i + 1 < mc_group_size(f.g); i++) { /* no earlier result lost */
        CHECK_OK(mc_group_result(f.g, i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
    }
    frozen_finish(&f);
}

TEST(a_worker_killed_with_a_task_handed_to_it_fails_that_task)
{
    frozen f;
    frozen_start(&f);
    REQUIRE(f.pid > 0);
    int value = 5;
    CHECK_OK(mc_submit(f.g, echo_task, &value, sizeof value, 5));
    size_t handed = mc_group_size(f.g) - 1;
    CHECK_EQ_INT(ho_state(f.slot), MC_HO_GO);
    kill(f.pid, SIGKILL); /* before it could see the go */
    CHECK_OK(mc_group_wait_one(f.g, handed, 30));
    mc_result r;
    CHECK_OK(mc_group_result(f.g, handed, &r));
    CHECK_EQ_INT(r.status, MC_EWORKERDIED);
    CHECK_EQ_INT(r.term_signal, SIGKILL);
    CHECK_EQ_INT(r.worker_pid, f.pid);
    for (size_t i = 0; i < handed; i++) { /* the ones before it stand */
        CHECK_OK(mc_group_result(f.g, i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
    }
    frozen_finish(&f); /* the replacement takes the next */
}

/* A record made by hand under the lock, as submit_small makes one: PENDING,
   echo_task, `value` as its argument; its only reference is the caller's.
   0 if the arena is full. */
static uint64_t hand_made_record(mc_header *h, int value)
{
    uint64_t off = mc__arena_alloc(h, mc__record_size(sizeof value));
    if (off == 0)
        return 0;
    mc_task *t = mc__task_at(h, off);
    mc__record_init(t, MC_TS_PENDING, sizeof value);
    t->fn = (uint64_t)(uintptr_t)echo_task;
    memcpy(mc__record_data(t, sizeof value), &value, sizeof value);
    return off;
}

/* The go is made inside the caller's critical section: the worker runs
   the task while the caller still holds the lock (its release of the
   finished task and its unlock are off the worker's path). */
TEST(a_handed_worker_runs_before_the_callers_unlock)
{
    frozen f;
    frozen_start(&f);
    REQUIRE(f.pid > 0);
    mc_header *h = f.h;
    REQUIRE_OK(mc__lock(h));
    uint64_t off = hand_made_record(h, 31);
    REQUIRE(off != 0);
    mc_worker_slot *to = mc__handoff_give(h, off);
    REQUIRE(to == f.slot);
    mc_task *t = mc__task_at(h, off);
    CHECK_EQ_INT(ho_state(f.slot), MC_HO_GO);
    CHECK(f.slot->task_off == off);
    CHECK_EQ_INT(t->refs, 2);                                          /* ours + the worker's */
    CHECK_EQ_INT(mc__task_at(h, f.finished)->refs, 1);                 /* the group's only */

    kill(f.pid, SIGCONT); /* still holding the lock */
    double t0 = mc_t_now();
    while (mc__task_state(t) == MC_TS_PENDING && mc_t_now() - t0 < 30)
        mc_t_sleep_ms(1);
    CHECK_EQ_INT(mc__task_state(t), MC_TS_DONE);
    CHECK_EQ_INT(t->worker_pid, f.pid);
    CHECK(t->result_len == sizeof(int) && *(const int *)mc__ptr(h, t->result_off) == 31);
    mc__task_unref(h, off); /* ours; the worker drops its own */
    mc__unlock(h);
    frozen_finish(&f);
}

/* A go whose compare-and-swap fails leaves everything as it was. In the
   engine it fails when the worker disarms between the caller's read of
   the word and its go; here it is forced by naming the word of the
   worker's previous spin, which fails the same compare-and-swap. */
TEST(a_go_that_loses_the_word_changes_nothing)
{
    frozen f;
    frozen_start(&f);
    REQUIRE(f.pid > 0);
    REQUIRE((f.armed & MC_HO_STATE) == MC_HO_SPIN && (f.armed >> MC_HO_GEN_SHIFT) > 0);
    uint32_t stale = f.armed - (1u << MC_HO_GEN_SHIFT);
    uint64_t finished_refs = mc__task_at(f.h, f.finished)->refs;

    REQUIRE_OK(mc__lock(f.h));
    /* As if the finished task's result had gone out of line: the slot
       still names that block (the go clears it, so it must come back). */
    REQUIRE(f.slot->pending_result == 0);
    uint64_t pending = mc__arena_alloc(f.h, 64);
    REQUIRE(pending != 0);
    mc__txn_store(f.h, &f.slot->pending_result, pending);
    uint64_t off = hand_made_record(f.h, 77);
    REQUIRE(off != 0);
    CHECK(!mc__handoff_go(f.h, f.slot, off, stale));
    CHECK_EQ_INT(atomic_load(&f.slot->handoff), f.armed);
    CHECK(f.slot->task_off == f.finished);
    CHECK(f.slot->pending_result == pending);
    CHECK(mc__task_at(f.h, f.finished)->refs == finished_refs); /* not released */
    CHECK_EQ_INT(mc__task_at(f.h, off)->refs, 1);
    mc__txn_store(f.h, &f.slot->pending_result, 0);
    mc__arena_free(f.h, pending);
    mc__task_unref(f.h, off); /* frees it */
    mc__unlock(f.h);

    kill(f.pid, SIGCONT);
    frozen_finish(&f); /* the worker, let go or not, runs the next task */
}
