/*
 * test_spin.c — the one-spinner rule: at most one idle worker spins for
 * work, a submit skips the wake-up system call while it does, and that
 * must never cost parallelism or strand a task.
 *
 * Covers: two tasks submitted together to an idle, hot pool run on two
 * different workers (the spinner takes one and wakes a sleeper for the
 * other), hundreds of times; a task submitted while a spinner's mark is
 * up but that spinner never comes (stopped or killed mid-spin) is still
 * run, because a caller waiting for a result wakes a sleeping worker
 * whenever work stays queued for a slice.
 *
 * And the one-wake-up-in-flight rule (queue.c): a burst of tasks that
 * must all run at once on a pool of sleeping workers gets every worker,
 * through the chain of wake-ups each woken worker passes on; a task
 * submitted while a wake-up's mark is up but its worker never comes is
 * still run, the same way as behind a phantom spinner.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "harness.h"
#include "../../src/internal.h"

#include <sched.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>

/* A rendezvous of `want` tasks, in memory mapped before the pool starts
   (so every worker has it): each arrives, then waits up to 20 s for the
   others. Only tasks running at once, on as many workers, can all meet;
   a task queued behind another on the same worker would find it gone. */
typedef struct {
    uint32_t arrived; /* futex word (__atomic builtins) */
    uint32_t want;
} meeting;

static void meeting_reset(meeting *m, uint32_t want)
{
    __atomic_store_n(&m->want, want, __ATOMIC_SEQ_CST);
    __atomic_store_n(&m->arrived, 0, __ATOMIC_SEQ_CST);
}

/* Wait, outside the engine, up to 10 s for everyone to arrive: a caller
   inside mc_group_wait would nudge a sleeping worker after a slice and
   hide a lost wake-up. */
static bool meeting_complete(meeting *m)
{
    double deadline = mc_t_now() + 10;
    uint32_t n;
    while ((n = __atomic_load_n(&m->arrived, __ATOMIC_SEQ_CST)) < m->want && mc_t_now() < deadline) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        syscall(SYS_futex, &m->arrived, FUTEX_WAIT, n, &ts, NULL, 0);
    }
    return __atomic_load_n(&m->arrived, __ATOMIC_SEQ_CST) >= m->want;
}

static int meet(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)len;
    meeting *m = *(meeting *const *)arg;
    uint32_t want = __atomic_load_n(&m->want, __ATOMIC_SEQ_CST);
    uint32_t n = __atomic_add_fetch(&m->arrived, 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, &m->arrived, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
    double deadline = mc_t_now() + 20;
    while ((n = __atomic_load_n(&m->arrived, __ATOMIC_SEQ_CST)) < want && mc_t_now() < deadline) {
        struct timespec ts = {0, 50 * 1000 * 1000};
        syscall(SYS_futex, &m->arrived, FUTEX_WAIT, n, &ts, NULL, 0);
    }
    int met = __atomic_load_n(&m->arrived, __ATOMIC_SEQ_CST) >= want;
    return mc_result_set(ctx, &met, sizeof met) == MC_OK ? 0 : 1;
}

static int nothing(const void *arg, size_t len, mc_task_ctx *ctx)
{
    (void)arg, (void)len, (void)ctx;
    return 0;
}

TEST(a_pair_of_tasks_runs_on_both_workers)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    meeting *m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    int rounds = mc_t_under_valgrind() ? 20 : 100, met = 0;
    for (int i = 0; i < rounds; i++) {
        meeting_reset(m, 2);
        /* a trivial task first: its worker is then spinning for work */
        mc_group *g;
        REQUIRE_OK(mc_group_create(pool, &g));
        CHECK_OK(mc_submit(g, nothing, NULL, 0, 5));
        CHECK_OK(mc_group_wait(g, 30));
        CHECK_OK(mc_submit(g, meet, &m, sizeof m, 5));
        CHECK_OK(mc_submit(g, meet, &m, sizeof m, 5));
        int seen = meeting_complete(m);
        CHECK_OK(mc_group_wait(g, 60));
        mc_result a, b;
        CHECK_OK(mc_group_result(g, 1, &a));
        CHECK_OK(mc_group_result(g, 2, &b));
        CHECK_EQ_INT(a.status, MC_OK);
        CHECK_EQ_INT(b.status, MC_OK);
        int both = seen && a.len == sizeof(int) && b.len == sizeof(int) && *(const int *)a.data &&
                   *(const int *)b.data;
        CHECK(!both || a.worker_pid != b.worker_pid);
        met += both;
        mc_group_destroy(g);
        if (!both) {
            printf("  round %d: the pair did not meet (a lost wake-up)\n", i);
            break;
        }
    }
    /* The spinner takes one task and must wake a sleeper for the other;
       if that wake-up were lost the pair would run one after the other on
       one worker and never meet. (The order is forced: neither task ends
       before both run, and the caller waits for them up to 10 s without
       nudging, however loaded the machine.) */
    CHECK_EQ_INT(met, rounds);
    CHECK_OK(mc_pool_stop(pool));
    munmap(m, sizeof *m);
    CHECK_NOTHING_LEFT(&before);
}

/* Five tasks, each submitted while `mark` (a spinner's, or a wake-up's)
   says that a worker is on its way who never comes: each still runs,
   through the waiting caller's nudge. */
static void run_behind_a_phantom(bool wake_mark, const char *what)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, 2));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    mc_header *h = pool->hdr;
    _Atomic int64_t *mark = wake_mark ? &h->work_wake_until : &h->work_spin_until;
    double worst = 0;
    for (int i = 0; i < 5; i++) {
        /* both workers counted as sleepers: each either sleeps in the
           wait or is about to look at the ring */
        double until = mc_t_now() + 10;
        while (atomic_load(&h->work_sleepers) < 2 && mc_t_now() < until)
            mc_t_sleep_ms(1);
        REQUIRE(atomic_load(&h->work_sleepers) == 2);
        atomic_store(mark, mc__now_ns() + (int64_t)60 * 1000000000);
        mc_group *g;
        REQUIRE_OK(mc_group_create(pool, &g));
        double t0 = mc_t_now();
        CHECK_OK(mc_submit(g, nothing, NULL, 0, 5)); /* skips the wake-up */
        CHECK_OK(mc_group_wait(g, 10));              /* the wait's nudge wakes one */
        double took = mc_t_now() - t0;
        worst = took > worst ? took : worst;
        mc_result r;
        CHECK_OK(mc_group_result(g, 0, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        if (wake_mark) /* cleared by the worker the nudge woke, on its way back */
            CHECK_EQ_INT(atomic_load(mark), 0);
        atomic_store(mark, 0);
        mc_group_destroy(g);
    }
    printf("  longest wait for a task behind %s: %.1f ms\n", what, worst * 1e3);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&before);
}

/* A spinner that holds the mark but never takes the task (it was stopped
   or killed mid-spin: reproduced here by writing the mark ourselves, as
   stopping a real worker could stop it inside the region lock). */
TEST(a_spinner_that_never_comes_strands_no_task)
{
    run_behind_a_phantom(false, "a phantom spinner");
}

/* Every worker asleep, then as many tasks as workers that can only end
   together: the submits wake one worker (one wake-up in flight), and each
   woken worker, having taken a task, must wake the next for the rest. A
   lost link would leave the meeting one short until its 20 s run out. */
TEST(a_burst_wakes_every_sleeping_worker)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    enum { WORKERS = 12 };
    meeting *m = mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(m != MAP_FAILED);
    mc_pool *pool;
    REQUIRE_OK(mc_t_start(&pool, WORKERS));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30));
    int rounds = mc_t_under_valgrind() ? 3 : 20, met = 0;
    for (int i = 0; i < rounds; i++) {
        meeting_reset(m, WORKERS);
        mc_t_sleep_ms(i % 2 ? 30 : 0); /* every worker asleep, or one still spinning */
        mc_group *g;
        REQUIRE_OK(mc_group_create(pool, &g));
        for (int k = 0; k < WORKERS; k++)
            CHECK_OK(mc_submit(g, meet, &m, sizeof m, 5));
        bool all = meeting_complete(m);
        uint32_t arrived = __atomic_load_n(&m->arrived, __ATOMIC_SEQ_CST);
        CHECK_OK(mc_group_wait(g, 60));
        pid_t pids[WORKERS];
        int distinct = 0;
        for (int k = 0; k < WORKERS; k++) {
            mc_result r;
            CHECK_OK(mc_group_result(g, (size_t)k, &r));
            CHECK_EQ_INT(r.status, MC_OK);
            bool seen = false;
            for (int j = 0; j < distinct; j++)
                seen |= pids[j] == r.worker_pid;
            if (!seen)
                pids[distinct++] = r.worker_pid;
        }
        mc_group_destroy(g);
        if (!all || distinct != WORKERS) {
            printf("  round %d: %u of %d tasks met within 10 s, on %d workers (a lost wake-up)\n", i,
                   arrived, WORKERS, distinct);
            break;
        }
        met++;
    }
    CHECK_EQ_INT(met, rounds);
    CHECK_OK(mc_pool_stop(pool));
    munmap(m, sizeof *m);
    CHECK_NOTHING_LEFT(&before);
}

/* A wake-up whose worker never arrives (killed between being woken and
   looking at the ring: reproduced by writing the mark ourselves) holds
   back no task: the waiting caller's nudge wakes a sleeper. */
TEST(a_wake_up_that_never_arrives_strands_no_task)
{
    run_behind_a_phantom(true, "a wake-up that never came");
}

/* The crowded spinner (MC_SPIN_CROWDED_NS, wait.c): a spinner whose
   yields keep handing the CPU to a partner that spins and yields back
   (two processes waiting for each other on one CPU) sleeps for a moment,
   at most once per MC_SPIN_MOVE_EVERY_NS, so that the scheduler can place
   it on another CPU. First the decision, on yields with made-up times. */
TEST(a_streak_of_crowded_yields_moves_at_most_once_in_a_while)
{
    mc_crowding c;
    memset(&c, 0, sizeof c);
    int64_t t = 1000000000;
    /* yield(d, gap): a yield that took d ns, gap ns after the last one. */
#define YIELD(d, gap) (t += (gap), mc__crowding_note(&c, t - (d), t))
    for (int i = 1; i < MC_SPIN_CROWDED_STREAK; i++)
        CHECK(!YIELD(MC_SPIN_CROWDED_NS, 5000)); /* crowded, not yet a streak */
    CHECK(YIELD(MC_SPIN_CROWDED_NS, 5000));      /* the streak: move */
    int moves = 0;
    for (int i = 0; i < 100; i++)                /* 0.5 ms more: no second move */
        moves += YIELD(3000, 5000);
    CHECK_EQ_INT(moves, 0);
    t += MC_SPIN_MOVE_EVERY_NS;                  /* time is up: the next streak moves */
    for (int i = 1; i < MC_SPIN_CROWDED_STREAK; i++)
        CHECK(!YIELD(3000, 5000));
    CHECK(YIELD(3000, 5000));

    /* One yield that gave nothing away, or a gap, breaks a streak. */
    t += MC_SPIN_MOVE_EVERY_NS;
    for (int i = 1; i < MC_SPIN_CROWDED_STREAK; i++)
        CHECK(!YIELD(3000, 5000));
    CHECK(!YIELD(MC_SPIN_CROWDED_NS - 1, 5000)); /* alone for a moment */
    for (int i = 1; i < MC_SPIN_CROWDED_STREAK; i++)
        CHECK(!YIELD(3000, 5000));
    CHECK(!YIELD(3000, MC_SPIN_CROWDED_GAP_NS)); /* too long after the last: */
    for (int i = 2; i < MC_SPIN_CROWDED_STREAK; i++) /* it starts a new streak */
        CHECK(!YIELD(3000, 5000));
    CHECK(YIELD(3000, 5000));
#undef YIELD
}

/* Then for real: this process and a child that spins 3 us and yields,
   both pinned to one CPU. The move is a sleep: a voluntary context switch
   (a yield that switches counts as an involuntary one). The counts are
   bounds, whatever else runs on that CPU. */
static long voluntary_switches(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_nvcsw;
}

TEST(a_spinner_sharing_its_cpu_moves)
{
    mc_t_snapshot before;
    mc_t_snap(&before);
    cpu_set_t here, saved;
    REQUIRE(sched_getaffinity(0, sizeof saved, &saved) == 0);
    int cpu = sched_getcpu();
    REQUIRE(cpu >= 0);
    CPU_ZERO(&here);
    CPU_SET(cpu, &here);
    REQUIRE(sched_setaffinity(0, sizeof here, &here) == 0);

    pid_t child = fork();
    REQUIRE(child >= 0);
    if (child == 0) { /* the partner: spin 3 us, yield, for at most 20 s */
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* and not a moment past this test */
        if (getppid() == 1)
            _exit(0);
        int64_t end = mc__now_ns() + 20000000000;
        for (int64_t t = mc__now_ns(); t < end; t = mc__now_ns()) {
            while (mc__now_ns() - t < 3000)
                ;
            sched_yield();
        }
        _exit(0);
    }
    struct timespec settle = {0, 20 * 1000 * 1000}; /* the child is running */
    nanosleep(&settle, NULL);

    /* Up to 10 s: a third process on this CPU (another test, under
       ctest -j) gets a whole slice at a yield, which breaks the streak;
       the partner and we alone for 8 yields (40 us) end it. */
    long v0 = voluntary_switches();
    int64_t t0 = mc__now_ns();
    int crowded = 0, n = 0;
    while (voluntary_switches() == v0 && mc__now_ns() - t0 < 10000000000) {
        int64_t before = mc__now_ns(), now = before;
        mc__spin_yield(&now);
        crowded += now - before >= MC_SPIN_CROWDED_NS;
        n++;
    }
    printf("  moved after %d yields (%d crowded)\n", n, crowded);
    CHECK(voluntary_switches() > v0);
    CHECK(n >= MC_SPIN_CROWDED_STREAK && crowded >= MC_SPIN_CROWDED_STREAK);
    /* Then 3 move periods of yields: at most one move per period (one
       more for a stray sleep, a major page fault say). */
    long v1 = voluntary_switches();
    int64_t t1 = mc__now_ns();
    while (mc__now_ns() - t1 < 3 * MC_SPIN_MOVE_EVERY_NS) {
        int64_t now = mc__now_ns();
        mc__spin_yield(&now);
    }
    long moves = voluntary_switches() - v1;
    printf("  %ld moves in %d ms (%.1f ms after the first)\n", moves, 3 * MC_SPIN_MOVE_EVERY_NS / 1000000,
           (t1 - t0) / 1e6);
    CHECK(moves <= 4);

    kill(child, SIGKILL);
    int status;
    CHECK_EQ_INT(waitpid(child, &status, 0), child);
    REQUIRE(sched_setaffinity(0, sizeof saved, &saved) == 0);
    CHECK_NOTHING_LEFT(&before);
}
