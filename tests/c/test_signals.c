/* test_signals.c — a signal handler interrupts waits with MC_EINTR; waiting
   again resumes. */
#include <pthread.h>
#include <sys/time.h>

#include "harness.h"

static int task_sleep_echo(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    if (arg_len != 2 * sizeof(int))
        return 99;
    int a[2];
    memcpy(a, arg, sizeof a);
    mc_t_sleep_ms(a[0]);
    return mc_result_set(ctx, &a[1], sizeof a[1]) == MC_OK ? 0 : 1;
}

static int slow_init(int worker_index, void *arg)
{
    (void)worker_index;
    (void)arg;
    mc_t_sleep_ms(800);
    return 0;
}

static volatile sig_atomic_t g_signals;
static void on_signal(int sig)
{
    (void)sig;
    g_signals++;
}

static void install(int sig, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART */
    sigaction(sig, &sa, old);
}

/* A thread that sends SIGUSR1 to `target` every 50 ms until told to stop:
   a signal that lands before the wait begins is followed by another one. */
typedef struct {
    pthread_t target;
    int stop;
    int sent;
} pinger;

static void *ping_thread(void *p)
{
    pinger *pg = p;
    while (!__atomic_load_n(&pg->stop, __ATOMIC_ACQUIRE)) {
        mc_t_sleep_ms(50);
        if (__atomic_load_n(&pg->stop, __ATOMIC_ACQUIRE))
            break;
        pthread_kill(pg->target, SIGUSR1);
        pg->sent++;
    }
    return NULL;
}

static int result_value(mc_group *g, size_t i)
{
    mc_result r;
    int v;
    if (mc_group_result(g, i, &r) != MC_OK || r.status != MC_OK || r.len != sizeof v)
        return -1;
    memcpy(&v, r.data, sizeof v);
    return v;
}

TEST(test_group_wait_eintr_from_thread)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));
    struct sigaction old;
    install(SIGUSR1, &old); /* after start: the workers keep the default */
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    for (int i = 0; i < 4; i++) {
        int a[2] = {700, 100 + i};
        CHECK_OK(mc_submit(g, task_sleep_echo, a, sizeof a, 10));
    }

    g_signals = 0;
    pinger pg = {pthread_self(), 0, 0};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, ping_thread, &pg) == 0);
    double t0 = mc_t_now();
    int rc = mc_group_wait(g, 30);
    double dt = mc_t_now() - t0;
    __atomic_store_n(&pg.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    printf("  group_wait returned %s after %.3f s (%d signals sent)\n", mc_strerror(rc), dt,
           pg.sent);
    CHECK_RC(rc, MC_EINTR);
    CHECK(g_signals >= 1);

    /* waiting again completes with every result */
    CHECK_OK(mc_group_wait(g, 30));
    for (int i = 0; i < 4; i++)
        CHECK_EQ_INT(result_value(g, (size_t)i), 100 + i);

    /* wait_one is interrupted the same way */
    int a[2] = {700, 200};
    CHECK_OK(mc_submit(g, task_sleep_echo, a, sizeof a, 10));
    pg.stop = 0;
    pg.sent = 0;
    REQUIRE(pthread_create(&t, NULL, ping_thread, &pg) == 0);
    rc = mc_group_wait_one(g, 4, 30);
    __atomic_store_n(&pg.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CHECK_RC(rc, MC_EINTR);
    CHECK_OK(mc_group_wait_one(g, 4, 30));
    CHECK_EQ_INT(result_value(g, 4), 200);

    mc_group_destroy(g);
    sigaction(SIGUSR1, &old, NULL);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

static void start_timer(long interval_ms)
{
    struct itimerval it;
    it.it_interval.tv_sec = interval_ms / 1000;
    it.it_interval.tv_usec = (interval_ms % 1000) * 1000;
    it.it_value = it.it_interval;
    setitimer(ITIMER_REAL, &it, NULL);
}

static void stop_timer(void)
{
    struct itimerval it;
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, NULL);
}

TEST(test_eintr_from_itimer_wait_and_submit)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 1;
    o.queue_capacity = 2;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    struct sigaction old;
    install(SIGALRM, &old);
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));

    /* fill the queue (one running, two queued) */
    int n = 0, rc;
    for (;;) {
        int a[2] = {400, n};
        rc = mc_submit(g, task_sleep_echo, a, sizeof a, 0.05);
        if (rc != MC_OK || n >= 10)
            break;
        n++;
    }
    CHECK_RC(rc, MC_ETIMEDOUT);

    /* a submit blocked on the full queue is interrupted */
    g_signals = 0;
    start_timer(30);
    int a[2] = {400, n};
    rc = mc_submit(g, task_sleep_echo, a, sizeof a, 30);
    stop_timer();
    CHECK_RC(rc, MC_EINTR);
    CHECK(g_signals >= 1);
    CHECK_EQ_INT(mc_group_size(g), n); /* the interrupted submit added nothing */
    /* submitting again succeeds */
    CHECK_OK(mc_submit(g, task_sleep_echo, a, sizeof a, 30));
    n++;

    /* a group wait is interrupted by SIGALRM, then resumes */
    g_signals = 0;
    start_timer(30);
    rc = mc_group_wait(g, 30);
    stop_timer();
    CHECK_RC(rc, MC_EINTR);
    CHECK(g_signals >= 1);
    CHECK_OK(mc_group_wait(g, 30));
    for (int i = 0; i < n; i++)
        CHECK_EQ_INT(result_value(g, (size_t)i), i);

    mc_group_destroy(g);
    sigaction(SIGALRM, &old, NULL);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_wait_ready_eintr)
{
    /* worker init that takes a while, so wait_ready is still waiting when
       the signal arrives */
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 2;
    o.worker_init = slow_init;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    struct sigaction old;
    install(SIGUSR1, &old);
    g_signals = 0;
    pinger pg = {pthread_self(), 0, 0};
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, ping_thread, &pg) == 0);
    int rc = mc_pool_wait_ready(pool, 30);
    __atomic_store_n(&pg.stop, 1, __ATOMIC_RELEASE);
    pthread_join(t, NULL);
    CHECK_RC(rc, MC_EINTR);
    CHECK_OK(mc_pool_wait_ready(pool, 30));
    sigaction(SIGUSR1, &old, NULL);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}
