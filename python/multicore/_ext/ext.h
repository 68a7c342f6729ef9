/*
 * ext.h — private header of the extension multicore._multicore.
 *
 * Owns the declarations the extension's C files share: the one module-state
 * struct (mcx), the task result codes a worker returns, the types that
 * cross files (a pool ref, a frame being written, a SharedMemory object),
 * and the entry points each file offers the others, listed below under the
 * file that defines them. The byte layouts in shared memory are frame.h's
 * (included here; Python-free). Nothing here is public API: the engine's
 * contract is include/multicore.h, the Python contract is the package
 * multicore.
 *
 * The state is a single static struct rather than per-module state because
 * the engine calls back into us (fork hooks, worker init/exit, the task
 * entry) through plain C function pointers with no module at hand, and
 * because the pool it describes is process-wide anyway.
 */
#ifndef MULTICORE_EXT_H
#define MULTICORE_EXT_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pythread.h>

#include "compat.h"   /* shims for APIs newer than requires-python */

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "multicore.h"
#include "frame.h"    /* the byte layouts in shared memory (Python-free) */

/* ---------------------------------------------------------------------
 * Task codes a worker returns (mc_result.task_code with MC_ETASK), and
 * what the result bytes then hold.
 * --------------------------------------------------------------------- */
enum {
    MCX_RC_OK = 0,        /* result bytes: the serialized return value */
    MCX_RC_EXCEPTION = 1, /* pickle of (pickled exception or None,
                             type name, str(exception), traceback text) */
    MCX_RC_CALLABLE = 2,  /* UTF-8: why the callable could not be loaded */
    MCX_RC_ARGS = 3,      /* UTF-8: why the arguments could not be loaded */
    MCX_RC_PAYLOAD = 4,   /* UTF-8: the payload was malformed */
    MCX_RC_NOMEM = 5      /* UTF-8: the result did not fit in shared memory */
};

/* Payloads up to this size are submitted with mc_submit(), which copies
   them under the lock it takes anyway (the engine's one-lock limit). */
#define MCX_SMALL_SUBMIT MC_SUBMIT_INLINE_MAX

/* Copies above this size run with the GIL released. */
#define MCX_BIG_COPY ((size_t)1 << 20)

/* Buffers from this size travel out of band (oob.c); smaller ones stay in
   the pickle stream, where they cost less than a view would. */
#define MCX_OOB_MIN ((Py_ssize_t)64 << 10)

/* numpy arrays a worker allocates from this size up live in the pool's
   shared memory (npalloc.c), at most MCX_NP_BLOCKS of them at a time (of
   the worker's MC_WORKER_HOLDS holds), so that a result can move one to
   the caller instead of copying it. */
#define MCX_NP_SHARED_MIN ((size_t)1 << 20)
#define MCX_NP_BLOCKS 16

/* A list of at least this many ints (or floats), given directly as an
   argument or returned, travels packed (oob.c, "Lists of numbers"). */
#define MCX_NUMLIST_MIN 32

/* An object pickled for a frame, not yet written. Buffers that lie in a
   shared buffer of the destination pool travel as links, not bytes. */
typedef struct {
    PyObject *pickle;    /* bytes */
    PyObject *buffers;   /* list of PickleBuffer, or NULL */
    size_t frame_size;
    int nshared;                        /* distinct shared buffers */
    const mc_hold *holds[MC_SHARE_MAX]; /* their holds, to link them */
    PyObject *shared[MC_SHARE_MAX];     /* their SharedMemory objects, or NULL
                                           for an array moved (npalloc.c): its
                                           PickleBuffer in buffers keeps it */
    signed char *buf_shared;            /* per buffer: index in shared[], or -1 */
    size_t *buf_offset;                 /* per buffer: its offset in that one */
    size_t compact_len;                 /* > 0: a compact frame (frame.h), no pickle */
    unsigned char compact[MCX_COMPACT_MAX];   /* last: not cleared by encode */
} mcx_oob;

/* Where a frame goes, for linking shared buffers: the destination pool's
   tag (its mc_pool in the caller, MCX_WORKER_TAG in a worker) and the
   engine call that links a buffer to the task or result being written. */
typedef int (*mcx_share_fn)(void *arg, const mc_hold *buffer, unsigned *link);
#define MCX_WORKER_TAG ((const void *)&mcx)

/* Where a frame comes from, for resolving links: MC_OK with a hold of the
   linked buffer, or MC_OK with *hold NULL and the bytes to copy (the
   worker at its hold limit), or an MC_E* code. */
typedef int (*mcx_link_fn)(void *arg, unsigned link, mc_hold **hold,
                           const void **data, size_t *len);

/* A multicore.SharedMemory object (shared.c): memory of a pool's region,
   exported through the buffer protocol and kept alive by an engine hold. */
typedef struct {
    PyObject_HEAD
    mc_hold *hold;       /* released with the last reference */
    char *base;
    Py_ssize_t len;
    Py_ssize_t exports;
    pid_t pid;
    /* A shared buffer's (linkable to tasks of the pool `tag` names), or
       NULL for the memory of a frame (never linked: copied when sent on). */
    const void *tag;
} mcx_shm;

/* Bytes borrowed from a Python object that owns them. */
typedef struct {
    PyObject *owner;     /* strong reference; NULL when empty */
    const char *data;
    Py_ssize_t len;
} mcx_buffer;

/* ---------------------------------------------------------------------
 * The module state.
 * --------------------------------------------------------------------- */
/* One pool as the binding sees it: the process-wide one of initialize()
   (mcx.main) or a multicore.Pool object's (pool.c). */
typedef struct mcx_poolref {
    /* pool is non-NULL only while it runs, in the process that started it
       (owner_pid). generation counts the pools started through this ref;
       a Task remembers the one it belongs to. */
    mc_pool *pool;
    pid_t owner_pid;
    uint64_t generation;
    uint64_t stopping_generation;
    int stopping;          /* mc_pool_stop() is running (GIL released) */
    int workers;
    uint64_t max_tasks;    /* max_tasks_per_worker for the next start (0: none) */
    int np_workers;        /* the workers asked for at start (npalloc.c's budget) */
    PyObject *worker_init; /* the user's worker_init callable, or NULL */
    PyObject *worker_exit; /* the user's worker_exit callable, or NULL */
    /* Groups whose destruction waits for a running mc_pool_stop(). */
    mc_group **deferred;
    size_t n_deferred;
    size_t cap_deferred;
} mcx_poolref;

typedef struct {
    mcx_poolref main;      /* the process-wide pool (module.c) */
    long inflight;         /* sections touching a pool's memory now */
    PyThread_type_lock lifecycle_lock;  /* serializes pool starts/stops */
    pid_t lock_pid;        /* process that allocated lifecycle_lock */
    PyObject *worker_state; /* this process's worker_state() dict */

    /* Serializers, imported at module init so that workers inherit them. */
    PyObject *pickle_dumps;
    PyObject *pickle_loads;
    PyObject *json_dumps;
    PyObject *json_loads;
    PyObject *format_exception;
    PyObject *protocol;    /* int 5 */
    PyObject *dill_dumps;  /* imported on first use_dill=True */
    PyObject *dill_loads;
    PyObject *as_memoryview;  /* _multicore._as_memoryview, for _BytesLike */
    PyObject *numlist;        /* _multicore._numlist, for _NumList */

    /* multicore.exceptions */
    PyObject *MulticoreError;
    PyObject *TimeoutExceededError;
    PyObject *TaskCompleteError;
    PyObject *WorkerDiedError;
    PyObject *PoolNotRunningError;
    PyObject *CallableNotFoundError;
    PyObject *ArgumentsUnpicklingError;
    PyObject *WorkerInitError;
    PyObject *RemoteTraceback;

    /* Caller side: the last callable pickled, to skip re-pickling it. */
    PyObject *last_fn;
    PyObject *last_fn_bytes;
    int last_fn_dill;

    /* Worker side: the thread state parked while no task runs, and the
       last callable loaded (by reference) with the bytes it came from. */
    PyThreadState *worker_tstate;
    PyObject *w_last_fn;
    PyObject *w_last_fn_bytes;
} mcx_state;

extern mcx_state mcx;

/* This process's pid, cached (glibc's getpid() is a system call, and the
   binding checks it on every call to tell a fork() child from the pool's
   owner); kept right by a pthread_atfork child handler (lifecycle.c). */
extern pid_t mcx_pid;
static inline pid_t mcx_getpid(void)
{
    return mcx_pid;
}

/* Shared-memory access outside the engine's own calls (filling a reserved
   argument, reading result bytes) happens between these two: shutdown()
   waits until no thread is inside. The per-thread count lets shutdown()
   refuse, instead of deadlocking, when called from inside such a section
   (a signal handler or an unpickler calling it). GIL held for both. */
extern _Thread_local long mcx_tls_inflight;

static inline void mcx_inflight_enter(void)
{
    mcx.inflight++;
    mcx_tls_inflight++;
}

static inline void mcx_inflight_leave(void)
{
    mcx.inflight--;
    mcx_tls_inflight--;
}

/* Returned by the binding's helpers, beside the MC_E* codes (all <= 0),
   when a Python exception is already set. */
#define MCX_RAISED 1

/* ---------------------------------------------------------------------
 * Entry points, by the file that defines them.
 * --------------------------------------------------------------------- */

/* ---- module.c: the module, initialize() / shutdown() and the module's
   functions (mcx and mcx_tls_inflight are defined here) ---- */
int mcx_number_of_workers(void);    /* the main pool's, else online CPUs */
/* Live workers' pids (a list), and stats() (a dict; PoolNotRunningError
   when not running), of ref's pool: the module's and Pool's. */
PyObject *mcx_ref_worker_pids(mcx_poolref *ref);
PyObject *mcx_ref_stats(mcx_poolref *ref);

/* ---- lifecycle.c: a pool ref's start, stop and fork hooks ---- */
int mcx_ref_alive(const mcx_poolref *ref);  /* ref's pool runs and is ours */
int mcx_pool_alive(void);                   /* the same for mcx.main */
/* Start ref's pool unless it runs / stop it if it runs: 0, or -1 with an
   exception. */
int mcx_ref_start(mcx_poolref *ref, int workers, size_t region_size,
                  PyObject *init_obj, PyObject *exit_obj);
int mcx_ref_stop(mcx_poolref *ref);
/* At module init: forget a pool inherited through fork(). 0, or -1. */
int mcx_forget_if_forked(void);
/* Destroy a Task's group, or keep it until a running stop returns. */
void mcx_defer_or_destroy_group(mcx_poolref *ref, mc_group *group,
                                uint64_t generation, pid_t pid);

/* ---- pool.c: the PoolHandle type (multicore.Pool) ---- */
extern PyTypeObject mcx_PoolHandleType;

/* ---- task.c: the Task type ---- */
extern PyTypeObject mcx_TaskType;
/* A Task of ref's pool (None if it does not run or the machine is loaded
   beyond max_load_average * workers; NAN: no limit). */
PyObject *mcx_task_new(mcx_poolref *ref, PyObject *ref_owner, double max_load_average);
/* For wait_first(): the pool of a Task, and whether all its parts have
   finished (see Task.done()). task must be a Task. */
mcx_poolref *mcx_task_pool(PyObject *task);
int mcx_task_done(PyObject *task);

/* ---- wait.c: waiting with the GIL released; wait_first() ---- */
/* Longest time a wait holds out without looking at signals, seconds. */
#define MCX_SLICE 0.05
/* One slice of a wait, called with the GIL released: an engine call that
   waits at most `slice` seconds; MC_ETIMEDOUT or MC_EINTR: wait on. */
typedef int (*mcx_wait_fn)(void *arg, double slice);
/* Between slices, with the GIL: MC_OK to wait on, or the code to return
   (MCX_RAISED with the exception set). */
typedef int (*mcx_check_fn)(void *arg);
double mcx_monotonic(void);            /* CLOCK_MONOTONIC, seconds */
/* Run wait() in slices until it returns anything but MC_ETIMEDOUT or
   MC_EINTR, and return that. Before each slice: the signal handlers
   (MCX_RAISED if one raised), then check() (if not NULL), then the
   deadline (mcx_monotonic() time; < 0: none): MC_ETIMEDOUT once past. */
int mcx_wait_sliced(mcx_wait_fn wait, mcx_check_fn check, void *arg, double deadline);
PyObject *mcx_wait_first(PyObject *module, PyObject *args, PyObject *kwargs);

/* ---- args.c: parsers of the arguments shared by several calls ---- */
/* Each: 0 (or the value), or -1 with a TypeError / ValueError naming the
   argument, the value and the limit. */
/* initialize()'s and Pool()'s: workers (0: one per CPU), region_size (0:
   the default); worker_init, worker_exit callable or None. Refused in a
   worker (RuntimeError). */
int mcx_parse_pool_args(PyObject *workers_obj, PyObject *init_obj, PyObject *exit_obj,
                        PyObject *shm_obj, int *workers, size_t *region_size);
int mcx_parse_max_tasks(PyObject *obj, uint64_t *out);   /* None: 0 */
/* None gives NAN (no load limit) or -1.0 (no time limit). */
int mcx_parse_load_limit(PyObject *obj, double *out);
int mcx_parse_timeout(PyObject *obj, double *out);
int mcx_parse_format(PyObject *obj, int *format);        /* MCX_FMT_* */
int mcx_parse_nbytes(PyObject *obj, size_t *out);
Py_ssize_t mcx_parse_int_min(PyObject *obj, const char *name, Py_ssize_t minimum);

/* ---- errors.c: failures as exceptions; the failure report ---- */
int mcx_load_exceptions(void);
/* Set the Python exception matching an MC_E* code; returns NULL.
   saved_errno is errno right after the failing call (for MC_ESYSTEM). */
PyObject *mcx_raise_mc(int rc, int saved_errno, const char *context);
/* The codes whose exception depends on the call; each returns NULL. */
PyObject *mcx_raise_worker_init(const char *why);  /* at start-up: the worker's traceback */
PyObject *mcx_raise_share(int rc);                  /* linking a shared buffer to a task */
PyObject *mcx_raise_buffer_alloc(int rc, size_t nbytes, int in_worker);
/* Raise the exception for a task part that did not succeed (r->status is
   not MC_OK); fn is the callable it ran, named in the message. NULL. */
PyObject *mcx_raise_task_failure(PyObject *fn, const mc_result *r);
/* Raise exc_type(message) with the current exception as its __cause__. */
PyObject *mcx_raise_chained(PyObject *exc_type, const char *message);
/* "module.qualname" of a callable (new reference, never fails unless
   out of memory). */
PyObject *mcx_callable_name(PyObject *fn);
/* "Type: message" of the current exception (clears it); new reference. */
PyObject *mcx_exception_summary(void);
/* The current exception's formatted traceback (clears it); new reference,
   or NULL with no exception set if it could not be formatted. */
PyObject *mcx_traceback_text(void);
/* Worker side: the failure report of the current exception (bytes; clears
   it). Caller side: raise what a report says; returns NULL. */
PyObject *mcx_encode_exception(void);
PyObject *mcx_raise_remote(const void *data, size_t len);

/* ---- wire.c: serializers (pickle, dill, the result formats) ---- */
int mcx_load_dill(void);
PyObject *mcx_dumps(PyObject *obj, int use_dill);
PyObject *mcx_loads(const void *data, size_t len, int use_dill);
int mcx_encode_result(PyObject *result, int format, mcx_buffer *out);
PyObject *mcx_decode_result(const void *data, size_t len, int format);
void mcx_buffer_release(mcx_buffer *buf);

/* ---- oob.c: pickling with out-of-band buffers in shared memory ---- */
extern PyTypeObject mcx_BytesLikeType;
extern PyTypeObject mcx_NumListType;
/* _multicore._numlist(kind, buffer): the list a _NumList packed. */
PyObject *mcx_numlist_unpack(PyObject *module, PyObject *args);
int mcx_oob_encode(PyObject *obj, int is_call, int use_dill, const void *tag, mcx_oob *out);
/* Worker side, once the result object is dropped: let buffers of arrays
   nothing else can reach travel as links (npalloc.c) instead of bytes,
   while at most max_links buffers are linked in all; resizes the frame.
   -1 with an exception if a buffer was released meanwhile (by a __del__
   the drop ran). */
int mcx_oob_move(mcx_oob *out, int max_links);
int mcx_oob_write(const mcx_oob *src, void *dst, mcx_share_fn share, void *share_arg);
void mcx_oob_release(mcx_oob *o);
PyObject *mcx_oob_loads(const void *frame, size_t len, int use_dill, mc_hold **hold,
                        mcx_link_fn resolve, void *resolve_arg, const void *tag);
/* The objects of a parsed compact frame (frame.h): 0 with out[0..c->n)
   set to new references, or -1 with an exception (none set). */
int mcx_compact_objects(const mcx_compact *c, PyObject **out);

/* ---- npalloc.c: a worker's large numpy arrays in shared memory ---- */
/* In a worker: install the numpy memory handler if this interpreter has
   imported numpy (1 installed, 0 not; never raises). mcx_np_pending() is 1
   while it has not been tried with numpy imported. */
int mcx_np_install(void);
int mcx_np_pending(void);
/* At worker start, in a pool of `workers` workers (0: the online CPUs):
   allow this worker a quarter of the region shared between the workers,
   then mcx_np_install(). */
void mcx_np_worker_start(int workers);
/* The hold of the block a buffer lies in if the array exporting it can be
   moved to the caller (nothing else in this process can reach it), with
   the buffer's offset in the block; else NULL. */
mc_hold *mcx_np_movable(const Py_buffer *view, size_t *offset);

/* ---- shared.c: the SharedMemory type; shared buffers ---- */
extern PyTypeObject mcx_SharedMemoryType;
/* A SharedMemory object over [base, base + len), owning hold from then on
   (released at once if the object cannot be made); tag as for
   mcx_oob_encode (NULL: the memory of a frame). */
PyObject *mcx_shm_new(mc_hold *hold, char *base, size_t len, const void *tag);
/* A SharedMemory object over a shared buffer's hold (owned from then on). */
PyObject *mcx_shared_buffer_new(mc_hold *hold, const void *tag);
/* The SharedMemory object of a shared buffer this process may link that
   the view's memory lies in (through an array's base or a memoryview's
   exporter), or NULL. Borrowed: the view keeps it alive. */
mcx_shm *mcx_shm_owner(const Py_buffer *view);
/* A SharedMemory shared buffer of ref's pool, or of the process-wide pool
   (this worker's own inside a task) when ref is NULL. */
PyObject *mcx_shared_buffer_alloc(mcx_poolref *ref, PyObject *nbytes);

/* ---- worker.c: the engine's callbacks in a worker ---- */
int mcx_task_entry(const void *arg, size_t arg_len, mc_task_ctx *ctx);
int mcx_worker_init(int worker_index, void *arg);
void mcx_worker_exit(int worker_index, void *arg);

/* ---- forksafe.c: the standard streams across forks ---- */
void mcx_prepare_streams_for_fork(void);   /* caller, before forking the zygote */
void mcx_forget_prepared_streams(void);    /* caller, after it */
void mcx_renew_streams_after_fork(void);   /* each worker, after PyOS_AfterFork_Child */
void mcx_flush_std(void);              /* flush sys.stdout/stderr (GIL held) */

#endif /* MULTICORE_EXT_H */
