/*
 * pool.c — the caller's side of a pool: start, readiness, stop, and the
 * bookkeeping that keeps a stopped or inherited pool from being touched.
 *
 * Start lays out the region (header, worker slots, task ring, arena), then
 * forks the zygote. Stop asks the zygote to wind the workers down, reaps
 * it, waits for the caller's own threads to leave the API, and only then
 * unmaps: no thread can be left reading a region that is gone.
 *
 * fork() of the caller: a child gets a copy of every pool handle but owns
 * none of the processes. An atfork handler closes the child's copies of the
 * descriptors that signal the caller's death to the zygote (otherwise the
 * zygote would wait for the child too), and every call from the child
 * answers MC_ESTATE; mc_pool_stop() in the child only drops its copy.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* How long a caller sleeps before checking that the zygote still lives. */
#define MC_WAIT_SLICE_NS 100000000

/* Pools of this process, for the atfork handler; and a counter of forks
   so a handle can tell cheaply (no getpid syscall) that it was inherited. */
static pthread_mutex_t g_live_mu = PTHREAD_MUTEX_INITIALIZER;
static mc_pool *g_live;
static _Atomic unsigned long g_fork_generation;
/* Registered for membarrier(2) (see "the way in"). A fork child inherits
   the registration, but it is reset there all the same: the child has one
   thread, so registering again costs nothing. */
static _Atomic bool g_membarrier_ready;
static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void) { pthread_mutex_lock(&g_live_mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_live_mu); }

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static void atfork_child(void)
{
    atomic_fetch_add(&g_fork_generation, 1);
    atomic_store(&g_membarrier_ready, false);
    for (mc_pool *p = g_live; p; p = p->next_live) {
        close_fd(&p->alive_fd);
        close_fd(&p->zygote_ctl_fd);
        close_fd(&p->zygote_pidfd);
    }
    pthread_mutex_unlock(&g_live_mu);
}

static void register_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

static bool owned_here(const mc_pool *p)
{
    return p->fork_generation == atomic_load_explicit(&g_fork_generation, memory_order_relaxed);
}

void mc_pool_options_init(mc_pool_options *opts)
{
    if (!opts)
        return;
    memset(opts, 0, sizeof *opts);
    opts->stop_grace = -1;
}

void mc__pool_ref(mc_pool *p)
{
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
}

void mc__pool_unref(mc_pool *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1) {
        /* The last group or hold is gone: nothing can point into the
           region any more. */
        mc__region_destroy(-1, p->hdr, p->region_size);
        free(p->error);
        free(p);
    }
}

/* ---- the way in -------------------------------------------------------
 *
 * Every public call enters and leaves, so that mc_pool_stop() can wait for
 * the calls in flight before it unmaps the region. A locked add on each
 * costs about 5 ns here, and a round trip (submit, wait, result) makes
 * three calls, two of them on its critical path: 10 of its 160 ns. So the
 * thread that started the pool, the one that as a rule submits and
 * waits, counts its calls in fast_active with plain stores, and
 * mc_pool_stop() pays for the ordering instead:
 *
 *   enter (the starting thread)        mc_pool_stop (any thread)
 *   fast_active = n + 1                closing = 1 (a locked exchange)
 *   compiler barrier                   membarrier(PRIVATE_EXPEDITED)
 *   closing? undo, MC_ESTATE           wait for fast_active == active == 0
 *
 * membarrier(2) returns only after every running thread of the process
 * has executed a full barrier. If the owner's load of closing came before
 * that barrier, its store to fast_active is visible to stop after it; if
 * it came after, it sees closing. (The asymmetric Dekker of liburcu's
 * "memb" flavour.) Other threads count in `active` with locked adds. A
 * thread that reuses a dead owner's pthread_t takes over its count, at 0.
 * Without membarrier (before Linux 4.14, or a seccomp filter that forbids
 * it) every thread takes the locked way.
 *
 * Registering for membarrier costs nothing in a process of one thread,
 * and a synchronize_rcu() in one of several: 14-19 ms measured here,
 * three times a whole start. So a pool takes the fast way only in a
 * process that registered while it had one thread (a C program that
 * starts its pool before its threads; not a Python one, where numpy's
 * BLAS threads are already there); once registered, every later pool of
 * the process does. */

/* The number of threads of this process (field 20 of /proc/self/stat),
   0 if it cannot be read. */
static long process_threads(void)
{
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *s = strrchr(buf, ')'); /* the end of the command's name, field 2 */
    for (int field = 2; s && field < 20; field++)
        s = strchr(s + 1, ' ');
    return s ? strtol(s + 1, NULL, 10) : 0;
}

static bool membarrier_ready(void)
{
    if (atomic_load_explicit(&g_membarrier_ready, memory_order_acquire))
        return true;
    /* One thread: ours, so none can start before we have registered. */
    if (process_threads() != 1 ||
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0)
        return false;
    atomic_store_explicit(&g_membarrier_ready, true, memory_order_release);
    return true;
}

static bool fast_way_in(const mc_pool *p)
{
    return p->fast_owner != 0 && p->fast_owner == (uintptr_t)pthread_self();
}

/* After closing is set: makes every fast enter visible, or sends it back. */
static void see_fast_calls(const mc_pool *p)
{
    if (p->fast_owner != 0 && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
        /* Only a seccomp filter installed after the start, or ENOMEM, makes
           it fail. Then what is left is time: a store buffer drains far
           sooner than this in practice, which nothing guarantees. */
        usleep(1000);
}

int mc__pool_enter(mc_pool *p)
{
    if (!owned_here(p))
        return MC_ESTATE;
    if (fast_way_in(p)) {
        long n = atomic_load_explicit(&p->fast_active, memory_order_relaxed);
        atomic_store_explicit(&p->fast_active, n + 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst); /* the other half: stop's membarrier */
        if (atomic_load_explicit(&p->closing, memory_order_relaxed)) {
            atomic_store_explicit(&p->fast_active, n, memory_order_release);
            return MC_ESTATE;
        }
        return MC_OK;
    }
    atomic_fetch_add_explicit(&p->active, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&p->closing, memory_order_seq_cst)) {
        atomic_fetch_sub_explicit(&p->active, 1, memory_order_release);
        return MC_ESTATE;
    }
    return MC_OK;
}

void mc__pool_leave(mc_pool *p)
{
    if (fast_way_in(p)) {
        long n = atomic_load_explicit(&p->fast_active, memory_order_relaxed);
        MC_ASSERT(n > 0);
        atomic_store_explicit(&p->fast_active, n - 1, memory_order_release);
        return;
    }
    atomic_fetch_sub_explicit(&p->active, 1, memory_order_release);
}

static bool zygote_exited(mc_pool *p)
{
    if (p->zygote_pidfd >= 0) {
        struct pollfd pfd = {.fd = p->zygote_pidfd, .events = POLLIN};
        return poll(&pfd, 1, 0) > 0;
    }
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_PID, (id_t)p->zygote_pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return errno == ECHILD;
    return si.si_pid == p->zygote_pid;
}

/* Copy the first init error a worker left into p->error (once; several
   threads may race here, one copy wins). */
static void collect_init_error(mc_pool *p)
{
    mc_header *h = p->hdr;
    if (__atomic_load_n(&p->error, __ATOMIC_ACQUIRE) || mc__lock(h) != MC_OK)
        return;
    char *text = NULL;
    for (uint32_t i = 0; i < h->nworkers && !text; i++) {
        mc_worker_slot *s = mc__slot(h, i);
        if (s->error_off && s->error_len)
            text = strndup(mc__ptr(h, s->error_off), (size_t)s->error_len);
    }
    mc__unlock(h);
    if (!text)
        text = strdup("a worker's init callback failed");
    char *expected = NULL;
    if (!text || !__atomic_compare_exchange_n(&p->error, &expected, text, false, __ATOMIC_ACQ_REL,
                                              __ATOMIC_ACQUIRE))
        free(text);
}

int mc__pool_wait_word(mc_pool *p, _Atomic uint32_t *word, uint32_t expected, int64_t deadline_ns)
{
    int64_t slice = mc__now_ns() + MC_WAIT_SLICE_NS;
    int r = mc__futex_wait(word, expected, slice < deadline_ns ? slice : deadline_ns);
    if (atomic_load_explicit(&p->closing, memory_order_acquire))
        return MC_ESTATE;
    if (r != MC_ETIMEDOUT)
        return r;
    if (zygote_exited(p))
        return MC_EPOOLDIED;
    mc_header *h = p->hdr;
    /* Insurance for the one-spinner rule (queue.c): a submit skips waking
       a sleeper while a worker spins; should that spinner stop running
       (stopped, or killed and not yet replaced), queued work still gets a
       worker within one slice. No system call unless a worker sleeps. */
    if (mc__ring_has_work(h))
        mc__wake_workers(h, 1);
    if (atomic_load_explicit(&h->workers_failing, memory_order_acquire) >= h->nworkers) {
        collect_init_error(p);
        return MC_EWORKERINIT; /* no worker can start: nothing would ever run */
    }
    return mc__now_ns() >= deadline_ns ? MC_ETIMEDOUT : MC_OK;
}

void mc__pool_kick_zygote(mc_pool *p)
{
    uint64_t one = 1;
    /* The eventfd cannot overflow in practice; a failed write only delays
       the stop of a cancelled task's worker to the next kick. */
    if (write(p->zygote_ctl_fd, &one, sizeof one) < 0)
        return;
}

/* ---- start ------------------------------------------------------------ */

int mc_pool_start(mc_pool **out, const mc_pool_options *opts_in)
{
    if (!out)
        return MC_EINVAL;
    *out = NULL;
    mc_pool_options o;
    if (opts_in)
        o = *opts_in;
    else
        mc_pool_options_init(&o);
    if (o.workers < 0 || o.workers > MC_WORKERS_MAX || o.queue_capacity > MC_QUEUE_MAX)
        return MC_EINVAL;
    if (o.workers == 0)
        o.workers = mc_online_cpus();
    if (o.queue_capacity == 0)
        o.queue_capacity = 256 * (size_t)o.workers;

    mc_pool *p = calloc(1, sizeof *p);
    if (!p)
        return MC_ENOMEM;
    p->memfd = p->alive_fd = p->zygote_pidfd = p->zygote_ctl_fd = -1;
    p->opts = o;
    atomic_init(&p->refs, 1);
    p->owner_pid = getpid();
    if (membarrier_ready()) /* the fast way in for this thread ("the way in") */
        p->fast_owner = (uintptr_t)pthread_self();

    void *base = NULL;
    size_t size = 0;
    int r = mc__region_create(o.region_size, &p->memfd, &base, &size);
    if (r != MC_OK) {
        free(p);
        return r;
    }
    mc_header *h = base;
    p->hdr = h;
    p->region_size = size;

    uint64_t slots_off = MC_ALIGN_UP(sizeof(mc_header), MC_CACHELINE);
    uint64_t ring_off = MC_ALIGN_UP(slots_off + (uint64_t)o.workers * sizeof(mc_worker_slot), MC_CACHELINE);
    uint64_t arena_off = MC_ALIGN_UP(ring_off + o.queue_capacity * sizeof(uint64_t), 4096);
    if (arena_off + ((uint64_t)1 << 20) > size) {
        r = MC_EINVAL; /* region_size too small for this many workers / queue */
        goto fail;
    }
    h->magic = MC_MAGIC;
    h->version = MC_LAYOUT_VERSION;
    h->nworkers = (uint32_t)o.workers;
    h->region_size = size;
    h->slots_off = slots_off;
    h->ring_off = ring_off;
    h->ring_capacity = o.queue_capacity;
    h->clock_tsc = mc__clock_tsc_usable();
    mc__arena_init(h, arena_off, size);
    if ((r = mc__lock_init(h)) != MC_OK)
        goto fail;

    int alive[2];
    if (pipe2(alive, O_CLOEXEC) < 0) {
        r = MC_ESYSTEM;
        goto fail;
    }
    p->zygote_ctl_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->zygote_ctl_fd < 0) {
        close(alive[0]);
        close(alive[1]);
        r = MC_ESYSTEM;
        goto fail;
    }

    pthread_once(&g_atfork_once, register_atfork);
    p->fork_generation = atomic_load(&g_fork_generation);

    if (o.before_fork)
        o.before_fork(o.fork_hook_arg);
    pid_t pid = fork();
    if (pid == 0) {
        close(alive[1]);
        mc_zygote_args za = {.hdr = h, .memfd = p->memfd, .alive_rd = alive[0],
                             .ctl_fd = p->zygote_ctl_fd, .opts = &p->opts};
        mc__zygote_main(&za);
    }
    int saved = errno;
    if (o.after_fork_parent)
        o.after_fork_parent(o.fork_hook_arg);
    close(alive[0]);
    if (pid < 0) {
        close(alive[1]);
        errno = saved;
        r = MC_ESYSTEM;
        goto fail;
    }
    p->alive_fd = alive[1];
    p->zygote_pid = pid;
    p->zygote_pidfd = (int)syscall(SYS_pidfd_open, pid, 0);

    pthread_mutex_lock(&g_live_mu);
    p->next_live = g_live;
    g_live = p;
    pthread_mutex_unlock(&g_live_mu);
    *out = p;
    return MC_OK;

fail:
    saved = errno;
    close_fd(&p->zygote_ctl_fd);
    mc__region_destroy(p->memfd, p->hdr, p->region_size);
    free(p);
    errno = saved;
    return r;
}

/* ---- readiness -------------------------------------------------------- */

int mc_pool_wait_ready(mc_pool *p, double timeout)
{
    if (!p)
        return MC_EINVAL;
    int r = mc__pool_enter(p);
    if (r != MC_OK)
        return r;
    mc_header *h = p->hdr;
    int64_t deadline = mc__deadline(timeout);
    for (;;) {
        uint32_t seq = atomic_load_explicit(&h->ready_seq, memory_order_acquire);
        if (atomic_load_explicit(&h->init_failed, memory_order_acquire)) {
            collect_init_error(p);
            r = MC_EWORKERINIT;
            break;
        }
        uint32_t ready = 0;
        for (uint32_t i = 0; i < h->nworkers; i++) {
            mc_worker_slot *s = mc__slot(h, i);
            ready += atomic_load_explicit(&s->state, memory_order_acquire) == MC_WS_READY;
        }
        if (ready == h->nworkers) {
            r = MC_OK;
            break;
        }
        r = mc__pool_wait_word(p, &h->ready_seq, seq, deadline);
        if (r != MC_OK)
            break;
    }
    mc__pool_leave(p);
    return r;
}

/* ---- stop ------------------------------------------------------------- */

static void unlink_live(mc_pool *p)
{
    pthread_mutex_lock(&g_live_mu);
    for (mc_pool **pp = &g_live; *pp; pp = &(*pp)->next_live) {
        if (*pp == p) {
            *pp = p->next_live;
            break;
        }
    }
    pthread_mutex_unlock(&g_live_mu);
}

static int reap_zygote(mc_pool *p)
{
    double grace = mc__stop_grace(&p->opts);
    if (p->zygote_pidfd >= 0) {
        /* The zygote needs at most the grace period; give it a margin,
           then make sure (its workers die with it). */
        int64_t deadline = mc__deadline(grace + 5.0);
        for (;;) {
            int64_t left = deadline - mc__now_ns();
            struct pollfd pfd = {.fd = p->zygote_pidfd, .events = POLLIN};
            int n = poll(&pfd, 1, left <= 0 ? 0 : (int)(left / 1000000) + 1);
            if (n > 0)
                break;
            if (n == 0) {
                kill(p->zygote_pid, SIGKILL);
                break;
            }
            if (errno != EINTR)
                break;
        }
    }
    int status;
    while (waitpid(p->zygote_pid, &status, 0) < 0) {
        if (errno != EINTR)
            return errno == ECHILD ? MC_OK : MC_ESYSTEM;
    }
    return MC_OK;
}

int mc_pool_stop(mc_pool *p)
{
    if (!p)
        return MC_EINVAL;
    if (atomic_exchange(&p->closing, 1))
        return MC_ESTATE;
    unlink_live(p);
    int r = MC_OK;

    if (owned_here(p)) {
        mc_header *h = p->hdr;
        atomic_store_explicit(&h->stopping, 1, memory_order_seq_cst);
        /* Wake every sleeper: idle workers leave, blocked callers look up. */
        mc__futex_bump_wake(&h->work_seq, INT_MAX);
        mc__futex_bump_wake(&h->space_seq, INT_MAX);
        mc__futex_bump_wake(&h->ready_seq, INT_MAX);
        uint64_t one = 1;
        if (write(p->zygote_ctl_fd, &one, sizeof one) < 0)
            kill(p->zygote_pid, SIGKILL);
        r = reap_zygote(p);
        /* Other threads still inside the API see `closing` within one
           wait slice and leave; only then is the region safe to unmap. */
        see_fast_calls(p);
        while (atomic_load_explicit(&p->active, memory_order_acquire) > 0 ||
               atomic_load_explicit(&p->fast_active, memory_order_acquire) > 0)
            usleep(1000);
    }
    close_fd(&p->alive_fd);
    close_fd(&p->zygote_ctl_fd);
    close_fd(&p->zygote_pidfd);
    close_fd(&p->memfd);
    /* The mapping itself goes with the last reference: groups not yet
       destroyed and holds (mc_group_hold) keep their bytes readable. */
    mc__pool_unref(p);
    return r;
}

/* ---- accessors -------------------------------------------------------- */

int mc_pool_workers(const mc_pool *p)
{
    return p ? p->opts.workers : MC_EINVAL;
}

pid_t mc_pool_zygote_pid(const mc_pool *p)
{
    return p ? p->zygote_pid : 0;
}

const char *mc_pool_error(const mc_pool *p)
{
    const char *e = p ? __atomic_load_n(&p->error, __ATOMIC_ACQUIRE) : NULL;
    return e ? e : "";
}

int mc_pool_worker_pids(const mc_pool *cp, pid_t *pids, int max)
{
    mc_pool *p = (mc_pool *)cp;
    if (!p || (!pids && max > 0) || max < 0)
        return MC_EINVAL;
    int r = mc__pool_enter(p);
    if (r != MC_OK)
        return r;
    int n = 0;
    mc_header *h = p->hdr;
    for (uint32_t i = 0; i < h->nworkers && n < max; i++) {
        mc_worker_slot *s = mc__slot(h, i);
        pid_t pid = atomic_load_explicit(&s->pid, memory_order_acquire);
        if (pid > 0)
            pids[n++] = pid;
    }
    mc__pool_leave(p);
    return n;
}

int mc_pool_get_stats(mc_pool *p, mc_pool_stats *stats, mc_worker_stats *workers, int max)
{
    if (!p || (!workers && max > 0) || max < 0)
        return MC_EINVAL;
    int r = mc__pool_enter(p);
    if (r != MC_OK)
        return r;
    mc_header *h = p->hdr;
    mc_pool_stats total = {.workers = (int)h->nworkers};
    int n = 0;
    for (uint32_t i = 0; i < h->nworkers; i++) {
        mc_worker_slot *s = mc__slot(h, i);
        mc_worker_stats w = {
            .pid = atomic_load_explicit(&s->pid, memory_order_acquire),
            .tasks_done = atomic_load_explicit(&s->tasks_done, memory_order_relaxed),
            .busy_ns = atomic_load_explicit(&s->busy_ns, memory_order_relaxed),
            .bytes_out = atomic_load_explicit(&s->bytes_out, memory_order_relaxed),
            .respawns = atomic_load_explicit(&s->respawns, memory_order_relaxed),
            .cancel_kills = atomic_load_explicit(&s->cancel_kills, memory_order_relaxed),
            .start_failures = atomic_load_explicit(&s->start_failures, memory_order_relaxed),
            .retirements = atomic_load_explicit(&s->retirements, memory_order_relaxed),
        };
        total.live_workers += w.pid > 0;
        total.bytes_out += w.bytes_out;
        if (n < max)
            workers[n++] = w;
    }
    if (stats) {
        /* Racy reads of lock-guarded words, for a report: fine on x86-64
           and arm64 for aligned 64-bit loads. */
        uint64_t head = __atomic_load_n(&h->ring_head, __ATOMIC_RELAXED);
        uint64_t tail = __atomic_load_n(&h->ring_tail, __ATOMIC_RELAXED);
        total.queued = tail >= head ? tail - head : 0;
        total.bytes_in = atomic_load_explicit(&h->bytes_in, memory_order_relaxed);
        total.shm_in_use = __atomic_load_n(&h->arena.in_use, __ATOMIC_RELAXED);
        total.shm_size = h->arena.end - h->arena.start;
        *stats = total;
    }
    mc__pool_leave(p);
    return n;
}

