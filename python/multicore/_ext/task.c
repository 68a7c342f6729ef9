/*
 * task.c — the Task type: one group of tasks whose results come back in
 * submission order.
 *
 * Owns: Task(max_load_average=None) (None when the pool is not running or
 * the machine is too loaded), Task.run() (serialize the call, copy it once
 * into shared memory, queue it), Task.get() (wait for each part in
 * wait.c's loop, which releases the GIL in short slices so that Ctrl-C and
 * shutdown() are noticed, then decode the results or raise the first
 * failure, as errors.c maps it), done(), cancel(), and the per-task
 * bookkeeping the caller keeps (each part's result format and callable,
 * for error messages).
 *
 * A Task belongs to one mc_group of one pool generation. Once get() has
 * finished (returned or raised) the task is complete and its group is
 * destroyed, which frees its shared memory. A Task is not for concurrent
 * use: a busy flag turns a second thread's call into RuntimeError.
 */
#include "ext.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <math.h>

struct mcx_run {
    int format;
    PyObject *fn;    /* strong reference: named in error messages */
};

typedef struct {
    PyObject_HEAD
    mcx_poolref *ref;    /* the pool: &mcx.main, or inside ref_owner */
    PyObject *ref_owner; /* strong reference to the Pool holding ref, or NULL */
    mc_group *group;
    uint64_t generation;
    pid_t pid;
    int complete;
    int busy;
    size_t n_runs;
    size_t cap_runs;
    struct mcx_run *runs;      /* one_run, or PyMem once there are more */
    struct mcx_run one_run;    /* the one-task case allocates nothing */
} TaskObject;

static int task_pool_ok(TaskObject *self)
{
    return self->generation == self->ref->generation && mcx_ref_alive(self->ref) &&
           self->pid == mcx_getpid();
}

static void clear_runs(TaskObject *self)
{
    for (size_t i = 0; i < self->n_runs; i++)
        Py_CLEAR(self->runs[i].fn);
    self->n_runs = 0;
}

/* Complete the task: free its group (cancelling what has not run). */
static void task_finish(TaskObject *self)
{
    mc_group *group = self->group;
    self->group = NULL;
    self->complete = 1;
    mcx_defer_or_destroy_group(self->ref, group, self->generation, self->pid);
    clear_runs(self);
}

/* Start a run()/get() call: claim the task, or raise. */
static int task_enter(TaskObject *self, const char *what)
{
    if (self->busy) {
        PyErr_Format(PyExc_RuntimeError,
                     "Task.%s(): this Task is in use by another call "
                     "(a Task must not be shared between threads)", what);
        return -1;
    }
    if (self->complete) {
        PyErr_Format(mcx.TaskCompleteError,
                     "Task.%s(): this task is complete (get() has finished); "
                     "create a new Task", what);
        return -1;
    }
    if (!task_pool_ok(self) || self->group == NULL) {
        PyErr_Format(mcx.PoolNotRunningError,
                     "Task.%s(): the multicore pool this Task belongs to is "
                     "not running (shutdown() was called)", what);
        return -1;
    }
    self->busy = 1;
    return 0;
}

/* ---------------------------------------------------------------------
 * Type slots
 * --------------------------------------------------------------------- */

static PyObject *Task_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"max_load_average", NULL};
    PyObject *limit_obj = Py_None;
    double limit = NAN;
    (void)type;
    /* Task() and Task(None) (what multicore.Task() calls): nothing to parse */
    if ((PyTuple_GET_SIZE(args) == 0 || (PyTuple_GET_SIZE(args) == 1 && PyTuple_GET_ITEM(args, 0) == Py_None)) &&
        (kwargs == NULL || PyDict_GET_SIZE(kwargs) == 0))
        return mcx_task_new(&mcx.main, NULL, limit);
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:Task", kwlist, &limit_obj) ||
        mcx_parse_load_limit(limit_obj, &limit) < 0)
        return NULL;
    return mcx_task_new(&mcx.main, NULL, limit);
}

PyObject *mcx_task_new(mcx_poolref *ref, PyObject *ref_owner, double max_load_average)
{
    if (!mcx_ref_alive(ref))
        Py_RETURN_NONE;
    if (!isnan(max_load_average)) {
        double load = 0.0;
        if (mc_loadavg(&load) == MC_OK && load > max_load_average * (double)ref->workers)
            Py_RETURN_NONE;
    }

    TaskObject *self = (TaskObject *)mcx_TaskType.tp_alloc(&mcx_TaskType, 0);
    if (self == NULL)
        return NULL;
    self->ref = ref;
    self->ref_owner = Py_XNewRef(ref_owner);
    self->generation = ref->generation;
    self->pid = mcx_getpid();
    int rc = mc_group_create(ref->pool, &self->group);
    if (rc != MC_OK) {
        int err = errno;
        self->group = NULL;
        Py_DECREF(self);
        return mcx_raise_mc(rc, err, "Task()");
    }
    return (PyObject *)self;
}

static int Task_traverse(TaskObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ref_owner);
    for (size_t i = 0; i < self->n_runs; i++)
        Py_VISIT(self->runs[i].fn);
    return 0;
}

static int Task_clear(TaskObject *self)
{
    clear_runs(self);
    return 0;
}

static void Task_dealloc(TaskObject *self)
{
    PyObject_GC_UnTrack(self);
    mc_group *group = self->group;
    self->group = NULL;
    mcx_defer_or_destroy_group(self->ref, group, self->generation, self->pid);
    clear_runs(self);
    if (self->runs != &self->one_run)
        PyMem_Free(self->runs);
    self->runs = NULL;
    Py_CLEAR(self->ref_owner);   /* after the group: ref may live in it */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* ---------------------------------------------------------------------
 * run()
 * --------------------------------------------------------------------- */

/* Callables that pickle to a pure by-name reference, whose bytes can be
   reused as long as the same object is sent again. */
static int cacheable_callable(PyObject *fn)
{
    if (PyFunction_Check(fn) || PyType_Check(fn))
        return 1;
    if (PyCFunction_Check(fn)) {
        PyObject *owner = PyCFunction_GET_SELF(fn);
        return owner == NULL || PyModule_Check(owner);
    }
    return 0;
}

/* The pickled callable (new reference), from the one-entry cache. */
static PyObject *pickled_callable(PyObject *fn, int use_dill)
{
    if (!use_dill && mcx.last_fn == fn && mcx.last_fn_bytes != NULL &&
        !mcx.last_fn_dill) {
        Py_INCREF(mcx.last_fn_bytes);
        return mcx.last_fn_bytes;
    }
    PyObject *bytes = mcx_dumps(fn, use_dill);
    if (bytes == NULL)
        return NULL;
    if (!use_dill && cacheable_callable(fn)) {
        Py_INCREF(fn);
        Py_INCREF(bytes);
        Py_XSETREF(mcx.last_fn, fn);
        Py_XSETREF(mcx.last_fn_bytes, bytes);
        mcx.last_fn_dill = 0;
    }
    return bytes;
}

/* Queue the reserved task, waiting for queue room with the GIL released
   (engine calls are safe against a concurrent mc_pool_stop(); only our
   own reads and writes of shared memory need the inflight count).
   Returns MC_OK, an MC_E* code, or MCX_RAISED. */
static int commit_slice(void *self, double slice)
{
    return mc_submit_commit(((TaskObject *)self)->group, mcx_task_entry, slice);
}

static int commit_check(void *self)
{
    return task_pool_ok(self) ? MC_OK : MC_ESTATE;
}

static int commit_reserved(TaskObject *self)
{
    int rc = mc_submit_commit(self->group, mcx_task_entry, 0.0);
    if (rc == MC_ETIMEDOUT || rc == MC_EINTR)
        rc = mcx_wait_sliced(commit_slice, commit_check, self, -1.0);
    return rc;
}

static int grow_runs(TaskObject *self)
{
    if (self->n_runs < self->cap_runs)
        return 0;
    if (self->cap_runs == 0) {
        self->runs = &self->one_run;
        self->cap_runs = 1;
        return 0;
    }
    size_t cap = self->cap_runs == 1 ? 8 : self->cap_runs * 2;
    struct mcx_run *runs;
    if (self->runs == &self->one_run) {
        runs = PyMem_Malloc(cap * sizeof *runs);
        if (runs != NULL)
            runs[0] = self->one_run;
    } else {
        runs = PyMem_Realloc(self->runs, cap * sizeof *runs);
    }
    if (runs == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->runs = runs;
    self->cap_runs = cap;
    return 0;
}

/* mcx_share_fn for run(): link a shared buffer to the task reserved. */
static int share_with_task(void *group, const mc_hold *buffer, unsigned *link)
{
    return mc_submit_share((mc_group *)group, buffer, link);
}

PyDoc_STRVAR(Task_run_doc,
"run(fn, *args, serialization_format='pickle', use_dill=False, **kwargs)\n"
"--\n\n"
"Call fn(*args, **kwargs) in a worker. serialization_format decides how\n"
"the result travels back: 'pickle', 'json' or 'string' (a str result).\n"
"use_dill=True sends fn and the arguments with dill (lambdas, closures,\n"
"functions defined after initialize()). Returns None; see get().");

static PyObject *Task_run(TaskObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *fn = NULL, *call_args = NULL, *call_kwargs = NULL;
    PyObject *pair = NULL, *fn_bytes = NULL;
    mcx_oob frame;
    PyObject *ret = NULL;
    int format = MCX_FMT_PICKLE, use_dill = 0;
    Py_ssize_t nargs = PyTuple_GET_SIZE(args);

    memset(&frame, 0, offsetof(mcx_oob, compact));   /* the compact bytes need no clearing */

    if (task_enter(self, "run") < 0)
        return NULL;

    /* The common call passes no keywords: no copy, no lookups. */
    if (kwargs == NULL || PyDict_GET_SIZE(kwargs) == 0) {
        call_kwargs = PyDict_New();
        if (call_kwargs == NULL)
            goto done;
    } else {
        call_kwargs = PyDict_Copy(kwargs);
        if (call_kwargs == NULL)
            goto done;
        PyObject *v = PyDict_GetItemString(call_kwargs, "serialization_format");
        if (v != NULL) {
            if (mcx_parse_format(v, &format) < 0 ||
                PyDict_DelItemString(call_kwargs, "serialization_format") < 0)
                goto done;
        }
        v = PyDict_GetItemString(call_kwargs, "use_dill");
        if (v != NULL) {
            use_dill = PyObject_IsTrue(v);
            if (use_dill < 0 || PyDict_DelItemString(call_kwargs, "use_dill") < 0)
                goto done;
        }
    }
    PyObject *v;
    if (nargs >= 1) {
        fn = PyTuple_GET_ITEM(args, 0);
        Py_INCREF(fn);
        call_args = PyTuple_GetSlice(args, 1, nargs);
    } else if ((v = PyDict_GetItemString(call_kwargs, "fn")) != NULL) {
        fn = v;
        Py_INCREF(fn);
        if (PyDict_DelItemString(call_kwargs, "fn") < 0)
            goto done;
        call_args = PyTuple_New(0);
    } else {
        PyErr_SetString(PyExc_TypeError,
                        "Task.run() missing required argument 'fn'");
        goto done;
    }
    if (call_args == NULL)
        goto done;
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "Task.run(): fn must be callable, not %.100s",
                     Py_TYPE(fn)->tp_name);
        goto done;
    }
    if (use_dill && mcx_load_dill() < 0)
        goto done;

    /* Serialize first, then copy once into shared memory. */
    fn_bytes = pickled_callable(fn, use_dill);
    if (fn_bytes == NULL)
        goto done;
    pair = PyTuple_Pack(2, call_args, call_kwargs);
    if (pair == NULL)
        goto done;
    if (mcx_oob_encode(pair, 1, use_dill, self->ref->pool, &frame) < 0)
        goto done;
    Py_CLEAR(pair);
    if (grow_runs(self) < 0)
        goto done;
    /* pickling may have run Python code that let shutdown() in */
    if (!task_pool_ok(self)) {
        PyErr_SetString(mcx.PoolNotRunningError,
                        "Task.run(): the multicore pool is not running "
                        "(shutdown() was called)");
        goto done;
    }

    size_t fn_len = (size_t)PyBytes_GET_SIZE(fn_bytes);
    size_t args_off = mcx_wire_args_offset(fn_len);
    if (args_off > UINT32_MAX) {
        PyErr_Format(PyExc_ValueError,
                     "Task.run(): the pickled callable is too large (%zu bytes)",
                     fn_len);
        goto done;
    }
    size_t total = args_off + frame.frame_size;
    void *buf = NULL;
    int rc;

    if (total <= MCX_SMALL_SUBMIT && frame.nshared == 0) {
        /* Small: assembled here and copied by mc_submit() under the lock,
           one lock round trip instead of two. A full queue (MC_ETIMEDOUT)
           takes the path below, which waits for room. */
        _Alignas(64) char small[MCX_SMALL_SUBMIT];
        mcx_wire_write(small, format, use_dill, PyBytes_AS_STRING(fn_bytes), fn_len, args_off);
        if (mcx_oob_write(&frame, small + args_off, NULL, NULL) < 0)
            goto done;
        errno = 0;
        rc = mc_submit(self->group, mcx_task_entry, small, total, 0.0);
        if (rc == MC_OK)
            goto queued;
        if (rc != MC_ETIMEDOUT) {
            mcx_raise_mc(rc, errno, "Task.run");
            goto done;
        }
    }

    mcx_inflight_enter();
    errno = 0;
    rc = mc_submit_reserve(self->group, total, &buf);
    if (rc != MC_OK) {
        int err = errno;
        mcx_inflight_leave();
        mcx_raise_mc(rc, err, "Task.run");
        goto done;
    }
    mcx_wire_write(buf, format, use_dill, PyBytes_AS_STRING(fn_bytes), fn_len, args_off);
    /* each large buffer is copied once, straight into shared memory */
    if (mcx_oob_write(&frame, (char *)buf + args_off, share_with_task, self->group) < 0) {
        mcx_inflight_leave();
        mc_submit_abort(self->group);
        goto done;
    }
    mcx_inflight_leave();   /* the argument is written */
    errno = 0;
    rc = commit_reserved(self);
    if (rc != MC_OK) {
        int err = errno;
        mc_submit_abort(self->group);
        if (rc != MCX_RAISED)
            mcx_raise_mc(rc, err, "Task.run");
        goto done;
    }

queued:
    self->runs[self->n_runs].format = format;
    self->runs[self->n_runs].fn = fn;
    fn = NULL;   /* reference moved into runs */
    self->n_runs++;
    Py_INCREF(Py_None);
    ret = Py_None;

done:
    self->busy = 0;
    Py_XDECREF(fn);
    Py_XDECREF(call_args);
    Py_XDECREF(call_kwargs);
    Py_XDECREF(pair);
    Py_XDECREF(fn_bytes);
    mcx_oob_release(&frame);
    return ret;
}

/* ---------------------------------------------------------------------
 * get()
 * --------------------------------------------------------------------- */

static size_t count_finished(TaskObject *self)
{
    size_t done = 0;
    mc_result r;
    for (size_t i = 0; i < self->n_runs; i++)
        if (mc_group_result(self->group, i, &r) == MC_OK)
            done++;
    return done;
}

/* Wait until part `index` has finished (with signals looked at every
   slice); deadline < 0: no limit. MC_OK, or MCX_RAISED with the exception
   set (timeout: TimeoutExceededError naming the timeout given to get()). */
struct part_wait {
    TaskObject *task;
    size_t index;
};

static int part_slice(void *arg, double slice)
{
    const struct part_wait *w = arg;
    return mc_group_wait_one(w->task->group, w->index, slice);
}

static int part_check(void *arg)
{
    const struct part_wait *w = arg;
    if (task_pool_ok(w->task))
        return MC_OK;
    PyErr_SetString(mcx.PoolNotRunningError,
                    "Task.get(): the multicore pool stopped "
                    "(shutdown() was called)");
    return MCX_RAISED;
}

static int wait_part(TaskObject *self, size_t index, double deadline, double timeout)
{
    int rc = mc_group_wait_one(self->group, index, 0.0);
    if (rc == MC_ETIMEDOUT || rc == MC_EINTR) {
        struct part_wait w = {self, index};
        rc = mcx_wait_sliced(part_slice, part_check, &w, deadline);
        if (rc == MC_ETIMEDOUT) {
            size_t done = count_finished(self);
            char secs[64];
            PyOS_snprintf(secs, sizeof secs, "%g", timeout);
            PyErr_Format(mcx.TimeoutExceededError,
                         "Task.get(): timeout of %s seconds exceeded "
                         "(%zu of %zu parts finished)",
                         secs, done, self->n_runs);
            return MCX_RAISED;
        }
    }
    if (rc == MC_OK || rc == MCX_RAISED)
        return rc;
    mcx_raise_mc(rc, 0, "Task.get");
    return MCX_RAISED;
}

PyDoc_STRVAR(Task_get_doc,
"get(timeout=10.0)\n"
"--\n\n"
"Wait for every run() of this task and return their results in\n"
"submission order. Raises the first failure (the task's exception, with\n"
"the worker's traceback as __cause__), or TimeoutExceededError past\n"
"timeout seconds (None: no limit). Afterwards the task is complete.");

/* mcx_link_fn for get(): hold a shared buffer linked to a result. */
struct result_links {
    mc_group *group;
    size_t index;
};

static int hold_result_link(void *arg, unsigned link, mc_hold **hold, const void **data, size_t *len)
{
    const struct result_links *rl = arg;
    (void)data, (void)len;
    return mc_group_link_hold(rl->group, rl->index, link, hold);
}

/* A part's result. A pickled one whose large buffers came out of band is
   loaded with them as views of the shared memory, kept alive by a hold. */
static PyObject *decode_result(TaskObject *self, size_t i, const mc_result *r)
{
    int format = self->runs[i].format;
    if (format != MCX_FMT_PICKLE)
        return mcx_decode_result(r->data, r->len, format);
    if (mcx_compact_is(r->data, r->len))
        return mcx_oob_loads(r->data, r->len, 0, NULL, NULL, NULL, NULL);
    mcx_frame f;
    if (mcx_frame_parse(r->data, r->len, &f) < 0) {
        PyErr_SetString(mcx.MulticoreError, "Task.get: malformed result frame");
        return NULL;
    }
    mc_hold *hold = NULL;
    if (mcx_frame_has_inline(&f)) {
        int rc = mc_group_hold(self->group, i, &hold);
        if (rc != MC_OK)
            return mcx_raise_mc(rc, 0, "Task.get");
    }
    struct result_links rl = {self->group, i};
    PyObject *item = mcx_oob_loads(r->data, r->len, 0, &hold, hold_result_link, &rl,
                                   self->ref->pool);
    mc_hold_release(hold);   /* NULL once the exporter took it */
    return item;
}

static PyObject *Task_get(TaskObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_obj = NULL;
    double timeout = 10.0;   /* the 0.1.1 default */
    PyObject *list = NULL;

    if ((PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) &&
        !PyArg_ParseTupleAndKeywords(args, kwargs, "|O:get", kwlist, &timeout_obj))
        return NULL;
    if (timeout_obj != NULL && mcx_parse_timeout(timeout_obj, &timeout) < 0)
        return NULL;
    if (task_enter(self, "get") < 0)
        return NULL;

    if (self->n_runs == 0) {
        task_finish(self);
        list = PyList_New(0);
        goto out;
    }

    /* Parts are waited for in order and each result is decoded as soon as
       it is there, while later parts still run (unpickling overlaps the
       work). A failure is raised once every part has finished, as the
       first failure in submission order; the other parts still complete. */
    size_t n = self->n_runs, failed = n;
    double deadline = timeout < 0 ? -1.0 : mcx_monotonic() + timeout;
    list = PyList_New((Py_ssize_t)n);
    if (list == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        int rc = wait_part(self, i, deadline, timeout);
        if (rc != MC_OK) {
            Py_CLEAR(list);
            /* A stopped pool leaves the task as it is (run/get keep saying
               PoolNotRunningError); anything else completes it, cancelling
               the parts not started. */
            if (!PyErr_ExceptionMatches(mcx.PoolNotRunningError))
                task_finish(self);
            goto out;
        }
        mc_result r;
        if ((rc = mc_group_result(self->group, i, &r)) != MC_OK) {
            Py_CLEAR(list);
            mcx_raise_mc(rc, 0, "Task.get");
            task_finish(self);
            goto out;
        }
        if (r.status != MC_OK) {
            if (failed == n)
                failed = i;
            continue;
        }
        if (failed < n)
            continue;   /* its result would be dropped anyway */
        mcx_inflight_enter();   /* the result is read from shared memory */
        PyObject *item = decode_result(self, i, &r);
        mcx_inflight_leave();
        if (item == NULL) {
            Py_CLEAR(list);
            task_finish(self);
            goto out;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    if (failed < n) {
        Py_CLEAR(list);
        mc_result r;
        int rc = mc_group_result(self->group, failed, &r);
        mcx_inflight_enter();   /* the failure's message is in shared memory */
        if (rc != MC_OK)
            mcx_raise_mc(rc, 0, "Task.get");
        else
            mcx_raise_task_failure(self->runs[failed].fn, &r);
        mcx_inflight_leave();
    }
    task_finish(self);
out:
    self->busy = 0;
    return list;
}

/* ---------------------------------------------------------------------
 * done() and waiting for the first of many tasks
 * --------------------------------------------------------------------- */

/* 1 if every part has finished (or the task is complete), 0 if not. */
static int task_is_done(TaskObject *self)
{
    if (self->complete || self->n_runs == 0)
        return 1;
    if (self->group == NULL || !task_pool_ok(self))
        return 1;   /* get() reports why */
    return mc_group_wait(self->group, 0.0) == MC_OK;
}

PyDoc_STRVAR(Task_done_doc,
"done()\n"
"--\n\n"
"True when every run() of this task has finished, so that get() will not\n"
"wait (also True once the task is complete or its pool stopped: get()\n"
"then says why). Never waits.");

static PyObject *Task_done(TaskObject *self, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(task_is_done(self));
}

PyDoc_STRVAR(Task_cancel_doc,
"cancel()\n"
"--\n\n"
"Give up on this task: parts not started never run, and the workers\n"
"running its parts are stopped and replaced. The task is then complete.\n"
"Harmless on a complete task.");

static PyObject *Task_cancel(TaskObject *self, PyObject *unused)
{
    (void)unused;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Task.cancel(): this Task is in use by another call");
        return NULL;
    }
    if (!self->complete)
        task_finish(self);
    Py_RETURN_NONE;
}

mcx_poolref *mcx_task_pool(PyObject *task)
{
    return ((TaskObject *)task)->ref;
}

int mcx_task_done(PyObject *task)
{
    return task_is_done((TaskObject *)task);
}

/* ---------------------------------------------------------------------
 * Type object
 * --------------------------------------------------------------------- */

static PyObject *Task_repr(TaskObject *self)
{
    return PyUnicode_FromFormat("<multicore.Task parts=%zu%s>", self->n_runs,
                                self->complete ? " complete" : "");
}

static PyMethodDef Task_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Task_run, METH_VARARGS | METH_KEYWORDS,
     Task_run_doc},
    {"get", (PyCFunction)(void (*)(void))Task_get, METH_VARARGS | METH_KEYWORDS,
     Task_get_doc},
    {"done", (PyCFunction)Task_done, METH_NOARGS, Task_done_doc},
    {"cancel", (PyCFunction)Task_cancel, METH_NOARGS, Task_cancel_doc},
    {NULL, NULL, 0, NULL}
};

PyDoc_STRVAR(Task_doc,
"Task(max_load_average=None)\n"
"--\n\n"
"A group of calls run in the worker pool; results come back in order.\n"
"Returns None when the pool is not running, or when the 1-minute load\n"
"average exceeds max_load_average * workers: run the code sequentially\n"
"then.");

PyTypeObject mcx_TaskType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "multicore.Task",
    .tp_basicsize = sizeof(TaskObject),
    .tp_itemsize = 0,
    .tp_dealloc = (destructor)Task_dealloc,
    .tp_repr = (reprfunc)Task_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = Task_doc,
    .tp_traverse = (traverseproc)Task_traverse,
    .tp_clear = (inquiry)Task_clear,
    .tp_methods = Task_methods,
    .tp_new = Task_new,
};
