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
 *   ctl eventfd        mc_pool_stop(): let workers finish, then reap them
 *                      (killing those still busy after the grace period)
 *   alive pipe         EOF means the caller is gone (even by SIGKILL): kill
 *                      every worker at once and exit
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

/* A replacement worker that dies this many times in a row before it is
   ready is not replaced again. */
#define MC_MAX_INIT_CRASHES 5

typedef struct zygote {
    mc_header *h;
    const mc_pool_options *opts;
    sigset_t orig_mask;
    int sfd, alive_rd, ctl_fd;
    bool stopping;
    int64_t stop_deadline;
} zygote;

static mc_worker_slot *slot_at(mc_header *h, unsigned i)
{
    return (mc_worker_slot *)mc_ptr(h, h->slots_off) + i;
}

static void mark_init_failed(mc_header *h, mc_worker_slot *slot, const char *why)
{
    if (!slot->error_off)
        mc_slot_set_error(h, slot, why);
    atomic_store_explicit(&slot->state, MC_WS_INIT_FAILED, memory_order_release);
    atomic_store_explicit(&h->init_failed, 1, memory_order_release);
    atomic_fetch_add_explicit(&h->ready_seq, 1, memory_order_acq_rel);
    mc_futex_wake(&h->ready_seq, INT_MAX);
}

static void spawn(zygote *z, unsigned i)
{
    mc_worker_slot *slot = slot_at(z->h, i);
    atomic_store_explicit(&slot->state, MC_WS_STARTING, memory_order_release);
    if (z->opts->before_fork)
        z->opts->before_fork(z->opts->fork_hook_arg);
    pid_t pid = fork();
    if (pid == 0) {
        close(z->sfd);
        close(z->alive_rd);
        close(z->ctl_fd);
        mc_worker_main(z->h, (int)i, z->opts, &z->orig_mask);
    }
    int saved = errno;
    if (z->opts->after_fork_parent)
        z->opts->after_fork_parent(z->opts->fork_hook_arg);
    if (pid < 0) {
        char why[128];
        snprintf(why, sizeof why, "could not fork worker %u: %s", i, strerror(saved));
        mark_init_failed(z->h, slot, why);
        return;
    }
    atomic_store_explicit(&slot->pid, (int32_t)pid, memory_order_release);
}

static unsigned live_workers(zygote *z)
{
    unsigned n = 0;
    for (unsigned i = 0; i < z->h->nworkers; i++)
        n += atomic_load_explicit(&slot_at(z->h, i)->pid, memory_order_relaxed) != 0;
    return n;
}

static void on_worker_exit(zygote *z, pid_t pid, int wstatus)
{
    mc_header *h = z->h;
    mc_worker_slot *slot = NULL;
    unsigned i;
    for (i = 0; i < h->nworkers; i++) {
        if (atomic_load_explicit(&slot_at(h, i)->pid, memory_order_relaxed) == pid) {
            slot = slot_at(h, i);
            break;
        }
    }
    if (!slot)
        return;

    if (mc_lock(h) == MC_OK) {
        mc_recover_worker(h, slot, pid, wstatus);
        mc_unlock(h);
    }
    atomic_store_explicit(&slot->pid, 0, memory_order_release);
    uint32_t state = atomic_load_explicit(&slot->state, memory_order_acquire);
    if (z->stopping || atomic_load_explicit(&h->stopping, memory_order_acquire))
        return;
    if (state == MC_WS_STARTING) {
        /* Dying in the init callback of the first generation is an init
           failure the caller must hear about; a replacement killed while it
           starts (by the OOM killer, say) is retried, a few times. */
        bool first = atomic_load_explicit(&slot->respawns, memory_order_relaxed) == 0;
        if (first || ++slot->init_crashes >= MC_MAX_INIT_CRASHES) {
            char why[160];
            if (WIFSIGNALED(wstatus))
                snprintf(why, sizeof why, "worker %u (pid %d) was killed by signal %d during its init callback",
                         i, (int)pid, WTERMSIG(wstatus));
            else
                snprintf(why, sizeof why, "worker %u (pid %d) exited with status %d during its init callback",
                         i, (int)pid, WEXITSTATUS(wstatus));
            mark_init_failed(h, slot, why);
            return;
        }
    } else {
        slot->init_crashes = 0;
    }
    if (state == MC_WS_INIT_FAILED)
        return;
    atomic_fetch_add_explicit(&slot->respawns, 1, memory_order_relaxed);
    spawn(z, i);
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
        pid_t pid = atomic_load_explicit(&slot_at(z->h, i)->pid, memory_order_relaxed);
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

_Noreturn void mc_zygote_main(mc_zygote_args *a)
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
        _exit(2);

    for (unsigned i = 0; i < h->nworkers; i++)
        spawn(&z, i);

    for (;;) {
        struct pollfd p[3] = {
            {.fd = z.alive_rd, .events = POLLIN},
            {.fd = z.ctl_fd, .events = POLLIN},
            {.fd = z.sfd, .events = POLLIN},
        };
        int timeout = -1;
        if (z.stopping) {
            int64_t left = z.stop_deadline - mc_now_ns();
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
            if (atomic_load_explicit(&h->stopping, memory_order_acquire) && !z.stopping) {
                double grace = z.opts->stop_grace < 0 ? 10.0 : z.opts->stop_grace;
                z.stopping = true;
                z.stop_deadline = mc_deadline(grace);
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
            if (mc_now_ns() >= z.stop_deadline)
                finish(&z);
        }
    }
}
