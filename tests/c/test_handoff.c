/*
 * test_handoff.c — a task handed to the worker spinning for work, past
 * the ring (src/handoff.c), and what happens when that worker dies.
 *
 * The order is forced by freezing the worker with SIGSTOP while its
 * hand-off is armed (its slot's word reads SPIN after the stop): the
 * worker cannot disarm, so the next submit must claim it. Getting there
 * may take a few tries (the worker disarms when its spin runs out), which
 * are setup, not assertions.
 *
 * Covers: a submit to an armed worker goes past the ring into the slot,
 * and runs once the worker goes on; a worker killed while armed is
 * recovered (its finished task released, its hand-off disarmed) and the
 * next task goes to its replacement; a worker killed after a task was
 * handed to it fails exactly that task; a worker that found itself
 * claimed sleeps on its word until the caller lets it go, and wakes.
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

TEST(a_task_goes_to_the_armed_worker_past_the_ring)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 1));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    mc_header *h = pool->hdr;
    mc_worker_slot *slot = mc__slot(h, 0);
    uint64_t idle = mc_t_shm_in_use(pool);
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));

    pid_t pid = freeze_armed(pool, g, 10000);
    REQUIRE(pid > 0);
    uint32_t armed = atomic_load(&slot->handoff);
    uint64_t finished = slot->task_off, tail = h->ring_tail;
    CHECK(finished != 0);
    CHECK_EQ_INT(atomic_load(&h->handoff_slot), 1);

    int value = 4242;
    CHECK_OK(mc_submit(g, echo_task, &value, sizeof value, 5));
    size_t last = mc_group_size(g) - 1;
    /* Handed over while the worker is frozen: not in the ring, in the
       slot, let go (GO) within the generation the worker armed. */
    CHECK_EQ_INT(h->ring_tail, tail);
    CHECK(slot->task_off != finished);
    CHECK_EQ_INT(ho_state(slot), MC_HO_GO);
    CHECK_EQ_INT(atomic_load(&slot->handoff) >> MC_HO_GEN_SHIFT, armed >> MC_HO_GEN_SHIFT);
    CHECK_EQ_INT(mc__task_state(mc__task_at(h, slot->task_off)), MC_TS_PENDING);
    CHECK_EQ_INT(mc__task_state(mc__task_at(h, finished)), MC_TS_DONE);

    kill(pid, SIGCONT);
    CHECK_OK(mc_group_wait_one(g, last, 30));
    mc_result r;
    CHECK_OK(mc_group_result(g, last, &r));
    CHECK_EQ_INT(r.status, MC_OK);
    CHECK_EQ_INT(r.worker_pid, pid);
    CHECK(r.len == sizeof value && *(const int *)r.data == value);
    round_trip(g, 7); /* and on as usual */

    mc_group_destroy(g);
    /* every record released: by the caller that handed over, by the worker */
    CHECK(mc_t_shm_settles_at(pool, idle));
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}

TEST(a_worker_killed_while_armed_is_recovered)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 1));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    mc_header *h = pool->hdr;
    mc_worker_slot *slot = mc__slot(h, 0);
    uint64_t idle = mc_t_shm_in_use(pool);
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));

    pid_t pid = freeze_armed(pool, g, 10000);
    REQUIRE(pid > 0);
    kill(pid, SIGKILL);
    double t0 = mc_t_now();
    pid_t now = pid;
    while ((mc_pool_worker_pids(pool, &now, 1) != 1 || now == pid) && mc_t_now() - t0 < 30)
        mc_t_sleep_ms(1);
    CHECK(now != pid);
    /* The zygote disarmed the dead worker's hand-off under the lock and
       released the finished task it held. */
    CHECK(ho_state(slot) != MC_HO_SPIN && ho_state(slot) != MC_HO_CLAIMED);

    round_trip(g, 99); /* to the replacement */
    mc_result r;
    CHECK_OK(mc_group_result(g, mc_group_size(g) - 1, &r));
    CHECK_EQ_INT(r.worker_pid, now);
    for (size_t i = 0; i + 1 < mc_group_size(g); i++) { /* no earlier result lost */
        CHECK_OK(mc_group_result(g, i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
    }
    mc_group_destroy(g);
    CHECK(mc_t_shm_settles_at(pool, idle));
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}

TEST(a_worker_killed_with_a_task_handed_to_it_fails_that_task)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 1));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    mc_worker_slot *slot = mc__slot(pool->hdr, 0);
    uint64_t idle = mc_t_shm_in_use(pool);
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));

    pid_t pid = freeze_armed(pool, g, 10000);
    REQUIRE(pid > 0);
    int value = 5;
    CHECK_OK(mc_submit(g, echo_task, &value, sizeof value, 5));
    size_t handed = mc_group_size(g) - 1;
    CHECK_EQ_INT(ho_state(slot), MC_HO_GO);
    kill(pid, SIGKILL); /* before it could see the go */
    CHECK_OK(mc_group_wait_one(g, handed, 30));
    mc_result r;
    CHECK_OK(mc_group_result(g, handed, &r));
    CHECK_EQ_INT(r.status, MC_EWORKERDIED);
    CHECK_EQ_INT(r.term_signal, SIGKILL);
    CHECK_EQ_INT(r.worker_pid, pid);
    for (size_t i = 0; i < handed; i++) { /* the ones before it stand */
        CHECK_OK(mc_group_result(g, i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
    }
    round_trip(g, 6); /* the replacement takes the next */
    mc_group_destroy(g);
    CHECK(mc_t_shm_settles_at(pool, idle));
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}

/* The claim and the go, done by hand around the moment the worker gives
   up spinning: it must find itself claimed, sleep on the word (its WAITER
   bit), and run the task once let go. */
TEST(a_claimed_worker_sleeps_until_the_go)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 1));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    mc_header *h = pool->hdr;
    mc_worker_slot *slot = mc__slot(h, 0);
    uint64_t idle = mc_t_shm_in_use(pool);
    mc_group *g;
    REQUIRE_OK(mc_group_create(pool, &g));

    pid_t pid = freeze_armed(pool, g, 10000);
    REQUIRE(pid > 0);
    int value = 31;
    REQUIRE_OK(mc__lock(h));
    uint64_t off = mc__arena_alloc(h, mc__record_size(sizeof value));
    REQUIRE(off != 0);
    mc_task *t = mc__task_at(h, off);
    mc__record_init(t, MC_TS_PENDING, sizeof value);
    t->fn = (uint64_t)(uintptr_t)echo_task;
    memcpy(mc__record_data(t, sizeof value), &value, sizeof value);
    uint32_t claim = 0;
    mc_worker_slot *to = mc__handoff_give(h, off, &claim);
    mc__unlock(h);
    REQUIRE(to == slot);
    CHECK_EQ_INT(claim & MC_HO_STATE, MC_HO_CLAIMED);

    kill(pid, SIGCONT);
    double t0 = mc_t_now();
    while (!(atomic_load(&slot->handoff) & MC_HO_WAITER) && mc_t_now() - t0 < 30)
        mc_t_sleep_ms(1);
    CHECK(atomic_load(&slot->handoff) & MC_HO_WAITER);
    CHECK_EQ_INT(mc__task_state(t), MC_TS_PENDING); /* it has not run it */

    mc__handoff_go(slot, claim);
    t0 = mc_t_now();
    while (mc__task_state(t) == MC_TS_PENDING && mc_t_now() - t0 < 30)
        mc_t_sleep_ms(1);
    CHECK_EQ_INT(mc__task_state(t), MC_TS_DONE);
    CHECK_EQ_INT(t->worker_pid, pid);
    CHECK(t->result_len == sizeof value && memcmp(mc__ptr(h, t->result_off), &value, sizeof value) == 0);
    REQUIRE_OK(mc__lock(h));
    mc__task_unref(h, off); /* ours; the worker drops its own */
    mc__unlock(h);

    round_trip(g, 1);
    mc_group_destroy(g);
    CHECK(mc_t_shm_settles_at(pool, idle));
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}

