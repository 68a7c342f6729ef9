/* test_recycle.c — max_tasks_per_worker: a worker retires after N tasks and
   the zygote replaces it, without failing anything. */
#include "harness.h"

#include <fcntl.h>

/* The write end of a pipe the workers report to: 'i' from worker_init and
   'e' from worker_exit, one byte each (atomic pipe writes). */
static int g_report_fd = -1;

static int report_init(int worker_index, void *arg)
{
    (void)worker_index;
    (void)arg;
    return write(g_report_fd, "i", 1) == 1 ? 0 : 1;
}

static void report_exit(int worker_index, void *arg)
{
    (void)worker_index;
    (void)arg;
    if (write(g_report_fd, "e", 1) != 1)
        _exit(9);
}

/* result: the worker's pid. */
static int task_pid(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    int32_t pid = (int32_t)getpid();
    return mc_result_set(ctx, &pid, sizeof pid) == MC_OK ? 0 : 1;
}

#define N_TASKS 20
#define LIMIT 3

/* Sum of the slots' retirements once at least `expect` workers have
   retired, every retiree has been replaced (a retiree counts itself just
   before it exits, after its last result; the zygote counts the
   replacement it forks when it has reaped it) and every slot has a live
   worker: waits up to 10 s, then returns what it has (-1 if the slots
   never settled). A replacement is the only respawn here. */
static int settled_retirements(mc_pool *pool, int workers, int expect, mc_worker_stats *ws)
{
    double t0 = mc_t_now();
    for (;;) {
        mc_pool_stats ps;
        int n = mc_pool_get_stats(pool, &ps, ws, workers);
        int sum = 0, respawns = 0;
        for (int i = 0; i < n; i++) {
            sum += (int)ws[i].retirements;
            respawns += (int)ws[i].respawns;
        }
        int settled = n == workers && ps.live_workers == workers && respawns == sum;
        if (settled && sum >= expect)
            return sum;
        if (mc_t_now() - t0 > 10)
            return settled ? sum : -1;
        mc_t_sleep_ms(1);
    }
}

TEST(test_worker_retires_after_max_tasks)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    int fds[2];
    REQUIRE(pipe2(fds, O_CLOEXEC) == 0);
    g_report_fd = fds[1];

    mc_pool_options o;
    mc_pool_options_init(&o);
    CHECK_EQ_INT(o.max_tasks_per_worker, 0);   /* the default: no limit */
    o.workers = 2;
    o.max_tasks_per_worker = LIMIT;
    o.worker_init = report_init;
    o.worker_exit = report_exit;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    CHECK_OK(mc_pool_wait_ready(pool, 30));

    /* One at a time, so that every process's count is exact. */
    pid_t pids[N_TASKS];
    for (int k = 0; k < N_TASKS; k++) {
        mc_group *g = NULL;
        REQUIRE_OK(mc_group_create(pool, &g));
        CHECK_OK(mc_submit(g, task_pid, NULL, 0, 10));
        CHECK_OK(mc_group_wait(g, 30));
        mc_result r;
        CHECK_OK(mc_group_result(g, 0, &r));
        CHECK_EQ_INT(r.status, MC_OK);       /* a retirement fails nothing */
        pids[k] = 0;
        if (r.status == MC_OK && r.len == sizeof(int32_t)) {
            int32_t pid;
            memcpy(&pid, r.data, sizeof pid);
            pids[k] = pid;
        }
        mc_group_destroy(g);
    }

    /* No process ran more than LIMIT tasks; those that ran LIMIT retired. */
    int distinct = 0, full = 0;
    for (int k = 0; k < N_TASKS; k++) {
        CHECK(pids[k] > 0);
        int seen_before = 0, count = 0;
        for (int j = 0; j < N_TASKS; j++) {
            if (pids[j] == pids[k]) {
                count++;
                if (j < k)
                    seen_before = 1;
            }
        }
        CHECK(count <= LIMIT);
        if (!seen_before) {
            distinct++;
            full += count == LIMIT;
        }
    }
    CHECK(distinct >= (N_TASKS + LIMIT - 1) / LIMIT);

    /* Every result seen is counted (the worker counts before it
       publishes), retirements or not. */
    mc_worker_stats ws[2];
    CHECK_EQ_INT(mc_pool_get_stats(pool, NULL, ws, 2), 2);
    CHECK_EQ_INT((int)(ws[0].tasks_done + ws[1].tasks_done), N_TASKS);

    /* The retiree of the last task may still be on its way out. */
    int retired = settled_retirements(pool, 2, full, ws);
    CHECK_EQ_INT(retired, full);
    for (int i = 0; i < 2; i++) {
        CHECK_EQ_INT(ws[i].respawns, ws[i].retirements);   /* no deaths */
        CHECK_EQ_INT(ws[i].start_failures, 0);
        CHECK_EQ_INT(ws[i].cancel_kills, 0);
    }

    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_POOL_PIDS_GONE(&pp);

    /* Every process ran worker_init once and worker_exit once: the
       retirees when they left, the last two at the stop. */
    close(fds[1]);
    g_report_fd = -1;
    char buf[256];
    int inits = 0, exits = 0;
    ssize_t n;
    while ((n = read(fds[0], buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            inits += buf[i] == 'i';
            exits += buf[i] == 'e';
        }
    close(fds[0]);
    CHECK_EQ_INT(inits, retired + 2);
    CHECK_EQ_INT(exits, inits);
    CHECK_NOTHING_LEFT(&snap);
}

/* A limit of 1 with tasks queued behind running ones: every task still
   runs (the queue waits for the replacements), each in its own process. */
static int task_pid_slow(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    mc_t_sleep_ms(20);
    return task_pid(arg, arg_len, ctx);
}

TEST(test_limit_one_runs_every_queued_task)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 2;
    o.max_tasks_per_worker = 1;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    enum { N = 8 };
    for (int k = 0; k < N; k++)
        CHECK_OK(mc_submit(g, task_pid_slow, NULL, 0, 10));
    CHECK_OK(mc_group_wait(g, 60));
    int32_t pids[N] = {0};
    for (int k = 0; k < N; k++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)k, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        if (r.status == MC_OK && r.len == sizeof(int32_t))
            memcpy(&pids[k], r.data, sizeof pids[k]);
        for (int j = 0; j < k; j++)
            CHECK(pids[j] != pids[k]);
    }
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}
