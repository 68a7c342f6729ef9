/* test_idle.c — no polling: an idle pool and a waiting caller use no CPU. */
#include "harness.h"

#include <pthread.h>
#include <sys/resource.h>
#include <time.h>

static int task_sleep_ms(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)ctx;
    if (arg_len == sizeof(int))
        mc_t_sleep_ms(*(const int *)arg);
    return 0;
}

/* Tasks that hold their workers until the test lets them go: mapped
   before the pool starts, so every worker has it. */
typedef struct {
    mc_t_gate go;
    uint32_t started; /* __atomic builtins */
} holders;
static holders *g_hold;

static int task_hold(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg, (void)arg_len, (void)ctx;
    __atomic_add_fetch(&g_hold->started, 1, __ATOMIC_SEQ_CST);
    return mc_t_gate_wait(&g_hold->go, 120) == 0 ? 0 : 1;
}

static void *open_after_300ms(void *arg)
{
    mc_t_sleep_ms(300);
    mc_t_gate_open(arg);
    return NULL;
}

static int task_square(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    if (arg_len != sizeof(int))
        return 99;
    int v = *(const int *)arg;
    v *= v;
    return mc_result_set(ctx, &v, sizeof v) == MC_OK ? 0 : 1;
}

TEST(test_idle_pool_uses_no_cpu)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    int x = 12;
    CHECK_OK(mc_submit(g, task_square, &x, sizeof x, 10));
    CHECK_OK(mc_group_wait(g, 30));
    mc_result r;
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK(r.status == MC_OK && r.len == sizeof(int) && *(const int *)r.data == 144);
    mc_group_destroy(g);

    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    REQUIRE(pp.n == 2);
    /* let any brief spinning after the task end settle (the measured idle
       period is what follows) */
    mc_t_sleep_ms(100);

    /* The pool's processes are read from /proc in clock ticks; the caller
       itself is measured exactly, around the idle sleep alone, so the cost
       of reading /proc (large under valgrind) is not counted as the pool's.
       CLOCK_PROCESS_CPUTIME_ID counts every thread of the caller, so a
       polling thread the library started would show. */
    enum { P = 3 }; /* zygote, 2 workers */
    pid_t pids[P] = {pp.zygote, pp.workers[0], pp.workers[1]};
    const char *names[P] = {"zygote", "worker", "worker"};
    long long before[P], after[P], sw_before[P], sw_after[P];
    for (int i = 0; i < P; i++) {
        before[i] = mc_t_proc_cpu_ticks(pids[i]);
        sw_before[i] = mc_t_proc_ctxt_switches(pids[i]);
    }
    struct timespec c0, c1;
    struct rusage u0, u1;
    getrusage(RUSAGE_SELF, &u0);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    mc_t_sleep_ms(1500);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    getrusage(RUSAGE_SELF, &u1);
    for (int i = 0; i < P; i++) {
        after[i] = mc_t_proc_cpu_ticks(pids[i]);
        sw_after[i] = mc_t_proc_ctxt_switches(pids[i]);
    }
    for (int i = 0; i < P; i++) {
        printf("  %s %d: %lld ticks, %lld context switches over 1.5 s idle\n", names[i],
               (int)pids[i], after[i] - before[i], sw_after[i] - sw_before[i]);
        CHECK(before[i] >= 0 && after[i] >= 0);
        CHECK(after[i] - before[i] <= 1);
        /* no polling: the pool's processes do not even wake up (a poll of
           any period under ~1 s would show here) */
        CHECK(sw_after[i] - sw_before[i] <= 1);
    }
    double caller_ms = (double)(c1.tv_sec - c0.tv_sec) * 1e3 + (double)(c1.tv_nsec - c0.tv_nsec) / 1e6;
    long caller_sw = u1.ru_nvcsw - u0.ru_nvcsw;
    printf("  caller %d: %.3f ms CPU, %ld voluntary context switches over 1.5 s idle"
           " (all its threads)\n", (int)getpid(), caller_ms, caller_sw);
    /* the sleep itself is one switch; a thread of the library that polled
       would add one per period. CPU: one sleep costs microseconds natively,
       about a millisecond under valgrind. */
    CHECK(caller_sw <= 2);
    CHECK(caller_ms < 10.0);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_waiting_caller_does_not_spin)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool_options o;
    g_hold = mmap(NULL, sizeof *g_hold, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    REQUIRE(g_hold != MAP_FAILED);
    mc_pool_options_init(&o);
    o.workers = 2;
    o.queue_capacity = 2;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    /* both workers held until the gate opens (the order is forced: the
       queue is filled only once both hold a task, so no room can appear) */
    CHECK_OK(mc_submit(g, task_hold, NULL, 0, 10));
    CHECK_OK(mc_submit(g, task_hold, NULL, 0, 10));
    for (double end = mc_t_now() + 60; __atomic_load_n(&g_hold->started, __ATOMIC_SEQ_CST) < 2 &&
                                       mc_t_now() < end;)
        mc_t_sleep_ms(1);
    REQUIRE(__atomic_load_n(&g_hold->started, __ATOMIC_SEQ_CST) == 2);

    /* a timed group wait that times out */
    double c0 = mc_t_thread_cpu(), t0 = mc_t_now();
    CHECK_RC(mc_group_wait(g, 0.3), MC_ETIMEDOUT);
    double cpu = mc_t_thread_cpu() - c0, wall = mc_t_now() - t0;
    printf("  group_wait(0.3): %.1f ms CPU over %.1f ms\n", cpu * 1e3, wall * 1e3);
    CHECK(wall >= 0.29);
    CHECK(cpu < 0.030);

    /* wait_one likewise */
    c0 = mc_t_thread_cpu();
    CHECK_RC(mc_group_wait_one(g, 1, 0.3), MC_ETIMEDOUT);
    cpu = mc_t_thread_cpu() - c0;
    printf("  group_wait_one(0.3): %.1f ms CPU\n", cpu * 1e3);
    CHECK(cpu < 0.030);

    /* a submit blocked on a full queue (2 running, 2 queued) */
    int zero = 0;
    int queued = 0, rc;
    while ((rc = mc_submit(g, task_sleep_ms, &zero, sizeof zero, 0)) == MC_OK && queued < 10)
        queued++;
    CHECK_RC(rc, MC_ETIMEDOUT);
    c0 = mc_t_thread_cpu();
    t0 = mc_t_now();
    CHECK_RC(mc_submit(g, task_sleep_ms, &zero, sizeof zero, 0.3), MC_ETIMEDOUT);
    cpu = mc_t_thread_cpu() - c0;
    wall = mc_t_now() - t0;
    printf("  blocked submit (0.3): %.1f ms CPU over %.1f ms (%d queued)\n", cpu * 1e3,
           wall * 1e3, queued);
    CHECK(wall >= 0.29);
    CHECK(cpu < 0.030);

    /* an untimed wait until the tasks end: a thread opens the gate in
       0.3 s (its CPU is not this thread's) */
    pthread_t opener;
    REQUIRE(pthread_create(&opener, NULL, open_after_300ms, &g_hold->go) == 0);
    c0 = mc_t_thread_cpu();
    t0 = mc_t_now();
    CHECK_OK(mc_group_wait(g, -1));
    cpu = mc_t_thread_cpu() - c0;
    wall = mc_t_now() - t0;
    pthread_join(opener, NULL);
    printf("  group_wait(-1): %.1f ms CPU over %.1f ms\n", cpu * 1e3, wall * 1e3);
    CHECK(wall >= 0.29);
    CHECK(cpu < 0.030);
    mc_result r;
    CHECK_OK(mc_group_result(g, 0, &r));
    CHECK(r.status == MC_OK);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    munmap(g_hold, sizeof *g_hold);
    g_hold = NULL;
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_idle_worker_beside_busy_one)
{
    /* one worker sleeps in a long task; the other, with nothing to do, must
       not spin waiting for work */
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    REQUIRE(pp.n == 2);
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    int ms = 1400;
    CHECK_OK(mc_submit(g, task_sleep_ms, &ms, sizeof ms, 10));
    CHECK_RC(mc_group_wait(g, 0.1), MC_ETIMEDOUT); /* the task gets picked up */
    long long b0 = mc_t_proc_cpu_ticks(pp.workers[0]), b1 = mc_t_proc_cpu_ticks(pp.workers[1]);
    long long bz = mc_t_proc_cpu_ticks(pp.zygote);
    long long s0 = mc_t_proc_ctxt_switches(pp.workers[0]);
    long long s1 = mc_t_proc_ctxt_switches(pp.workers[1]);
    long long sz = mc_t_proc_ctxt_switches(pp.zygote);
    CHECK_RC(mc_group_wait(g, 1.0), MC_ETIMEDOUT);
    long long a0 = mc_t_proc_cpu_ticks(pp.workers[0]), a1 = mc_t_proc_cpu_ticks(pp.workers[1]);
    long long az = mc_t_proc_cpu_ticks(pp.zygote);
    long long e0 = mc_t_proc_ctxt_switches(pp.workers[0]) - s0;
    long long e1 = mc_t_proc_ctxt_switches(pp.workers[1]) - s1;
    long long ez = mc_t_proc_ctxt_switches(pp.zygote) - sz;
    printf("  over 1 s: worker ticks %lld and %lld, zygote %lld; context switches %lld, %lld, %lld\n",
           a0 - b0, a1 - b1, az - bz, e0, e1, ez);
    CHECK(a0 - b0 <= 1);
    CHECK(a1 - b1 <= 1);
    CHECK(az - bz <= 1);
    /* the busy worker sleeps in its task, the idle one on a futex */
    CHECK(e0 <= 1);
    CHECK(e1 <= 1);
    CHECK(ez <= 1);
    CHECK_OK(mc_group_wait(g, 30));
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}
