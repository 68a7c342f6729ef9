/* test_threads.c — several caller threads submitting and collecting at once. */
#include <linux/filter.h>
#include <linux/membarrier.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "harness.h"

enum { THREADS = 4, PER_THREAD = 2000 };

/* 0 if this process is registered for membarrier's private expedited
   command (pool.c, "the way in"), else the errno (EPERM: not registered). */
static long private_expedited_membarrier(void)
{
    return syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0 ? 0 : errno;
}

typedef struct {
    uint32_t thread;
    uint32_t number;
    uint32_t pad_len; /* followed by pad_len bytes of (thread ^ number) */
} tag_arg;

/* Result: {thread, number, thread*1000003 + number, worker index}; fails
   with code 9 if the padding bytes are not what the caller wrote. */
static int task_tag(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    if (arg_len < sizeof(tag_arg))
        return 99;
    tag_arg a;
    memcpy(&a, arg, sizeof a);
    if (arg_len != sizeof a + a.pad_len)
        return 98;
    const unsigned char *pad = (const unsigned char *)arg + sizeof a;
    for (uint32_t i = 0; i < a.pad_len; i++)
        if (pad[i] != (unsigned char)(a.thread ^ a.number ^ i))
            return 9;
    uint32_t r[4] = {a.thread, a.number, a.thread * 1000003u + a.number,
                     (uint32_t)mc_worker_index()};
    return mc_result_set(ctx, r, sizeof r) == MC_OK ? 0 : 1;
}

static int task_sleep_ms(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    (void)ctx;
    if (arg_len == sizeof(int))
        mc_t_sleep_ms(*(const int *)arg);
    return 0;
}

static size_t make_arg(unsigned char *buf, uint32_t thread, uint32_t number)
{
    tag_arg a = {thread, number, (thread * 7 + number) % 61};
    memcpy(buf, &a, sizeof a);
    for (uint32_t i = 0; i < a.pad_len; i++)
        buf[sizeof a + i] = (unsigned char)(thread ^ number ^ i);
    return sizeof a + a.pad_len;
}

static int check_tag(const mc_result *r, uint32_t thread, uint32_t number)
{
    if (r->status != MC_OK || r->len != 4 * sizeof(uint32_t))
        return 0;
    uint32_t v[4];
    memcpy(v, r->data, sizeof v);
    return v[0] == thread && v[1] == number && v[2] == thread * 1000003u + number &&
           v[3] < 64;
}

typedef struct {
    mc_pool *pool;
    uint32_t id;
    int use_wait_one;
    int bad;
    int errors;
} thread_job;

static void *submitter(void *p)
{
    thread_job *job = p;
    mc_group *g = NULL;
    if (mc_group_create(job->pool, &g) != MC_OK) {
        job->errors++;
        return NULL;
    }
    unsigned char buf[sizeof(tag_arg) + 64];
    for (uint32_t n = 0; n < PER_THREAD; n++) {
        size_t len = make_arg(buf, job->id, n);
        int rc = mc_submit(g, task_tag, buf, len, 60);
        if (rc != MC_OK) {
            fprintf(stderr, "thread %u: submit %u: %s\n", job->id, n, mc_strerror(rc));
            job->errors++;
            break;
        }
        /* some threads collect while they submit */
        if (job->use_wait_one && n % 100 == 99) {
            rc = mc_group_wait_one(g, n - 50, 60);
            if (rc != MC_OK)
                job->errors++;
        }
    }
    int rc = mc_group_wait(g, 120);
    if (rc != MC_OK) {
        fprintf(stderr, "thread %u: wait: %s\n", job->id, mc_strerror(rc));
        job->errors++;
    }
    if (mc_group_size(g) != PER_THREAD)
        job->errors++;
    for (uint32_t n = 0; n < PER_THREAD; n++) {
        mc_result r;
        if (mc_group_result(g, n, &r) != MC_OK || !check_tag(&r, job->id, n)) {
            if (job->bad++ < 3)
                fprintf(stderr, "thread %u: task %u: wrong result (status %d, len %zu)\n",
                        job->id, n, r.status, r.len);
        }
    }
    mc_group_destroy(g);
    return NULL;
}

TEST(test_four_threads_own_groups)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_t_start(&pool, 2));

    pthread_t th[THREADS];
    thread_job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (thread_job){pool, (uint32_t)i + 1, i % 2, 0, 0};
        REQUIRE(pthread_create(&th[i], NULL, submitter, &jobs[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(jobs[i].errors, 0);
        CHECK_EQ_INT(jobs[i].bad, 0);
    }
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

/* Threads that create and destroy groups concurrently, often without waiting
   (queued tasks cancelled, running ones discarded). 1 MiB arguments in a
   64 MiB region: destroyed groups must give their memory back. */
typedef struct {
    mc_pool *pool;
    uint32_t id;
    int errors;
    int bad;
    int checked;
} churn_job;

static int task_first_word(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    if (arg_len < 8)
        return 99;
    return mc_result_set(ctx, arg, 8) == MC_OK ? 0 : 1;
}

static void *churner(void *p)
{
    churn_job *job = p;
    size_t big = (size_t)1 << 20;
    unsigned char *buf = calloc(1, big);
    if (!buf) {
        job->errors++;
        return NULL;
    }
    for (uint32_t it = 0; it < 150; it++) {
        mc_group *g = NULL;
        int rc = mc_group_create(job->pool, &g);
        if (rc != MC_OK) {
            fprintf(stderr, "churn %u: create: %s\n", job->id, mc_strerror(rc));
            job->errors++;
            break;
        }
        int ntasks = 1 + (int)(it % 3);
        for (int k = 0; k < ntasks; k++) {
            uint64_t tag = ((uint64_t)job->id << 32) | (it << 4) | (uint64_t)k;
            memcpy(buf, &tag, 8);
            rc = mc_submit(g, task_first_word, buf, big, 30);
            if (rc != MC_OK) {
                fprintf(stderr, "churn %u/%u: submit: %s\n", job->id, it, mc_strerror(rc));
                job->errors++;
            }
        }
        if (it % 2 == 0) { /* wait and check, then destroy */
            rc = mc_group_wait(g, 60);
            if (rc != MC_OK) {
                job->errors++;
            } else {
                for (int k = 0; k < ntasks; k++) {
                    uint64_t tag = ((uint64_t)job->id << 32) | (it << 4) | (uint64_t)k, got;
                    mc_result r;
                    if (mc_group_result(g, (size_t)k, &r) != MC_OK || r.status != MC_OK ||
                        r.len != 8 || (memcpy(&got, r.data, 8), got != tag))
                        job->bad++;
                    job->checked++;
                }
            }
        }
        mc_group_destroy(g); /* odd iterations: destroyed with tasks in flight */
    }
    free(buf);
    return NULL;
}

TEST(test_concurrent_group_create_destroy)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool *pool = NULL;
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 2;
    o.region_size = (size_t)64 << 20;
    REQUIRE_OK(mc_pool_start(&pool, &o));

    pthread_t th[THREADS];
    churn_job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (churn_job){pool, (uint32_t)i + 1, 0, 0, 0};
        REQUIRE(pthread_create(&th[i], NULL, churner, &jobs[i]) == 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ_INT(jobs[i].errors, 0);
        CHECK_EQ_INT(jobs[i].bad, 0);
        CHECK(jobs[i].checked > 0);
    }

    /* the pool still works: a slow task in one group does not block another
       group's results */
    mc_group *slow = NULL, *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &slow));
    REQUIRE_OK(mc_group_create(pool, &g));
    int ms = 300;
    CHECK_OK(mc_submit(slow, task_sleep_ms, &ms, sizeof ms, 10));
    unsigned char buf[sizeof(tag_arg) + 64];
    for (uint32_t n = 0; n < 100; n++) {
        size_t len = make_arg(buf, 77, n);
        CHECK_OK(mc_submit(g, task_tag, buf, len, 10));
    }
    CHECK_OK(mc_group_wait(g, 30));
    for (uint32_t n = 0; n < 100; n++) {
        mc_result r;
        CHECK_OK(mc_group_result(g, n, &r));
        CHECK(check_tag(&r, 77, n));
    }
    CHECK_OK(mc_group_wait(slow, 30));
    mc_group_destroy(slow);
    mc_group_destroy(g);
    CHECK_OK(mc_pool_stop(pool));
    CHECK_NOTHING_LEFT(&snap);
}

/* Threads that are already running when the pool starts (the zygote makes
   this safe) keep working while the pool is used. */
static volatile int keep_spinning = 1;
static void *busy_thread(void *p)
{
    (void)p;
    while (__atomic_load_n(&keep_spinning, __ATOMIC_RELAXED))
        mc_t_sleep_ms(1);
    return NULL;
}

TEST(test_start_with_threads_running)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    pthread_t t;
    __atomic_store_n(&keep_spinning, 1, __ATOMIC_RELAXED);
    REQUIRE(pthread_create(&t, NULL, busy_thread, NULL) == 0);
    mc_pool *pool = NULL;
    int rc = mc_t_start(&pool, 2);
    CHECK_OK(rc);
    /* Registering for membarrier with a second thread alive costs a
       synchronize_rcu() (milliseconds): the start did not, and every call
       counts the locked way. */
    CHECK_EQ_INT(private_expedited_membarrier(), EPERM);
    if (rc == MC_OK) {
        thread_job job = {pool, 5, 1, 0, 0};
        submitter(&job);
        CHECK_EQ_INT(job.errors, 0);
        CHECK_EQ_INT(job.bad, 0);
        CHECK_OK(mc_pool_stop(pool));
    }
    __atomic_store_n(&keep_spinning, 0, __ATOMIC_RELAXED);
    pthread_join(t, NULL);
    CHECK_NOTHING_LEFT(&snap);
}

/* ---- mc_pool_stop from another thread (pool.c, "the way in") -------------
   The thread that started a pool counts its calls without a locked
   instruction, and mc_pool_stop, from any thread, makes those counts
   visible with membarrier(2) before it waits for them; without
   membarrier every thread counts the locked way. */

typedef struct {
    mc_pool *pool;
    pid_t waiter_tid;         /* the starting thread */
    _Atomic int entering;     /* it is about to call mc_group_wait */
    _Atomic int stopped;      /* mc_pool_stop has returned */
    int stopped_while_held;   /* ... while the waiter was held inside the call */
    bool released;            /* the waiter was let go */
    int stop_rc;
} stopper_job;

/* SIGUSR1 holds the thread it lands on until a byte arrives on the pipe:
   landing inside mc_group_wait, it keeps that thread inside the API. */
static int g_hold_pipe[2];
static _Atomic int g_held; /* lock-free: safe in a handler, and across threads */

static void hold_here(int sig)
{
    (void)sig;
    int saved = errno;
    atomic_store(&g_held, 1);
    char c;
    while (read(g_hold_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    errno = saved;
}

/* Whether thread tid of this process is inside a futex(2) wait now. */
static int in_futex_wait(pid_t tid)
{
    char path[64], buf[64] = {0};
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return atoi(buf) == SYS_futex;
}

static void *stop_pool(void *p)
{
    stopper_job *job = p;
    job->stop_rc = mc_pool_stop(job->pool);
    atomic_store(&job->stopped, 1);
    return NULL;
}

/* Holds the waiter inside mc_group_wait, stops the pool from a third
   thread, and records whether the stop returned while the waiter was
   still held there (it must not: it waits for the calls in flight). */
static void *hold_and_stop(void *p)
{
    stopper_job *job = p;
    /* Inside the API, asleep on its task's word. */
    while (!atomic_load(&job->entering) || !in_futex_wait(job->waiter_tid))
        mc_t_sleep_ms(1);
    syscall(SYS_tgkill, getpid(), job->waiter_tid, SIGUSR1);
    while (!atomic_load(&g_held))
        mc_t_sleep_ms(1);
    pthread_t stopper;
    bool started = pthread_create(&stopper, NULL, stop_pool, job) == 0;
    if (started) {
        /* A stop that does not wait returns within milliseconds here
           (stop_grace 0: the worker is killed at once). */
        mc_t_sleep_ms(300);
        job->stopped_while_held = atomic_load(&job->stopped);
    }
    job->released = write(g_hold_pipe[1], "x", 1) == 1;
    if (started)
        pthread_join(stopper, NULL);
    return NULL;
}

/* The starting thread runs round trips, then waits for a task that would
   run for a minute while another thread stops the pool. */
/* expect: what membarrier(PRIVATE_EXPEDITED) gives once the pool started
   (0: the start registered this process for it, so the starting thread
   takes the fast way in). */
static void stop_while_the_starting_thread_waits(long expect)
{
    mc_t_snapshot snap;
    mc_t_snap(&snap);
    mc_pool_options o;
    mc_pool_options_init(&o);
    o.workers = 1;
    o.stop_grace = 0.0;
    mc_pool *pool = NULL;
    REQUIRE_OK(mc_pool_start(&pool, &o));
    REQUIRE_OK(mc_pool_wait_ready(pool, 30.0));
    CHECK_EQ_INT(private_expedited_membarrier(), expect);
    mc_group *g = NULL;
    REQUIRE_OK(mc_group_create(pool, &g));
    for (int i = 0; i < 1000; i++) {
        int ms = 0;
        CHECK_OK(mc_submit(g, task_sleep_ms, &ms, sizeof ms, -1.0));
        CHECK_OK(mc_group_wait_one(g, (size_t)i, -1.0));
    }
    int minute = 60000;
    CHECK_OK(mc_submit(g, task_sleep_ms, &minute, sizeof minute, -1.0));
    stopper_job job = {.pool = pool, .waiter_tid = (pid_t)syscall(SYS_gettid), .stop_rc = -3};
    REQUIRE(pipe(g_hold_pipe) == 0);
    atomic_store(&g_held, 0);
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = hold_here; /* no SA_RESTART: the wait sees EINTR */
    sigemptyset(&sa.sa_mask);
    REQUIRE(sigaction(SIGUSR1, &sa, &old) == 0);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, hold_and_stop, &job) == 0);
    atomic_store(&job.entering, 1);
    /* Held inside by the signal, then released; it ends with the EINTR,
       or because the stop killed the worker (the task failed) or the pool
       is closing, not after a minute (the harness's timeout would fail
       the test first). */
    int rc = mc_group_wait(g, -1.0);
    CHECK(rc == MC_EINTR || rc == MC_ESTATE || rc == MC_OK);
    pthread_join(t, NULL);
    sigaction(SIGUSR1, &old, NULL);
    close(g_hold_pipe[0]);
    close(g_hold_pipe[1]);
    CHECK(atomic_load(&g_held));
    CHECK(job.released);
    CHECK_EQ_INT(job.stopped_while_held, 0);
    CHECK_OK(job.stop_rc);
    /* Closed for this thread's fast way in too. */
    int ms = 0;
    CHECK_RC(mc_submit(g, task_sleep_ms, &ms, sizeof ms, -1.0), MC_ESTATE);
    CHECK_RC(mc_group_wait(g, 0.0), MC_ESTATE);
    mc_group_destroy(g);
    CHECK_NOTHING_LEFT(&snap);
}

TEST(test_stop_from_another_thread_while_the_starting_thread_waits)
{
    /* This test's process has one thread when the pool starts, unless a
       sanitizer's runtime keeps one of its own (TSan does): then the
       start must not register (the test above). */
    stop_while_the_starting_thread_waits(mc_t_count_threads() == 1 ? 0 : EPERM);
}

/* The same with membarrier(2) refused, as a seccomp filter of a container
   may: the starting thread's calls take the locked way. (This test's
   process is its own, so the filter goes with it.) */
TEST(test_stop_from_another_thread_without_membarrier)
{
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_membarrier, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof filter / sizeof filter[0], filter};
    REQUIRE(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0);
    REQUIRE(prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0);
    REQUIRE(syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == -1 &&
            errno == ENOSYS);
    stop_while_the_starting_thread_waits(ENOSYS);
}
