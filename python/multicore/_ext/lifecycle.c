/*
 * lifecycle.c — starting and stopping a pool, for the process-wide one
 * (initialize()/shutdown(), module.c) and for Pool objects (pool.c) alike.
 *
 * Owns: whether a pool ref's pool runs here (mcx_ref_alive), mcx_ref_start
 * / mcx_ref_stop on a pool ref, the lifecycle lock that serializes them,
 * the fork hooks that keep the interpreter consistent across the engine's
 * forks, the cached pid that tells a fork() child from the pool's owner,
 * and the deferred destruction of groups freed while a stop runs.
 *
 * Rules kept here:
 *   - starts and stops are serialized by lifecycle_lock and may be called
 *     from any thread, any number of times.
 *   - Every thread that touches a pool's shared memory counts itself in
 *     mcx.inflight; a stop first hides the pool (pool = NULL, generation
 *     bumped, so no new work starts), waits for inflight to drain, and only
 *     then calls mc_pool_stop() with the GIL released.
 *   - A process forked from the caller (os.fork()) inherits the refs but
 *     not the pools: owner_pid tells them apart, and such a child never
 *     stops or frees the parent's pool; it may start its own.
 */
#include "ext.h"

#include <pthread.h>

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int mcx_ref_alive(const mcx_poolref *ref)
{
    return ref->pool != NULL && ref->owner_pid == mcx_getpid();
}

int mcx_pool_alive(void)
{
    return mcx_ref_alive(&mcx.main);
}

void mcx_defer_or_destroy_group(mcx_poolref *ref, mc_group *group, uint64_t generation,
                                pid_t pid)
{
    if (group == NULL)
        return;
    if (pid != mcx_getpid())
        return;   /* inherited through fork(): the parent's, not ours */
    if (ref->stopping && generation == ref->stopping_generation) {
        /* mc_pool_stop() runs right now in another thread: destroy the
           group once it has returned. */
        if (ref->n_deferred == ref->cap_deferred) {
            size_t cap = ref->cap_deferred ? ref->cap_deferred * 2 : 16;
            mc_group **grown = PyMem_RawRealloc(ref->deferred,
                                                cap * sizeof *grown);
            if (grown == NULL)
                return;   /* leak one handle rather than race the stop */
            ref->deferred = grown;
            ref->cap_deferred = cap;
        }
        ref->deferred[ref->n_deferred++] = group;
        return;
    }
    mc_group_destroy(group);
}

/* ---------------------------------------------------------------------
 * Fork hooks (called by the engine around each of its forks)
 *
 * The zygote runs no Python at all. Its memory is the caller's as it was
 * inside PyOS_BeforeFork() (import lock and runtime locks taken, streams
 * flushed, fresh stream objects prepared: forksafe.c), and it keeps it
 * that way: it skips PyOS_AfterFork_Child(), and the hooks around the
 * forks it makes do nothing. Each worker, forked from that snapshot, is
 * then in the state of a direct child of the caller and runs
 * PyOS_AfterFork_Child() and the stream repair itself. This takes the
 * interpreter's repair (about a millisecond) off the start's critical
 * path, as the workers do theirs in parallel, and CPython's at-fork
 * callbacks run as for one fork per worker: before and after_in_parent
 * once in the caller, after_in_child once in each worker (a replacement
 * too).
 * --------------------------------------------------------------------- */

/* Set in the zygote (inherited by nothing that runs Python: each worker
   clears it first thing). */
static int in_zygote;

static void hook_before_fork(void *arg)
{
    (void)arg;
    if (in_zygote)
        return;
    /* Buffered output would otherwise be written again by the child. */
    mcx_flush_std();
    mcx_prepare_streams_for_fork();
    PyOS_BeforeFork();
}

static void hook_after_fork_parent(void *arg)
{
    (void)arg;
    if (in_zygote)
        return;
    PyOS_AfterFork_Parent();
    mcx_forget_prepared_streams();
}

static void ignore_sigint(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
}

static void hook_after_fork_child(void *arg, mc_role role)
{
    (void)arg;
    /* Ctrl-C reaches the whole process group: it is the caller's to
       handle. The zygote and the workers ignore it at the C level, so no
       worker prints a KeyboardInterrupt traceback. */
    ignore_sigint();
    if (role == MC_ROLE_ZYGOTE) {
        in_zygote = 1;
        return;
    }
    assert(role == MC_ROLE_WORKER);
    in_zygote = 0;
    PyOS_AfterFork_Child();
    mcx_renew_streams_after_fork();
    /* Park the GIL; the worker callbacks take it when they run Python. */
    mcx.worker_tstate = PyEval_SaveThread();
}

/* ---------------------------------------------------------------------
 * Lifecycle lock
 * --------------------------------------------------------------------- */

/* In a process forked from the caller, forget the parent's pool and a
   lock some vanished thread may hold. */
pid_t mcx_pid;

static void refresh_pid(void)
{
    mcx_pid = getpid();
}

int mcx_forget_if_forked(void)
{
    static int registered;
    if (!registered) {
        /* every fork (os.fork(), the engine's own) runs this in the child */
        pthread_atfork(NULL, NULL, refresh_pid);
        registered = 1;
    }
    if (mcx_pid != getpid())
        refresh_pid();
    pid_t me = mcx_getpid();
    if (mcx.lifecycle_lock == NULL || mcx.lock_pid != me) {
        PyThread_type_lock lock = PyThread_allocate_lock();
        if (lock == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        /* The old lock (if any) is left alone: freeing a lock that may be
           held is undefined. */
        mcx.lifecycle_lock = lock;
        mcx.lock_pid = me;
    }
    if (mcx.main.pool != NULL && mcx.main.owner_pid != me) {
        mcx.main.pool = NULL;
        mcx.main.generation++;
        mcx.main.workers = 0;
        mcx.inflight = 0;
        mcx_tls_inflight = 0;
        mcx.main.stopping = 0;
        mcx.main.n_deferred = 0;
    }
    return 0;
}

static int lifecycle_acquire(void)
{
    if (mcx_forget_if_forked() < 0)
        return -1;
    if (!PyThread_acquire_lock(mcx.lifecycle_lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(mcx.lifecycle_lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    return 0;
}

static void lifecycle_release(void)
{
    PyThread_release_lock(mcx.lifecycle_lock);
}

/* Stop a pool with the GIL released, keeping any pending exception.
   *err receives errno as mc_pool_stop() left it. */
static int stop_pool(mc_pool *pool, int *err)
{
    PyObject *type, *value, *tb;
    int rc, saved = 0;
    PyErr_Fetch(&type, &value, &tb);
    Py_BEGIN_ALLOW_THREADS
    errno = 0;
    rc = mc_pool_stop(pool);
    saved = errno;
    Py_END_ALLOW_THREADS
    PyErr_Restore(type, value, tb);
    if (err != NULL)
        *err = saved;
    return rc;
}

/* mcx_wait_fn for the workers' init. */
static int ready_slice(void *pool, double slice)
{
    return mc_pool_wait_ready(pool, slice);
}

/* Start ref's pool unless it runs. 0, or -1 with an exception. */
int mcx_ref_start(mcx_poolref *ref, int workers, size_t region_size, PyObject *init_obj,
                  PyObject *exit_obj)
{
    if (lifecycle_acquire() < 0)
        return -1;
    if (ref->pool != NULL) {           /* already running: harmless */
        lifecycle_release();
        return 0;
    }

    if (init_obj != Py_None) {
        Py_INCREF(init_obj);
        Py_XSETREF(ref->worker_init, init_obj);
    } else {
        Py_CLEAR(ref->worker_init);
    }
    if (exit_obj != Py_None) {
        Py_INCREF(exit_obj);
        Py_XSETREF(ref->worker_exit, exit_obj);
    } else {
        Py_CLEAR(ref->worker_exit);
    }

    ref->np_workers = workers;   /* read by each worker (npalloc.c) */
    mc_pool_options opts;
    mc_pool_options_init(&opts);
    opts.workers = workers;
    opts.region_size = region_size;
    opts.max_tasks_per_worker = ref->max_tasks;
    opts.worker_init = mcx_worker_init;
    opts.worker_exit = mcx_worker_exit;
    opts.worker_init_arg = ref;
    opts.worker_exit_arg = ref;
    opts.before_fork = hook_before_fork;
    opts.after_fork_parent = hook_after_fork_parent;
    opts.after_fork_child = hook_after_fork_child;

    /* The GIL stays held: the fork hooks run in this thread and need it. */
    mc_pool *pool = NULL;
    errno = 0;
    int rc = mc_pool_start(&pool, &opts);
    if (rc != MC_OK) {
        int err = errno;
        Py_CLEAR(ref->worker_init);
        Py_CLEAR(ref->worker_exit);
        lifecycle_release();
        mcx_raise_mc(rc, err, "multicore.initialize");
        return -1;
    }

    /* Wait for every worker's init with the GIL released, in slices so
       that Ctrl-C is seen. */
    rc = mcx_wait_sliced(ready_slice, NULL, pool, -1.0);
    if (rc == MC_EWORKERINIT)
        mcx_raise_worker_init(mc_pool_error(pool));
    else if (rc != MC_OK && rc != MCX_RAISED)
        mcx_raise_mc(rc, 0, "multicore.initialize");
    if (rc != MC_OK)
        goto fail_stop;

    ref->pool = pool;
    ref->owner_pid = mcx_getpid();
    ref->generation++;
    ref->workers = mc_pool_workers(pool);
    lifecycle_release();
    return 0;

fail_stop:
    stop_pool(pool, NULL);
    Py_CLEAR(ref->worker_init);
    Py_CLEAR(ref->worker_exit);
    lifecycle_release();
    return -1;
}

/* Stop ref's pool if it runs. 0, or -1 with an exception. */
int mcx_ref_stop(mcx_poolref *ref)
{
    if (mcx_tls_inflight > 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "multicore.shutdown() cannot be called while this "
                        "thread is reading task results or writing task "
                        "arguments (from a signal handler or an unpickler)");
        return -1;
    }
    if (lifecycle_acquire() < 0)
        return -1;
    if (ref->pool == NULL) {
        lifecycle_release();
        return 0;
    }
    mc_pool *pool = ref->pool;
    /* Hide the pool: Task() now returns None, run()/get() raise
       PoolNotRunningError, and waiters leave their wait slices. */
    ref->pool = NULL;
    ref->stopping_generation = ref->generation;
    ref->generation++;
    ref->stopping = 1;
    while (mcx.inflight > 0) {
        Py_BEGIN_ALLOW_THREADS
        struct timespec ts = {0, 1000000};   /* 1 ms */
        nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
    }
    int err = 0;
    int rc = stop_pool(pool, &err);
    ref->stopping = 0;
    /* Groups freed while the stop ran: destroying them is safe now. */
    for (size_t i = 0; i < ref->n_deferred; i++)
        mc_group_destroy(ref->deferred[i]);
    ref->n_deferred = 0;
    ref->workers = 0;
    Py_CLEAR(ref->worker_init);
    Py_CLEAR(ref->worker_exit);
    Py_CLEAR(mcx.last_fn);
    Py_CLEAR(mcx.last_fn_bytes);
    lifecycle_release();
    if (rc != MC_OK) {
        mcx_raise_mc(rc, err, "multicore.shutdown");
        return -1;
    }
    return 0;
}

