/*
 * zygote.c — the process that forks, watches and replaces the workers.
 *
 * mc_pool_start() forks the zygote once; from then on every worker is
 * forked by this single-threaded process, so forking stays safe however
 * many threads the caller starts later. The zygote sleeps in poll() on
 * three descriptors and does nothing else (no polling loop, no timer):
 *
 *   signalfd(SIGCHLD)  a worker exited: fail the task it held, free what it
 *                      had allocated, and fork a replacement
 *   ctl eventfd        a caller cancelled tasks that workers are running:
 *                      kill those workers (a replacement takes over);
 *                      or mc_pool_stop(): let workers finish, then reap
 *                      them (killing those still busy after the grace)
 *   alive pipe         EOF means the caller is gone (even by SIGKILL): kill
 *                      every worker at once and exit
 *
 * A worker that dies is replaced at once, and so is one that retired after
 * max_tasks_per_worker tasks (its slot says MC_WS_RETIRED: no task failed,
 * and its replacement is not a start failure). A replacement that dies before it
 * is ready (its init callback fails: the database is down, say) is retried
 * with exponential back-off, the poll timeout being the only timer; after
 * MC_START_FAILURES_MAX failures in a row its slot counts as failing, and
 * once every slot fails, waiting callers get MC_EWORKERINIT instead of
 * waiting for tasks no worker can run.
 *
 * Workers die with the zygote through PR_SET_PDEATHSIG, so no process of a
 * pool outlives its caller.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

/* Back-off between tries of a replacement that keeps failing to start:
   10 ms, doubling, at most 2 s. */
#define MC_BACKOFF_FIRST_NS 10000000ll
#define MC_BACKOFF_MAX_NS 2000000000ll

typedef struct zygote {
    mc_header *h;
    const mc_pool_options *opts;
    sigset_t orig_mask;
    int sfd, alive_rd, ctl_fd;
    bool stopping;
    int64_t stop_deadline;
} zygote;

static void mark_init_failed(mc_header *h, mc_worker_slot *slot, const char *why)
{
    if (!slot->error_off)
        mc__slot_set_error(h, slot, why);
    atomic_store_explicit(&slot->state, MC_WS_INIT_FAILED, memory_order_release);
    atomic_store_explicit(&h->init_failed, 1, memory_order_release);
    mc__futex_bump_wake(&h->ready_seq, INT_MAX);
}

static void schedule_retry(zygote *z, mc_worker_slot *slot);

static void spawn(zygote *z, unsigned i)
{
    mc_worker_slot *slot = mc__slot(z->h, i);
    slot->respawn_at_ns = 0;
    atomic_store_explicit(&slot->doomed, 0, memory_order_relaxed);
    atomic_store_explicit(&slot->state, MC_WS_STARTING, memory_order_release);
    if (z->opts->before_fork)
        z->opts->before_fork(z->opts->fork_hook_arg);
    pid_t pid = fork();
    if (pid == 0) {
        close(z->sfd);
        close(z->alive_rd);
        close(z->ctl_fd);
        mc__worker_main(z->h, (int)i, z->opts, &z->orig_mask);
    }
    int saved = errno;
    if (z->opts->after_fork_parent)
        z->opts->after_fork_parent(z->opts->fork_hook_arg);
    if (pid < 0) {
        char why[128];
        snprintf(why, sizeof why, "could not fork worker %u: %s", i, strerror(saved));
        if (atomic_load_explicit(&slot->respawns, memory_order_relaxed) == 0) {
            mark_init_failed(z->h, slot, why);
        } else {
            mc__slot_set_error(z->h, slot, why);
            schedule_retry(z, slot);
        }
        return;
    }
    atomic_store_explicit(&slot->pid, (int32_t)pid, memory_order_release);
}

static unsigned live_workers(zygote *z)
{
    unsigned n = 0;
    for (unsigned i = 0; i < z->h->nworkers; i++)
        n += atomic_load_explicit(&mc__slot(z->h, i)->pid, memory_order_relaxed) != 0;
    return n;
}

static void describe_death(char *buf, size_t size, unsigned i, pid_t pid, int wstatus)
{
    if (WIFSIGNALED(wstatus))
        snprintf(buf, size, "worker %u (pid %d) was killed by signal %d during its init callback", i,
                 (int)pid, WTERMSIG(wstatus));
    else
        snprintf(buf, size, "worker %u (pid %d) exited with status %d during its init callback", i,
                 (int)pid, WEXITSTATUS(wstatus));
}

/* A replacement died before it was ready: try again later, and count the
   slot as failing once it has failed too often in a row. */
static void schedule_retry(zygote *z, mc_worker_slot *slot)
{
    mc_header *h = z->h;
    uint32_t n = atomic_fetch_add_explicit(&slot->start_failures, 1, memory_order_relaxed) + 1;
    if (n >= MC_START_FAILURES_MAX && atomic_exchange(&slot->failing, 1) == 0)
        atomic_fetch_add_explicit(&h->workers_failing, 1, memory_order_acq_rel);
    int64_t delay = MC_BACKOFF_FIRST_NS;
    for (uint32_t k = 1; k < n && delay < MC_BACKOFF_MAX_NS; k++)
        delay *= 2;
    if (delay > MC_BACKOFF_MAX_NS)
        delay = MC_BACKOFF_MAX_NS;
    atomic_store_explicit(&slot->state, MC_WS_EMPTY, memory_order_release);
    slot->respawn_at_ns = mc__now_ns() + delay;
}

static _Noreturn void finish(zygote *z);

static void on_worker_exit(zygote *z, pid_t pid, int wstatus)
{
    mc_header *h = z->h;
    mc_worker_slot *slot = NULL;
    unsigned i;
    for (i = 0; i < h->nworkers; i++) {
        if (atomic_load_explicit(&mc__slot(h, i)->pid, memory_order_relaxed) == pid) {
            slot = mc__slot(h, i);
            break;
        }
    }
    if (!slot)
        return;

    if (mc__lock(h) != MC_OK) {
        /* The shared state failed its check after a crash (the lock is
           unrecoverable): nothing can run any more. Rather than respawn
           workers that would die on the lock at once, take the pool down;
           waiting callers get MC_EPOOLDIED. */
        atomic_store_explicit(&slot->pid, 0, memory_order_release);
        if (!z->stopping)
            finish(z);
        return;
    }
    mc__recover_worker(h, slot, pid, wstatus);
    mc__unlock(h);
    atomic_store_explicit(&slot->pid, 0, memory_order_release);
    uint32_t state = atomic_load_explicit(&slot->state, memory_order_acquire);
    if (z->stopping || atomic_load_explicit(&h->stopping, memory_order_acquire))
        return;
    if (state == MC_WS_STARTING || state == MC_WS_INIT_FAILED) {
        char why[160];
        describe_death(why, sizeof why, i, pid, wstatus);
        if (atomic_load_explicit(&slot->respawns, memory_order_relaxed) == 0) {
            /* The first generation: mc_pool_wait_ready() reports it and the
               pool is not usable. */
            mark_init_failed(h, slot, why);
            return;
        }
        /* A replacement (killed while it starts by the OOM killer, or its
           init callback failed): keep the reason, retry with back-off. */
        if (state == MC_WS_STARTING)
            mc__slot_set_error(h, slot, why);
        schedule_retry(z, slot);
        return;
    }
    atomic_fetch_add_explicit(&slot->respawns, 1, memory_order_relaxed);
    spawn(z, i);
}

/* Fork the replacements whose back-off has run out; returns the poll
   timeout in ms until the next one (-1: none pending). */
static int respawn_due(zygote *z)
{
    int64_t now = mc__now_ns(), next = INT64_MAX;
    for (unsigned i = 0; i < z->h->nworkers; i++) {
        mc_worker_slot *slot = mc__slot(z->h, i);
        if (!slot->respawn_at_ns)
            continue;
        if (slot->respawn_at_ns <= now) {
            atomic_fetch_add_explicit(&slot->respawns, 1, memory_order_relaxed);
            spawn(z, i);
        } else if (slot->respawn_at_ns < next) {
            next = slot->respawn_at_ns;
        }
    }
    if (next == INT64_MAX)
        return -1;
    return (int)((next - now + 999999) / 1000000);
}

/* A caller cancelled tasks: kill the workers still running them. Under the
   lock, so a worker cannot finish its task and take another one between the
   check and the kill (the doomed flag covers the instant after it). Each
   pid is our unreaped child, so it cannot have been reused. */
static void stop_cancelled(zygote *z)
{
    mc_header *h = z->h;
    if (mc__lock(h) != MC_OK)
        return;
    for (unsigned i = 0; i < h->nworkers; i++) {
        mc_worker_slot *slot = mc__slot(h, i);
        pid_t pid = atomic_load_explicit(&slot->pid, memory_order_relaxed);
        if (pid <= 0 || !slot->task_off || atomic_load_explicit(&slot->doomed, memory_order_relaxed))
            continue;
        mc_task *t = mc__task_at(h, slot->task_off);
        if (mc__task_state(t) != MC_TS_CANCELLED)
            continue;
        atomic_store_explicit(&slot->doomed, 1, memory_order_release);
        atomic_fetch_add_explicit(&slot->cancel_kills, 1, memory_order_relaxed);
        kill(pid, SIGKILL);
    }
    mc__unlock(h);
}

static void reap(zygote *z, bool block)
{
    for (;;) {
        int wstatus;
        if (block && live_workers(z) == 0)
            return;
        pid_t pid = waitpid(-1, &wstatus, block ? 0 : WNOHANG);
        if (pid > 0) {
            on_worker_exit(z, pid, wstatus);
            continue;
        }
        if (pid < 0 && errno == EINTR)
            continue;
        return;
    }
}

static void kill_workers(zygote *z)
{
    for (unsigned i = 0; i < z->h->nworkers; i++) {
        pid_t pid = atomic_load_explicit(&mc__slot(z->h, i)->pid, memory_order_relaxed);
        if (pid > 0)
            kill(pid, SIGKILL);
    }
}

static _Noreturn void finish(zygote *z)
{
    z->stopping = true;
    kill_workers(z);
    reap(z, true);
    _exit(0);
}

_Noreturn void mc__zygote_main(mc_zygote_args *a)
{
    zygote z = {.h = a->hdr, .opts = a->opts, .alive_rd = a->alive_rd, .ctl_fd = a->ctl_fd};
    mc_header *h = z.h;
    h->zygote_pid = getpid();
    if (a->memfd >= 0)
        close(a->memfd); /* the mapping is all the zygote and workers need */

    if (z.opts->after_fork_child)
        z.opts->after_fork_child(z.opts->fork_hook_arg, MC_ROLE_ZYGOTE);

    /* Ctrl-C reaches the whole process group; the caller decides what it
       means, so neither the zygote nor the workers react to it. */
    struct sigaction ign = {.sa_handler = SIG_IGN}, dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGINT, &ign, NULL);
    sigaction(SIGCHLD, &dfl, NULL); /* a caller's SIG_IGN would auto-reap workers */

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &z.orig_mask);
    sigdelset(&z.orig_mask, SIGCHLD);
    z.sfd = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (z.sfd < 0)
        _exit(MC_EXIT_ZYGOTE_SETUP);

    for (unsigned i = 0; i < h->nworkers; i++)
        spawn(&z, i);

    for (;;) {
        struct pollfd p[3] = {
            {.fd = z.alive_rd, .events = POLLIN},
            {.fd = z.ctl_fd, .events = POLLIN},
            {.fd = z.sfd, .events = POLLIN},
        };
        int timeout = z.stopping ? -1 : respawn_due(&z);
        if (z.stopping) {
            int64_t left = z.stop_deadline - mc__now_ns();
            timeout = left <= 0 ? 0 : (int)((left + 999999) / 1000000);
        }
        int n = poll(p, 3, timeout);
        if (n < 0 && errno != EINTR)
            finish(&z);

        if (n > 0 && p[2].revents) {
            struct signalfd_siginfo si;
            while (read(z.sfd, &si, sizeof si) == (ssize_t)sizeof si)
                ;
            reap(&z, false);
        }
        if (n > 0 && p[1].revents) {
            uint64_t v;
            if (read(z.ctl_fd, &v, sizeof v) < 0 && errno != EAGAIN)
                finish(&z);
            stop_cancelled(&z);
            if (atomic_load_explicit(&h->stopping, memory_order_acquire) && !z.stopping) {
                double grace = mc__stop_grace(z.opts);
                z.stopping = true;
                z.stop_deadline = mc__deadline(grace);
            }
        }
        if (n > 0 && p[0].revents) {
            char c;
            ssize_t r = read(z.alive_rd, &c, 1);
            if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN))
                finish(&z); /* the caller is gone */
        }
        if (z.stopping) {
            reap(&z, false);
            if (live_workers(&z) == 0)
                _exit(0);
            if (mc__now_ns() >= z.stop_deadline)
                finish(&z);
        }
    }
}
