/*
 * multicore.h — the public C API of libmulticore.
 *
 * libmulticore runs function-pointer tasks on a pool of persistent worker
 * processes. Task arguments and results travel through one shared-memory
 * region (an anonymous memfd mapped before any fork, so every process sees
 * it at the same address); idle workers and waiting callers sleep on futexes.
 *
 *   caller process ── mc_pool ──┐ shared region: header, task queue, arena
 *        │                      │
 *        └── zygote (forked by mc_pool_start; single-threaded, forks and
 *              │                 reaps the workers, watches the caller)
 *              ├── worker 0 … worker N-1
 *
 * Because workers are forked from the caller at mc_pool_start(), everything
 * the program had in memory at that moment (functions, globals, loaded
 * libraries) exists in the workers at the same addresses. A task function
 * must therefore be linked into the program or loaded before the pool starts.
 *
 * Conventions
 *   - Every public name starts with mc_ / MC_. The library's internal
 *     functions start with mc__ (two underscores, as libuv's uv__): the
 *     static library carries them, but they are no contract.
 *   - Functions that can fail return an int: MC_OK (0) or a negative MC_E*
 *     code; mc_strerror() names it. Nothing is printed.
 *   - Timeouts are seconds as a double; a negative timeout waits forever.
 *   - A waiting call that a signal handler interrupts returns MC_EINTR, so a
 *     program can react to the signal; calling it again resumes the wait.
 *   - An mc_pool may be used from many threads at once. An mc_group belongs
 *     to one thread at a time; different groups may be used concurrently.
 *   - Linux only (futexes, memfd, prctl).
 */
#ifndef MULTICORE_H
#define MULTICORE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MC_VERSION_MAJOR 0
#define MC_VERSION_MINOR 2
#define MC_VERSION_PATCH 0

#if defined(__GNUC__)
#define MC_EXPORT __attribute__((visibility("default")))
#else
#define MC_EXPORT
#endif

/* ------------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------------ */

enum {
    MC_OK = 0,
    MC_EINVAL = -1,       /* an argument is invalid (NULL handle, bad size, ...) */
    MC_ENOMEM = -2,       /* not enough memory: shared region or process heap */
    MC_ETIMEDOUT = -3,    /* the timeout passed before the wait was satisfied */
    MC_EINTR = -4,        /* a signal handler interrupted the wait; call again */
    MC_ESTATE = -5,       /* wrong state: pool stopped, or used by another process
                             (a fork() child), or a submit without a reserve */
    MC_EWORKERDIED = -6,  /* the worker running the task died (see mc_result) */
    MC_ETASK = -7,        /* the task function returned non-zero (mc_result.task_code) */
    MC_ECANCELED = -8,    /* the task was cancelled before it ran */
    MC_ESYSTEM = -9,      /* a system call failed; errno holds its error */
    MC_EPOOLDIED = -10,   /* the pool's zygote process died; the pool is unusable */
    MC_EWORKERINIT = -11  /* a worker's init callback failed (mc_pool_error()) */
};

/* A short English description of an MC_E* code (never NULL). */
MC_EXPORT const char *mc_strerror(int err);

/* ------------------------------------------------------------------------
 * Worker side: what a task function sees
 * ------------------------------------------------------------------------ */

/* The context of the task a worker is running; valid only during the call. */
typedef struct mc_task_ctx mc_task_ctx;

/*
 * A task function. It runs in a worker process with the argument bytes the
 * caller submitted (a view of shared memory, valid during the call; do not
 * write to it). It returns 0 for success; any other value marks the task as
 * failed with that code (the caller sees MC_ETASK and mc_result.task_code),
 * and any result it set is still delivered (an error message, for example).
 */
typedef int (*mc_task_fn)(const void *arg, size_t arg_len, mc_task_ctx *ctx);

/*
 * Allocate the task's result in shared memory and return a pointer to len
 * writable bytes: the task writes its result there directly and the caller
 * reads the same bytes, with no copy in between. A result small enough to
 * fit in the room the task's own block has left after its arguments is
 * placed there (no allocation, no lock); a larger one gets a block of its
 * own (alignment: see MC_DATA_ALIGN_MIN). Calling it again replaces the
 * previous result. Returns NULL if the memory is not available (the task
 * may then return an error code). len may be 0.
 */
MC_EXPORT void *mc_result_alloc(mc_task_ctx *ctx, size_t len);

/* mc_result_alloc() plus a copy of len bytes from data. MC_OK or MC_ENOMEM. */
MC_EXPORT int mc_result_set(mc_task_ctx *ctx, const void *data, size_t len);

/* In a worker process: its index, 0 .. workers-1. Elsewhere: -1. */
MC_EXPORT int mc_worker_index(void);

/* In a worker process: the bytes its pool's region can hold (the
   shm_size of mc_pool_get_stats()), to size what the worker keeps there.
   Elsewhere: 0. */
MC_EXPORT uint64_t mc_worker_shm_size(void);

/*
 * In a worker's init callback: the message mc_pool_error() reports in the
 * caller when the callback fails (copied; any length).
 */
MC_EXPORT void mc_worker_set_error(const char *message);

/* ------------------------------------------------------------------------
 * The pool
 * ------------------------------------------------------------------------ */

typedef struct mc_pool mc_pool;

/* Where a process forked by the pool stands, for the fork hooks. */
typedef enum {
    MC_ROLE_ZYGOTE = 1,   /* forked by the caller in mc_pool_start() */
    MC_ROLE_WORKER = 2    /* forked by the zygote */
} mc_role;

/* Limits of mc_pool_options: mc_pool_start() answers MC_EINVAL beyond them. */
#define MC_WORKERS_MAX 65536                /* workers */
#define MC_QUEUE_MAX ((size_t)1 << 26)      /* queue_capacity */
#define MC_REGION_MIN ((size_t)64 << 20)    /* region_size, when not 0: 64 MiB */
/* stop_grace when it is negative, in seconds. */
#define MC_STOP_GRACE_DEFAULT 10.0

typedef struct mc_pool_options {
    /* Number of worker processes, at most MC_WORKERS_MAX; 0 means the
       number of online CPUs. */
    int workers;

    /* Tasks that may wait in the queue before mc_submit() blocks
       (backpressure), at most MC_QUEUE_MAX; 0 means 256 per worker. */
    size_t queue_capacity;

    /* Bytes of address space reserved for the shared region; pages are only
       committed when used. 0 means twice the machine's RAM (at least 1 GiB),
       halved until the mapping succeeds; otherwise at least MC_REGION_MIN
       (rounded up to whole pages). Arguments and results in flight
       together cannot exceed it. */
    size_t region_size;

    /* Runs once in each worker, before its first task. Return 0 to proceed;
       non-zero makes mc_pool_wait_ready() fail with MC_EWORKERINIT. */
    int (*worker_init)(int worker_index, void *arg);
    void *worker_init_arg;

    /* Runs once in each worker as it leaves: during mc_pool_stop(), or
       when it retires after max_tasks_per_worker tasks. */
    void (*worker_exit)(int worker_index, void *arg);
    void *worker_exit_arg;

    /* For language bindings: called around every fork the pool makes, in
       the forking process (before, after_parent: the caller for the
       zygote, the zygote for each worker) and in the new child
       (after_child, with the child's role). Any of them may be NULL. A
       binding whose interpreter is costly to repair after a fork may leave
       the zygote unrepaired (it runs none of the binding's code) and do
       the repair in each worker, as the Python extension does. */
    void (*before_fork)(void *arg);
    void (*after_fork_parent)(void *arg);
    void (*after_fork_child)(void *arg, mc_role role);
    void *fork_hook_arg;

    /* Seconds mc_pool_stop() lets running tasks finish before it kills
       their workers; negative means MC_STOP_GRACE_DEFAULT (10 seconds). */
    double stop_grace;

    /* Tasks a worker runs before it retires: it finishes its last task,
       runs worker_exit and exits, and the zygote forks a replacement into
       its slot (running worker_init again). A retirement is not a failure:
       no task fails and mc_worker_stats.retirements counts it (respawns
       counts the replacement). Recycling bounds what a worker accumulates
       (leaks, caches, fragmentation), as multiprocessing's
       maxtasksperchild does. 0 means no limit. */
    uint64_t max_tasks_per_worker;
} mc_pool_options;

/* Fill opts with the defaults. */
MC_EXPORT void mc_pool_options_init(mc_pool_options *opts);

/*
 * Create the shared region and fork the zygote, which forks the workers.
 * Returns at once; tasks submitted before the workers are up wait in the
 * queue. opts may be NULL for the defaults. On success *pool is set.
 * The calling process should not be in the middle of another fork.
 */
MC_EXPORT int mc_pool_start(mc_pool **pool, const mc_pool_options *opts);

/*
 * Wait until every worker has run its init callback. MC_OK, MC_ETIMEDOUT,
 * MC_EINTR, or MC_EWORKERINIT (mc_pool_error() says why; the pool is then
 * unusable and should be stopped).
 */
MC_EXPORT int mc_pool_wait_ready(mc_pool *pool, double timeout);

/*
 * Stop the pool: queued tasks are cancelled, running tasks get
 * opts.stop_grace seconds to finish, each worker runs worker_exit, and every
 * process is reaped and every descriptor closed. Groups still alive only
 * answer MC_ESTATE until mc_group_destroy(); the shared region stays mapped
 * until the last group is destroyed and the last hold released (so result
 * bytes read earlier stay readable until then), and the handle is freed
 * with it. Returns MC_OK, or the first error met while cleaning up.
 */
MC_EXPORT int mc_pool_stop(mc_pool *pool);

/* Number of workers the pool runs. */
MC_EXPORT int mc_pool_workers(const mc_pool *pool);

/* Process ids of the workers now alive, written to pids[0..n-1]; returns
   how many were written (at most max). */
MC_EXPORT int mc_pool_worker_pids(const mc_pool *pool, pid_t *pids, int max);

/* Process id of the pool's zygote. */
MC_EXPORT pid_t mc_pool_zygote_pid(const mc_pool *pool);

/* The message a failed worker init left, or "" (owned by the pool). */
MC_EXPORT const char *mc_pool_error(const mc_pool *pool);

/* Counters of one worker slot (a replacement worker continues its slot's). */
typedef struct mc_worker_stats {
    pid_t pid;                /* the live worker, or 0 while it is replaced */
    uint64_t tasks_done;      /* tasks finished (successfully or not) */
    uint64_t busy_ns;         /* time spent in task functions */
    uint64_t bytes_out;       /* result bytes set */
    uint32_t respawns;        /* replacement workers forked (after a death
                                 or a retirement) */
    uint32_t cancel_kills;    /* workers stopped because their task was cancelled */
    uint32_t start_failures;  /* replacements that failed to start, in a row */
    uint32_t retirements;     /* workers that left after max_tasks_per_worker tasks */
} mc_worker_stats;

typedef struct mc_pool_stats {
    int workers;              /* the pool's size */
    int live_workers;         /* of which have a process now */
    uint64_t queued;          /* tasks waiting in the queue */
    uint64_t bytes_in;        /* argument bytes submitted */
    uint64_t bytes_out;       /* result bytes set (sum over workers) */
    uint64_t shm_in_use;      /* shared-memory bytes held by live blocks */
    uint64_t shm_size;        /* bytes the region can hold */
} mc_pool_stats;

/*
 * A snapshot of the pool's counters (lock-free reads; each counter is
 * exact, the set is not one atomic picture). stats may be NULL; workers
 * receives up to max slots. Returns the number of slots written.
 * A task whose outcome the caller has seen (a wait returned for it) is
 * counted in tasks_done, busy_ns and bytes_out. A retirement is counted
 * as the worker leaves, after its last result, and its respawn when the
 * zygote forks the replacement: those two can lag.
 */
MC_EXPORT int mc_pool_get_stats(mc_pool *pool, mc_pool_stats *stats,
                                mc_worker_stats *workers, int max);

/* ------------------------------------------------------------------------
 * Task groups: submit tasks, collect their results in submission order
 * ------------------------------------------------------------------------ */

typedef struct mc_group mc_group;

MC_EXPORT int mc_group_create(mc_pool *pool, mc_group **group);

/*
 * Cancel the group's unfinished tasks, release every argument and result it
 * holds, and free the handle. Queued tasks never run. A worker still
 * running one of the group's tasks is killed and replaced (a task stuck in
 * a loop cannot hold a worker forever); tasks of other groups are not
 * affected. Destroying a group whose tasks have all finished kills nothing.
 * Safe after mc_pool_stop().
 */
MC_EXPORT void mc_group_destroy(mc_group *group);

/*
 * Alignment of the bytes the pool places in shared memory (a task's
 * argument, a reservation's buffer, mc_result_alloc(), a shared buffer's
 * mc_hold_data()): from MC_DATA_ALIGN_MIN bytes on they start on a 64-byte
 * boundary (a cache line: SIMD loads, numpy arrays); shorter ones are
 * packed next to the task's bookkeeping to save memory, and are 16-byte
 * aligned (a result, 8-byte aligned). A queued task takes at most 127
 * bytes of shared memory beyond its argument bytes when the argument is
 * shorter than MC_DATA_ALIGN_MIN (at most 143 from there on).
 */
#define MC_DATA_ALIGN_MIN 4096

/*
 * Submit fn(arg, arg_len) as the group's next task; arg is copied once into
 * shared memory. If the queue is full, waits up to timeout seconds for room
 * (MC_ETIMEDOUT, MC_EINTR). MC_ENOMEM if the region cannot hold arg.
 * Arguments up to MC_SUBMIT_INLINE_MAX bytes are copied under the lock the
 * submit takes anyway (one lock round trip instead of two): for a payload
 * that small, mc_submit() from a buffer of the caller's beats
 * mc_submit_reserve() / mc_submit_commit().
 */
#define MC_SUBMIT_INLINE_MAX 4096
MC_EXPORT int mc_submit(mc_group *group, mc_task_fn fn, const void *arg,
                        size_t arg_len, double timeout);

/*
 * Zero-copy submission in two steps: mc_submit_reserve() returns in *buf
 * room for arg_len bytes of shared memory that the caller fills in place;
 * mc_submit_commit() then queues the task (same waiting rules as mc_submit).
 * mc_submit_abort() drops a reservation. One reservation at a time per group.
 */
MC_EXPORT int mc_submit_reserve(mc_group *group, size_t arg_len, void **buf);
MC_EXPORT int mc_submit_commit(mc_group *group, mc_task_fn fn, double timeout);
MC_EXPORT void mc_submit_abort(mc_group *group);

/*
 * Waiting for whichever task finishes first, across groups (for executors
 * and unordered maps). Between mc_watch_begin() and mc_watch_end(), every
 * task of the pool that finishes bumps a pool-wide counter; the group
 * passed only names the pool (and keeps its handle alive meanwhile, even
 * if another thread stops the pool). The usual loop is:
 *
 *   uint32_t seen = mc_watch_begin(any_group);
 *   while (!any_of_my_tasks_finished())          (mc_group_wait(g, 0))
 *       if (mc_watch_wait(any_group, &seen, timeout) != MC_OK) break;
 *   mc_watch_end(any_group);
 *
 * Checking after begin and before waiting cannot miss a completion. Workers
 * pay for this only while someone watches.
 */
MC_EXPORT uint32_t mc_watch_begin(mc_group *group);
/* Sleep until a task finished since *seen (updated). MC_OK, MC_ETIMEDOUT,
   MC_EINTR, MC_EPOOLDIED or MC_ESTATE. */
MC_EXPORT int mc_watch_wait(mc_group *group, uint32_t *seen, double timeout);
MC_EXPORT void mc_watch_end(mc_group *group);

/* Number of tasks submitted to the group so far. */
MC_EXPORT size_t mc_group_size(const mc_group *group);

/*
 * Wait until every task submitted to the group has finished (successfully
 * or not). MC_OK, MC_ETIMEDOUT, MC_EINTR, MC_EPOOLDIED or MC_ESTATE; or
 * MC_EWORKERINIT while no worker can start (every slot's replacements keep
 * failing their init callback, mc_pool_error() says why): the tasks stay
 * queued, the pool keeps retrying with back-off, and waiting again is fine.
 */
MC_EXPORT int mc_group_wait(mc_group *group, double timeout);

/* Wait until task `index` of the group has finished. Same returns. */
MC_EXPORT int mc_group_wait_one(mc_group *group, size_t index, double timeout);

/* The outcome of one task. */
typedef struct mc_result {
    /* MC_OK, MC_ETASK, MC_EWORKERDIED or MC_ECANCELED. */
    int status;
    /* With MC_ETASK: the non-zero value the task function returned. */
    int task_code;
    /* The result bytes the task set (NULL and 0 if none). They live in
       shared memory and stay valid until the group is destroyed. */
    const void *data;
    size_t len;
    /* The worker that ran the task (with MC_EWORKERDIED: the one that died),
       and how it died: the signal that killed it, or its exit status. */
    pid_t worker_pid;
    int term_signal;   /* 0 if it was not killed by a signal */
    int exit_status;   /* meaningful when term_signal is 0 (MC_EXIT_*, or
                          whatever the task passed to exit()) */
} mc_result;

/*
 * The exit statuses with which the engine ends a process of the pool (a
 * worker, or the zygote: MC_EXIT_ZYGOTE_SETUP), as mc_result.exit_status
 * and mc_pool_error()'s messages report them. A worker leaving at
 * mc_pool_stop() exits with 0.
 */
enum {
    MC_EXIT_ZYGOTE_GONE = 1,   /* a new worker found its zygote already gone */
    MC_EXIT_ZYGOTE_SETUP = 2,  /* the zygote could not watch its workers (signalfd) */
    MC_EXIT_INIT_FAILED = 3,   /* the worker's init callback returned non-zero */
    MC_EXIT_LOCK_FAILED = 4,   /* the pool's lock is unusable (the region is corrupt) */
    MC_EXIT_CANCELLED = 5      /* the worker ran a cancelled task: it leaves
                                  before the zygote's SIGKILL lands */
};

/*
 * The outcome of task `index` (0-based, in submission order). MC_OK if the
 * task has finished and *result is filled; MC_EINVAL for an index out of
 * range; MC_ETIMEDOUT if the task has not finished yet (wait first).
 */
MC_EXPORT int mc_group_result(mc_group *group, size_t index, mc_result *result);

/*
 * Holds: keeping a task's bytes (arguments and result) alive beyond the
 * group, for zero-copy readers. A hold is released by mc_hold_release(),
 * in the process that took it; the bytes stay valid and in place until
 * then, even after mc_group_destroy() and mc_pool_stop().
 */
typedef struct mc_hold mc_hold;

/*
 * Hold task `index` of the group, which must have finished successfully
 * (MC_ETIMEDOUT if it has not finished, MC_EINVAL if out of range or if it
 * failed). The bytes are those mc_group_result() points to.
 */
MC_EXPORT int mc_group_hold(mc_group *group, size_t index, mc_hold **hold);

/*
 * In a task function: hold the task being run, so that its argument bytes
 * stay valid after the function returns (a worker that keeps a view of its
 * argument). At most MC_WORKER_HOLDS holds per worker at a time (MC_ENOMEM
 * beyond); if the worker dies, its holds are released for it.
 */
#define MC_WORKER_HOLDS 64
MC_EXPORT int mc_task_hold(mc_task_ctx *ctx, mc_hold **hold);

/* Release a hold (NULL is ignored). */
MC_EXPORT void mc_hold_release(mc_hold *hold);

/* ------------------------------------------------------------------------
 * Shared buffers: memory that is passed by reference, never copied
 *
 * A shared buffer is a block of the pool's shared memory that exists on its
 * own, owned by holds. Fill it in place, then link it to a task: the task
 * receives the same bytes (a write by either side is seen by the other),
 * and nothing is copied whatever the size. Links keep a buffer alive, so
 * the creator may release its hold at once:
 *
 *   mc_buffer_alloc(pool, n, &b);  fill mc_hold_data(b, NULL);
 *   mc_submit_reserve(g, sizeof link, &arg);
 *   mc_submit_share(g, b, &link);  write link into arg;  mc_submit_commit(g, fn, t);
 *   mc_hold_release(b);                                  (the task keeps it)
 *   in fn:  mc_task_link_hold(ctx, link, &mine)  or  mc_task_link_data(ctx, link, &len)
 *
 * and back: a task allocates a buffer (pool NULL), links it to its result
 * with mc_result_share(), and the caller takes it with mc_group_link_hold().
 * A buffer is freed when its last hold and the last task linking it are
 * gone; a dead worker's holds are released for it.
 * ------------------------------------------------------------------------ */

/* Shared buffers one task may link (arguments and result together). */
#define MC_SHARE_MAX 6

/*
 * Allocate a shared buffer of len bytes (contents undefined) and hold it.
 * In the calling process pass its pool; in a task function or a worker's
 * init callback pass NULL: the buffer is then the worker's (one of its
 * MC_WORKER_HOLDS holds). MC_OK, MC_ENOMEM, MC_EINVAL (NULL outside a
 * worker), MC_ESTATE / MC_EPOOLDIED when the pool is not running.
 */
MC_EXPORT int mc_buffer_alloc(mc_pool *pool, size_t len, mc_hold **buffer);

/* The bytes of a shared buffer (and its length in *len if len is not
   NULL), or NULL if the hold is not a shared buffer's. */
MC_EXPORT void *mc_hold_data(const mc_hold *hold, size_t *len);

/*
 * Between mc_submit_reserve() and mc_submit_commit(): link a shared buffer
 * of the group's pool to the task being submitted; *link receives the
 * index the task function passes to mc_task_link_*(). Linking the same
 * buffer twice gives the same index. MC_EINVAL if buffer is not a shared
 * buffer of this pool taken by this process, MC_ESTATE without a
 * reservation, MC_ENOMEM beyond MC_SHARE_MAX buffers.
 */
MC_EXPORT int mc_submit_share(mc_group *group, const mc_hold *buffer, unsigned *link);

/* In a task function: link a shared buffer (one it allocated or holds) to
   its result, so that the caller can take it. Same returns. */
MC_EXPORT int mc_result_share(mc_task_ctx *ctx, const mc_hold *buffer, unsigned *link);

/* In a task function: the bytes of link `link` of the task, valid until the
   function returns (NULL for an unknown link). */
MC_EXPORT const void *mc_task_link_data(mc_task_ctx *ctx, unsigned link, size_t *len);

/* In a task function: hold link `link` of the task, to keep using it after
   the function returns. MC_EINVAL for an unknown link, MC_ENOMEM at the
   MC_WORKER_HOLDS limit. */
MC_EXPORT int mc_task_link_hold(mc_task_ctx *ctx, unsigned link, mc_hold **buffer);

/* In the caller: hold link `link` of task `index` of the group, which must
   have finished successfully (MC_ETIMEDOUT if it has not finished,
   MC_EINVAL if it failed or there is no such link). */
MC_EXPORT int mc_group_link_hold(mc_group *group, size_t index, unsigned link, mc_hold **buffer);

/* ------------------------------------------------------------------------
 * Utilities
 * ------------------------------------------------------------------------ */

/* Number of online CPUs (at least 1, at most MC_WORKERS_MAX). */
MC_EXPORT int mc_online_cpus(void);

/* The 1-minute load average. MC_OK or MC_ESYSTEM. */
MC_EXPORT int mc_loadavg(double *one_minute);

/*
 * Split `count` items into consecutive ranges for `workers` workers: every
 * range holds ceil(count / workers) items, but at least min_range_size (the
 * last range may be shorter). Returns the range size (0 when count is 0);
 * the ranges are [0, step), [step, 2*step), ... up to count. workers <= 0
 * means mc_online_cpus().
 */
MC_EXPORT size_t mc_range_step(size_t count, size_t min_range_size, int workers);

#ifdef __cplusplus
}
#endif

#endif /* MULTICORE_H */
