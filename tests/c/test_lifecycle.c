/* test_lifecycle.c — start/stop cycles leave nothing behind; worker init and
   exit callbacks; a failing init; fork hooks; stop grace. */
#include <fcntl.h>

#include "harness.h"

#include <dirent.h>

static int task_double(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    if (arg_len != sizeof(int))
        return 99;
    int v = *(const int *)arg * 2;
    return mc_result_set(ctx, &v, sizeof v) == MC_OK ? 0 : 1;
}

static int task_sleep_ms(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)ctx;
    if (arg_len == sizeof(int))
        mc_t_sleep_ms(*(const int *)arg);
    return 0;
}

static int run_double(mc_pool *pool, int x)
{
    mc_group *g = NULL;
    if (mc_group_create(pool, &g) != MC_OK)
        return -1;
    int out = -1;
    if (mc_submit(g, task_double, &x, sizeof x, 10) == MC_OK && mc_group_wait(g, 30) == MC_OK) {
        mc_result r;
        if (mc_group_result(g, 0, &r) == MC_OK && r.status == MC_OK && r.len == sizeof out)
            memcpy(&out, r.data, sizeof out);
    }
    mc_group_destroy(g);
    return out;
}

/* The caller, the zygote and every worker of `pp`: no /dev/shm file mapped
   or open (the pool's memory is a memfd, and must never be anything else). */
static int pool_dev_shm_refs(const mc_t_pool_pids *pp)
{
    int n = mc_t_proc_dev_shm_refs(getpid());
    n += mc_t_proc_dev_shm_refs(pp->zygote) > 0;
    for (int k = 0; k < pp->n; k++)
        n += mc_t_proc_dev_shm_refs(pp->workers[k]) > 0;
    return n;
}

TEST(test_start_stop_cycles_leave_nothing)
{
    /* one warm-up cycle, so one-time allocations of libc and the sanitizers
       are not counted */
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));
    CHECK_EQ_INT(run_double(pool, 1), 2);
    CHECK_OK(mc_pool_stop(pool));

    int fds0 = mc_t_count_fds(), maps0 = mc_t_count_maps();
    int memfd0 = mc_t_count_maps_matching("memfd:");
    int kids0 = mc_t_count_children();
    int gone_bad = 0;
    /* 1,000 cycles; 30 under valgrind, where each costs ~20x more (every
       other stage runs all 1,000) */
    int cycles = mc_t_under_valgrind() ? 30 : 1000;
    double t0 = mc_t_now();
    for (int i = 0; i < cycles; i++) {
        pool = NULL;
        REQUIRE_OK(mc_t_start(&pool, 2));
        mc_t_pool_pids pp;
        switch (i % 3) {
        case 0: /* wait for the workers, run a task */
            CHECK_OK(mc_pool_wait_ready(pool, 30));
            CHECK_EQ_INT(run_double(pool, i), 2 * i);
            break;
        case 1: /* a task submitted before the workers are up */
            CHECK_EQ_INT(run_double(pool, i), 2 * i);
            break;
        default: /* stopped right away, workers possibly still starting */
            break;
        }
        mc_t_get_pool_pids(pool, &pp);
        if (i % 3 == 0) {
            CHECK_EQ_INT(pp.n, 2);
            if (i % 30 == 0)
                CHECK_EQ_INT(pool_dev_shm_refs(&pp), 0);
        }
        CHECK_OK(mc_pool_stop(pool));
        if (!mc_t_pid_gone(pp.zygote))
            gone_bad++;
        for (int k = 0; k < pp.n; k++)
            if (!mc_t_pid_gone(pp.workers[k]))
                gone_bad++;
        CHECK_EQ_INT(mc_t_count_children(), kids0);
    }
    CHECK_EQ_INT(gone_bad, 0);
    int fds1 = mc_t_count_fds(), maps1 = mc_t_count_maps();
    printf("  %d cycles in %.1f s: fds %d -> %d, maps %d -> %d, children %d -> %d\n", cycles,
           mc_t_now() - t0, fds0, fds1, maps0, maps1, kids0, mc_t_count_children());
    CHECK_EQ_INT(fds1, fds0);
#ifndef MC_T_SANITIZER_RUNTIME_MAPS
    CHECK_EQ_INT(maps1, maps0);
#endif
    CHECK_EQ_INT(mc_t_count_maps_matching("memfd:"), memfd0);
    CHECK_EQ_INT(mc_t_count_children(), kids0);
    CHECK_EQ_INT(mc_t_count_zombie_children(), 0);
    CHECK_EQ_INT(mc_t_proc_dev_shm_refs(getpid()), 0);
}

/* ---------------------------------------------------- init / exit callbacks */

static char g_log_path[256];
static int g_init_calls;  /* in each worker: how many times init ran in it */
static int g_init_index = -1;
static int g_init_arg_ok;
static int g_cb_arg_token;  /* its address is passed as the callback argument */

static void log_line(const char *fmt, int a, int b, int c)
{
    char line[128];
    int n = snprintf(line, sizeof line, fmt, a, b, c);
    int fd = open(g_log_path, O_WRONLY | O_APPEND);
    if (fd >= 0) {
        ssize_t w = write(fd, line, (size_t)n); /* one write: atomic with O_APPEND */
        (void)w;
        close(fd);
    }
}

static int my_worker_init(int worker_index, void *arg)
{
    g_init_calls++;
    g_init_index = worker_index;
    g_init_arg_ok = arg == &g_cb_arg_token;
    log_line("init %d %d %d\n", worker_index, mc_worker_index(), g_init_arg_ok);
    return 0;
}

static void my_worker_exit(int worker_index, void *arg)
{
    log_line("exit %d %d %d\n", worker_index, (int)getpid(), arg == &g_cb_arg_token);
}

/* Result: {init calls seen in this worker, index init got, mc_worker_index(), arg ok} */
static int task_init_state(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    mc_t_sleep_ms(10);
    int r[4] = {g_init_calls, g_init_index, mc_worker_index(), g_init_arg_ok};
    return mc_result_set(ctx, r, sizeof r) == MC_OK ? 0 : 1;
}

/* Parse the log: counts[kind][index] for "init"/"exit" lines; returns the
   number of lines, -1 if a line is malformed or has a bad flag. */
static int read_log(int counts[2][16], int workers, pid_t exit_pids[16])
{
    memset(counts, 0, sizeof(int) * 2 * 16);
    FILE *f = fopen(g_log_path, "r");
    if (!f)
        return -1;
    char kind[16];
    int a, b, c, lines = 0, bad = 0;
    while (fscanf(f, "%15s %d %d %d", kind, &a, &b, &c) == 4) {
        lines++;
        if (a < 0 || a >= workers || a >= 16) {
            bad = 1;
            continue;
        }
        if (strcmp(kind, "init") == 0) {
            counts[0][a]++;
            if (b != a || c != 1) /* mc_worker_index() in init; callback arg */
                bad = 1;
        } else if (strcmp(kind, "exit") == 0) {
            counts[1][a]++;
            if (exit_pids)
                exit_pids[a] = b;
            if (c != 1)
                bad = 1;
        } else {
            bad = 1;
        }
    }
    fclose(f);
    return bad ? -1 : lines;
}

static int make_log(void)
{
    snprintf(g_log_path, sizeof g_log_path, "/tmp/mc_test_lifecycle_XXXXXX");
    int fd = mkstemp(g_log_path);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

TEST(test_worker_init_and_exit)
{
    mc_t_snapshot snap;
    REQUIRE(make_log() == 0);
    mc_t_snap(&snap);
    enum { W = 3 };
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = W;
    o.worker_init = my_worker_init;
    o.worker_init_arg = &g_cb_arg_token;
    o.worker_exit = my_worker_exit;
    o.worker_exit_arg = &g_cb_arg_token;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    CHECK_EQ_INT(g_init_calls, 0); /* never in the caller */

    /* once wait_ready returned, every worker has run init exactly once */
    int counts[2][16];
    CHECK_EQ_INT(read_log(counts, W, NULL), W);
    for (int w = 0; w < W; w++) {
        CHECK_EQ_INT(counts[0][w], 1);
        CHECK_EQ_INT(counts[1][w], 0);
    }

    /* tasks see the state their worker's init left */
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    enum { N = 30 };
    for (int i = 0; i < N; i++)
        CHECK_OK(mc_submit(g, task_init_state, NULL, 0, 10));
    CHECK_OK(mc_group_wait(g, 30));
    for (int i = 0; i < N; i++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)i, &r));
        CHECK_EQ_INT(r.status, MC_OK);
        REQUIRE(r.len == 4 * sizeof(int));
        int v[4];
        memcpy(v, r.data, sizeof v);
        CHECK_EQ_INT(v[0], 1);
        CHECK_EQ_INT(v[1], v[2]);
        CHECK(v[2] >= 0 && v[2] < W);
        CHECK_EQ_INT(v[3], 1);
    }
    mc_group_destroy(g);

    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    CHECK_EQ_INT(pp.n, W);
    CHECK_OK(mc_pool_stop(pool));

    /* every worker ran worker_exit once, in its own process */
    pid_t exit_pids[16] = {0};
    CHECK_EQ_INT(read_log(counts, W, exit_pids), 2 * W);
    for (int w = 0; w < W; w++) {
        CHECK_EQ_INT(counts[0][w], 1);
        CHECK_EQ_INT(counts[1][w], 1);
        int known = 0;
        for (int k = 0; k < pp.n; k++)
            known |= pp.workers[k] == exit_pids[w];
        CHECK(known);
    }
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK_NOTHING_LEFT(&snap);
    unlink(g_log_path);
}

/* ----------------------------------------------------------- failing init */

static int g_fail_mode; /* 0: worker 1 fails; 1: all fail; 2: all fail, long message */
static char g_long_message[5001];

static int failing_init(int worker_index, void *arg)
{
    (void)arg;
    if (g_fail_mode == 0 && worker_index != 1)
        return 0;
    mc_worker_set_error(g_fail_mode == 2 ? g_long_message : "db down");
    return 1;
}

static void run_failing_init(int mode, int workers)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    g_fail_mode = mode;
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = workers;
    o.worker_init = failing_init;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    CHECK_RC(mc_pool_wait_ready(pool, 30), MC_EWORKERINIT);
    const char *msg = mc_pool_error(pool);
    REQUIRE(msg != NULL);
    printf("  mc_pool_error: \"%.60s%s\"\n", msg, strlen(msg) > 60 ? "..." : "");
    if (mode == 2) {
        CHECK_EQ_INT(strlen(msg), strlen(g_long_message));
        CHECK(strcmp(msg, g_long_message) == 0);
    } else {
        CHECK(strstr(msg, "db down") != NULL);
    }
    /* a second wait reports the same */
    CHECK_RC(mc_pool_wait_ready(pool, 1), MC_EWORKERINIT);

    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    mc_pool_stop(pool); /* its return value after a failed init is not specified */
    CHECK_POOL_PIDS_GONE(&pp);
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_worker_init_failure_one_worker)
{
    run_failing_init(0, 2);
}

TEST(test_worker_init_failure_all_workers)
{
    run_failing_init(1, 2);
}

TEST(test_worker_init_failure_long_message)
{
    memset(g_long_message, 'x', sizeof g_long_message - 1);
    memcpy(g_long_message, "db down: ", 9);
    g_long_message[sizeof g_long_message - 1] = '\0';
    run_failing_init(2, 1);
}

/* --------------------------------------------------------------- fork hooks */

static int g_before, g_after_parent, g_after_child, g_child_roles, g_hook_arg_bad;
static int g_hook_token;

static void hook_before(void *arg)
{
    g_before++;
    g_hook_arg_bad |= arg != &g_hook_token;
}
static void hook_parent(void *arg)
{
    g_after_parent++;
    g_hook_arg_bad |= arg != &g_hook_token;
}
static void hook_child(void *arg, mc_role role)
{
    g_after_child++;
    g_child_roles = g_child_roles * 10 + (int)role;
    g_hook_arg_bad |= arg != &g_hook_token;
}

/* Result: {after_child calls, roles seen in order, arg bad} in this worker */
static int task_hook_state(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)arg;
    (void)arg_len;
    int r[3] = {g_after_child, g_child_roles, g_hook_arg_bad};
    return mc_result_set(ctx, r, sizeof r) == MC_OK ? 0 : 1;
}

TEST(test_fork_hooks)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    g_before = g_after_parent = g_after_child = g_child_roles = g_hook_arg_bad = 0;
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 2;
    o.before_fork = hook_before;
    o.after_fork_parent = hook_parent;
    o.after_fork_child = hook_child;
    o.fork_hook_arg = &g_hook_token;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    /* in the caller: the zygote's fork, bracketed */
    CHECK_EQ_INT(g_before, 1);
    CHECK_EQ_INT(g_after_parent, 1);
    CHECK_EQ_INT(g_after_child, 0);
    CHECK_EQ_INT(g_hook_arg_bad, 0);

    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    for (int i = 0; i < 10; i++)
        CHECK_OK(mc_submit(g, task_hook_state, NULL, 0, 10));
    CHECK_OK(mc_group_wait(g, 30));
    for (int i = 0; i < 10; i++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, (size_t)i, &r));
        REQUIRE(r.status == MC_OK && r.len == 3 * sizeof(int));
        int v[3];
        memcpy(v, r.data, sizeof v);
        /* a worker saw after_fork_child as the zygote, then as a worker */
        CHECK_EQ_INT(v[0], 2);
        CHECK_EQ_INT(v[1], MC_ROLE_ZYGOTE * 10 + MC_ROLE_WORKER);
        CHECK_EQ_INT(v[2], 0);
    }
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

/* --------------------------------------------------------------- stop grace */

TEST(test_stop_grace_kills_long_task)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 2;
    o.stop_grace = 0.2;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    int ms = 20000;
    CHECK_OK(mc_submit(g, task_sleep_ms, &ms, sizeof ms, 10));
    CHECK_OK(mc_submit(g, task_sleep_ms, &ms, sizeof ms, 10));
    for (int i = 0; i < 5; i++) /* queued: cancelled by stop */
        CHECK_OK(mc_submit(g, task_sleep_ms, &ms, sizeof ms, 10));
    /* make sure the two long tasks are running */
    CHECK_RC(mc_group_wait_one(g, 0, 0.2), MC_ETIMEDOUT);
    mc_t_pool_pids pp;
    mc_t_get_pool_pids(pool, &pp);
    double t0 = mc_t_now();
    mc_pool_stop(pool);
    double dt = mc_t_now() - t0;
    printf("  stop with 20 s tasks running and grace 0.2 s took %.3f s\n", dt);
    CHECK(dt < 10.0); /* it did not wait for the tasks (20 s) nor the default grace */
    CHECK_POOL_PIDS_GONE(&pp);
    /* the group outlives the pool: it answers MC_ESTATE, destroy is safe */
    CHECK_RC(mc_group_wait(g, 0), MC_ESTATE);
    mc_group_destroy(g);
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_stop_lets_short_task_finish)
{
    /* default grace (10 s): a task in progress is allowed to complete, so
       worker_exit still runs in that worker */
    mc_t_snapshot snap;
    REQUIRE(make_log() == 0);
    mc_t_snap(&snap);
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 1;
    o.worker_exit = my_worker_exit;
    o.worker_exit_arg = &g_cb_arg_token;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    int ms = 300;
    CHECK_OK(mc_submit(g, task_sleep_ms, &ms, sizeof ms, 10));
    CHECK_RC(mc_group_wait_one(g, 0, 0.1), MC_ETIMEDOUT); /* running now */
    /* (destroying the group first would cancel the task and stop its
       worker: the group is destroyed after the pool) */
    double t0 = mc_t_now();
    CHECK_OK(mc_pool_stop(pool));
    printf("  stop with a 300 ms task running took %.3f s\n", mc_t_now() - t0);
    mc_group_destroy(g);
    int counts[2][16];
    CHECK_EQ_INT(read_log(counts, 1, NULL), 1);
    CHECK_EQ_INT(counts[1][0], 1);
    CHECK_NOTHING_LEFT(&snap);
    unlink(g_log_path);
}
