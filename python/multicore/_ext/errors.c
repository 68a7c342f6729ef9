/*
 * errors.c — the one place where failures become Python exceptions, and
 * the failure report that carries a task's exception from the worker.
 *
 * Owns: loading the exception classes of multicore.exceptions into the
 * module state; the MC_E* -> exception mapping (so every call site raises
 * the same type for the same code), with the few codes whose meaning
 * depends on the call (a failed worker_init at start-up, the shared-buffer
 * limits); the mapping of a task's failure (its mc_result: the worker's
 * task code, a dead worker, a cancellation) to the exception get()
 * raises; the failure report itself, encoded in the worker when a task
 * raised and re-raised in the caller with the remote traceback as its
 * cause (both ends here, so they agree); exception chaining; and the text
 * helpers that name a callable, summarize an exception or format its
 * traceback.
 *
 * Errors in the arguments a caller passes (TypeError, ValueError naming
 * the value and the limit) are raised where they are parsed (args.c); a
 * pool found stopped is PoolNotRunningError at the call that found it.
 */
#include "ext.h"

#include <errno.h>
#include <string.h>

/* ---------------------------------------------------------------------
 * The exception classes; engine codes
 * --------------------------------------------------------------------- */

static int load_one(PyObject *module, const char *name, PyObject **slot)
{
    PyObject *cls = PyObject_GetAttrString(module, name);
    if (cls == NULL)
        return -1;
    Py_XSETREF(*slot, cls);
    return 0;
}

int mcx_load_exceptions(void)
{
    PyObject *module = PyImport_ImportModule("multicore.exceptions");
    if (module == NULL)
        return -1;
    int rc = -1;
    if (load_one(module, "MulticoreError", &mcx.MulticoreError) < 0 ||
        load_one(module, "TimeoutExceededError", &mcx.TimeoutExceededError) < 0 ||
        load_one(module, "TaskCompleteError", &mcx.TaskCompleteError) < 0 ||
        load_one(module, "WorkerDiedError", &mcx.WorkerDiedError) < 0 ||
        load_one(module, "PoolNotRunningError", &mcx.PoolNotRunningError) < 0 ||
        load_one(module, "CallableNotFoundError", &mcx.CallableNotFoundError) < 0 ||
        load_one(module, "ArgumentsUnpicklingError", &mcx.ArgumentsUnpicklingError) < 0 ||
        load_one(module, "WorkerInitError", &mcx.WorkerInitError) < 0 ||
        load_one(module, "RemoteTraceback", &mcx.RemoteTraceback) < 0)
        goto out;
    rc = 0;
out:
    Py_DECREF(module);
    return rc;
}

PyObject *mcx_raise_mc(int rc, int saved_errno, const char *context)
{
    const char *text = mc_strerror(rc);
    const char *ctx = context ? context : "multicore";
    switch (rc) {
    case MC_ENOMEM:
        PyErr_Format(PyExc_MemoryError, "%s: %s", ctx, text);
        break;
    case MC_EINVAL:
        PyErr_Format(PyExc_ValueError, "%s: %s", ctx, text);
        break;
    case MC_ETIMEDOUT:
        PyErr_Format(mcx.TimeoutExceededError, "%s: %s", ctx, text);
        break;
    case MC_ESTATE:
        PyErr_Format(mcx.PoolNotRunningError,
                     "%s: the multicore pool is not running "
                     "(call multicore.initialize())", ctx);
        break;
    case MC_EWORKERINIT: {
        /* Past start-up this means no worker can start at all: every
           replacement keeps failing its worker_init. Say why. */
        const char *why = mcx.main.pool != NULL ? mc_pool_error(mcx.main.pool) : "";
        PyErr_Format(mcx.WorkerInitError,
                     "%s: %s; no worker can start (the pool keeps retrying)%s%s",
                     ctx, text, *why ? ":\n" : "", why);
        break;
    }
    case MC_EPOOLDIED:
        PyErr_Format(mcx.PoolNotRunningError,
                     "%s: %s (killed from outside?): its workers are gone; "
                     "call multicore.shutdown() and multicore.initialize()",
                     ctx, text);
        break;
    case MC_ESYSTEM:
        errno = saved_errno ? saved_errno : EIO;
        PyErr_SetFromErrno(PyExc_OSError);
        break;
    case MC_EINTR:
        /* A signal handler ran: let it raise (KeyboardInterrupt...). */
        if (PyErr_CheckSignals() < 0)
            break;
        /* fall through */
    default:
        PyErr_Format(mcx.MulticoreError, "%s: %s (%d)", ctx, text, rc);
        break;
    }
    return NULL;
}

PyObject *mcx_raise_worker_init(const char *why)
{
    PyObject *text = PyUnicode_DecodeUTF8(why, (Py_ssize_t)strlen(why), "replace");
    if (text == NULL)
        return NULL;
    PyObject *msg = PyUnicode_FromFormat("worker_init failed in a worker:\n%U", text);
    Py_DECREF(text);
    if (msg != NULL) {
        PyErr_SetObject(mcx.WorkerInitError, msg);
        Py_DECREF(msg);
    }
    return NULL;
}

PyObject *mcx_raise_share(int rc)
{
    if (rc == MC_ENOMEM) {
        PyErr_Format(PyExc_ValueError,
                     "a task can link at most %d shared buffers (multicore.shared), "
                     "arguments and result together",
                     MC_SHARE_MAX);
        return NULL;
    }
    return mcx_raise_mc(rc, 0, "sharing a buffer");
}

PyObject *mcx_raise_buffer_alloc(int rc, size_t nbytes, int in_worker)
{
    if (rc == MC_ENOMEM && in_worker) {
        PyErr_Format(PyExc_MemoryError,
                     "multicore.shared: no room for %zu bytes in shared memory, or this "
                     "worker already holds %d shared buffers and views",
                     nbytes, MC_WORKER_HOLDS);
        return NULL;
    }
    return mcx_raise_mc(rc, 0, "multicore.shared");
}

/* ---------------------------------------------------------------------
 * A task's failure, as get() raises it
 * --------------------------------------------------------------------- */

static PyObject *result_text(const mc_result *r)
{
    if (r->data == NULL || r->len == 0)
        return PyUnicode_FromString("no details");
    return PyUnicode_DecodeUTF8(r->data, (Py_ssize_t)r->len, "replace");
}

PyObject *mcx_raise_task_failure(PyObject *fn, const mc_result *r)
{
    PyObject *name = mcx_callable_name(fn);
    PyObject *why = NULL;
    if (name == NULL)
        return NULL;

    switch (r->status) {
    case MC_ETASK:
        switch (r->task_code) {
        case MCX_RC_EXCEPTION:
            mcx_raise_remote(r->data, r->len);
            break;
        case MCX_RC_CALLABLE:
            if ((why = result_text(r)) != NULL)
                PyErr_Format(mcx.CallableNotFoundError,
                             "%U was not found in the worker processes (%U): "
                             "define it before multicore.initialize(), or "
                             "pass use_dill=True", name, why);
            break;
        case MCX_RC_ARGS:
            if ((why = result_text(r)) != NULL)
                PyErr_Format(mcx.ArgumentsUnpicklingError,
                             "the arguments for %U could not be unpickled in "
                             "a worker (%U): define what they use before "
                             "multicore.initialize(), or pass use_dill=True",
                             name, why);
            break;
        case MCX_RC_NOMEM:
            if ((why = result_text(r)) != NULL)
                PyErr_Format(PyExc_MemoryError, "%U (running %U)", why, name);
            break;
        case MCX_RC_PAYLOAD:
            if ((why = result_text(r)) != NULL)
                PyErr_Format(mcx.MulticoreError, "running %U failed in the "
                             "worker: %U", name, why);
            break;
        default:
            PyErr_Format(mcx.MulticoreError,
                         "running %U failed with task code %d", name,
                         r->task_code);
            break;
        }
        break;
    case MC_EWORKERDIED: {
        PyObject *msg;
        if (r->term_signal != 0)
            msg = PyUnicode_FromFormat(
                "the worker process (pid %d) running %U died: killed by "
                "signal %d (%s)", (int)r->worker_pid, name, r->term_signal,
                strsignal(r->term_signal));
        else
            msg = PyUnicode_FromFormat(
                "the worker process (pid %d) running %U died: exited with "
                "status %d", (int)r->worker_pid, name, r->exit_status);
        if (msg == NULL)
            break;
        PyObject *sig = r->term_signal ? PyLong_FromLong(r->term_signal)
                                       : (Py_INCREF(Py_None), Py_None);
        PyObject *status = r->term_signal ? (Py_INCREF(Py_None), Py_None)
                                          : PyLong_FromLong(r->exit_status);
        PyObject *exc = NULL;
        if (sig != NULL && status != NULL)
            exc = PyObject_CallFunction(mcx.WorkerDiedError, "(OiOO)", msg,
                                        (int)r->worker_pid, sig, status);
        Py_XDECREF(sig);
        Py_XDECREF(status);
        Py_DECREF(msg);
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        break;
    }
    case MC_ECANCELED:
        PyErr_Format(mcx.MulticoreError,
                     "running %U was cancelled before it started", name);
        break;
    default:
        mcx_raise_mc(r->status, 0, "Task.get");
        break;
    }
    Py_XDECREF(why);
    Py_DECREF(name);
    return NULL;
}

/* ---------------------------------------------------------------------
 * Chaining and text helpers
 * --------------------------------------------------------------------- */

/* Take the current exception (all NULL if none), normalized, with its
   traceback attached to the value. */
static void fetch_normalized(PyObject **type, PyObject **value, PyObject **tb)
{
    PyErr_Fetch(type, value, tb);
    if (*type == NULL)
        return;
    PyErr_NormalizeException(type, value, tb);
    if (*tb != NULL && *value != NULL)
        PyException_SetTraceback(*value, *tb);
}

PyObject *mcx_raise_chained(PyObject *exc_type, const char *message)
{
    PyObject *type, *value, *tb;
    fetch_normalized(&type, &value, &tb);
    PyErr_SetString(exc_type, message);
    if (value == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        return NULL;
    }
    PyObject *ntype, *nvalue, *ntb;
    PyErr_Fetch(&ntype, &nvalue, &ntb);
    PyErr_NormalizeException(&ntype, &nvalue, &ntb);
    if (nvalue != NULL) {
        Py_INCREF(value);
        PyException_SetContext(nvalue, value);  /* steals */
        PyException_SetCause(nvalue, value);    /* steals */
        value = NULL;
    }
    PyErr_Restore(ntype, nvalue, ntb);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return NULL;
}

/* getattr(obj, name) as a str, or NULL without an exception set. */
static PyObject *str_attr(PyObject *obj, const char *name)
{
    PyObject *value = PyObject_GetAttrString(obj, name);
    if (value == NULL) {
        PyErr_Clear();
        return NULL;
    }
    if (!PyUnicode_Check(value)) {
        Py_DECREF(value);
        return NULL;
    }
    return value;
}

PyObject *mcx_callable_name(PyObject *fn)
{
    PyObject *module = str_attr(fn, "__module__");
    PyObject *qualname = str_attr(fn, "__qualname__");
    if (qualname == NULL)
        qualname = str_attr(fn, "__name__");
    PyObject *name;
    if (qualname == NULL)
        name = PyObject_Repr(fn);
    else if (module == NULL)
        name = (Py_INCREF(qualname), qualname);
    else
        name = PyUnicode_FromFormat("%U.%U", module, qualname);
    Py_XDECREF(module);
    Py_XDECREF(qualname);
    return name;
}

PyObject *mcx_exception_summary(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return PyUnicode_FromString("unknown error");
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *tname = str_attr(type, "__qualname__");
    PyObject *text = value ? PyObject_Str(value) : NULL;
    if (text == NULL)
        PyErr_Clear();
    if (tname == NULL)
        tname = PyUnicode_FromString("Exception");
    PyObject *summary = NULL;
    if (tname != NULL) {
        if (text != NULL && PyUnicode_GetLength(text) > 0)
            summary = PyUnicode_FromFormat("%U: %U", tname, text);
        else
            summary = (Py_INCREF(tname), tname);
    }
    if (summary == NULL)
        PyErr_Clear();
    Py_XDECREF(text);
    Py_XDECREF(tname);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (summary == NULL)
        summary = PyUnicode_FromString("unknown error");
    return summary;
}

/* ---------------------------------------------------------------------
 * The failure report: a task raised
 * --------------------------------------------------------------------- */

/* "module.qualname" of an exception type, or just the qualname for
   builtins. New reference or NULL (exception cleared). */
static PyObject *type_name(PyObject *type)
{
    PyObject *qualname = PyObject_GetAttrString(type, "__qualname__");
    PyObject *module = qualname ? PyObject_GetAttrString(type, "__module__") : NULL;
    PyObject *name = NULL;
    if (qualname != NULL && PyUnicode_Check(qualname)) {
        if (module != NULL && PyUnicode_Check(module) &&
            PyUnicode_CompareWithASCIIString(module, "builtins") != 0)
            name = PyUnicode_FromFormat("%U.%U", module, qualname);
        else
            name = (Py_INCREF(qualname), qualname);
    }
    if (name == NULL)
        PyErr_Clear();
    Py_XDECREF(qualname);
    Py_XDECREF(module);
    return name;
}

/* The traceback text of (type, value, tb); NULL (exception cleared) if
   formatting failed. */
static PyObject *format_traceback(PyObject *type, PyObject *value, PyObject *tb)
{
    PyObject *lines = PyObject_CallFunctionObjArgs(
        mcx.format_exception, type, value ? value : Py_None,
        tb ? tb : Py_None, NULL);
    PyObject *text = NULL;
    if (lines != NULL) {
        PyObject *empty = PyUnicode_FromString("");
        if (empty != NULL) {
            text = PyUnicode_Join(empty, lines);
            Py_DECREF(empty);
        }
        Py_DECREF(lines);
    }
    if (text == NULL)
        PyErr_Clear();
    return text;
}

PyObject *mcx_traceback_text(void)
{
    PyObject *type, *value, *tb;
    fetch_normalized(&type, &value, &tb);
    PyObject *text = type != NULL ? format_traceback(type, value, tb) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return text;
}

/*
 * Worker side: turn the current exception into the failure report
 * pickle((pickled exception or None, type name, message, traceback text)).
 * The exception is pickled on its own and checked to load back, so an
 * exception that cannot travel still reaches the caller as text.
 * Clears the exception; returns bytes, or NULL with an exception set only
 * if even the fallback could not be built.
 */
/* The worker's frames travel as text (the RemoteTraceback); the exception
   object travels without them. Pickle leaves tracebacks out, but a library
   that makes them picklable (tblib, which importing Dask's distributed
   installs) would send every frame of the chain, and a deep recursion's
   would not pickle at all. Clears the traceback of `exc` and of every
   exception in its __cause__/__context__ chain (at most MCX_CHAIN_MAX of
   them, cycles included). */
#define MCX_CHAIN_MAX 64
static void drop_tracebacks(PyObject *exc)
{
    PyObject *seen[MCX_CHAIN_MAX];
    int n = 0, next = 0;
    if (exc != NULL && PyExceptionInstance_Check(exc))
        seen[n++] = exc;
    while (next < n) {
        PyObject *e = seen[next++];
        PyException_SetTraceback(e, Py_None);
        PyObject *links[2] = {PyException_GetCause(e), PyException_GetContext(e)}; /* new refs */
        for (int i = 0; i < 2; i++) {
            PyObject *l = links[i];
            int known = l == NULL || !PyExceptionInstance_Check(l) || n == MCX_CHAIN_MAX;
            for (int j = 0; j < n && !known; j++)
                known = seen[j] == l;
            if (!known)
                seen[n++] = l;   /* borrowed: the chain holds it while we walk */
            Py_XDECREF(l);
        }
    }
}

PyObject *mcx_encode_exception(void)
{
    PyObject *type, *value, *tb;
    fetch_normalized(&type, &value, &tb);
    if (type == NULL)
        return PyBytes_FromString("");

    PyObject *name = type_name(type);
    PyObject *message = value ? PyObject_Str(value) : NULL;
    if (message == NULL) {
        PyErr_Clear();
        message = PyUnicode_FromString("<exception str() failed>");
    }
    PyObject *text = format_traceback(type, value, tb);
    if (text == NULL)
        text = PyUnicode_FromFormat("%S: %S\n", name ? name : Py_None,
                                    message ? message : Py_None);

    /* The exception itself, if it survives a round trip. */
    drop_tracebacks(value);
    PyObject *exc_bytes = value ? mcx_dumps(value, 0) : NULL;
    if (exc_bytes != NULL) {
        PyObject *back = PyObject_CallOneArg(mcx.pickle_loads, exc_bytes);
        if (back == NULL || !PyExceptionInstance_Check(back))
            Py_CLEAR(exc_bytes);
        Py_XDECREF(back);
    }
    PyErr_Clear();

    PyObject *report = NULL;
    if (name == NULL)
        name = PyUnicode_FromString("Exception");
    if (name != NULL && message != NULL && text != NULL) {
        PyObject *tuple = PyTuple_Pack(4, exc_bytes ? exc_bytes : Py_None,
                                       name, message, text);
        if (tuple != NULL) {
            report = mcx_dumps(tuple, 0);
            Py_DECREF(tuple);
        }
        if (report == NULL && exc_bytes != NULL) {
            /* Should not happen; retry without the exception object. */
            PyErr_Clear();
            tuple = PyTuple_Pack(4, Py_None, name, message, text);
            if (tuple != NULL) {
                report = mcx_dumps(tuple, 0);
                Py_DECREF(tuple);
            }
        }
    }
    Py_XDECREF(exc_bytes);
    Py_XDECREF(name);
    Py_XDECREF(message);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return report;
}

/*
 * Caller side: raise the failure a worker reported. The original exception
 * is re-created when it loads and is an Exception; otherwise (it could not
 * travel, or it is a SystemExit/KeyboardInterrupt-like BaseException that
 * must not unwind the caller) a MulticoreError("RemoteError: T: msg") is
 * raised. Either way __cause__ is RemoteTraceback(worker's traceback text).
 * Returns NULL.
 */
PyObject *mcx_raise_remote(const void *data, size_t len)
{
    PyObject *report = mcx_loads(data ? data : "", len, 0);
    if (report == NULL)
        return mcx_raise_chained(mcx.MulticoreError,
                                 "a task failed and its failure report "
                                 "could not be decoded");
    if (!PyTuple_Check(report) || PyTuple_GET_SIZE(report) != 4 ||
        !PyUnicode_Check(PyTuple_GET_ITEM(report, 1)) ||
        !PyUnicode_Check(PyTuple_GET_ITEM(report, 2)) ||
        !PyUnicode_Check(PyTuple_GET_ITEM(report, 3))) {
        Py_DECREF(report);
        PyErr_SetString(mcx.MulticoreError,
                        "a task failed with a malformed failure report");
        return NULL;
    }
    PyObject *exc_bytes = PyTuple_GET_ITEM(report, 0);
    PyObject *name = PyTuple_GET_ITEM(report, 1);
    PyObject *message = PyTuple_GET_ITEM(report, 2);
    PyObject *text = PyTuple_GET_ITEM(report, 3);

    PyObject *cause = PyObject_CallOneArg(mcx.RemoteTraceback, text);
    if (cause == NULL) {
        Py_DECREF(report);
        return NULL;
    }
    PyObject *exc = NULL;
    if (PyBytes_Check(exc_bytes)) {
        exc = PyObject_CallOneArg(mcx.pickle_loads, exc_bytes);
        if (exc == NULL)
            PyErr_Clear();
        else if (!PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_Exception))
            Py_CLEAR(exc);
    }
    if (exc == NULL) {
        PyObject *msg;
        if (PyUnicode_GetLength(message) > 0)
            msg = PyUnicode_FromFormat("RemoteError: %U: %U", name, message);
        else
            msg = PyUnicode_FromFormat("RemoteError: %U", name);
        if (msg != NULL) {
            exc = PyObject_CallOneArg(mcx.MulticoreError, msg);
            Py_DECREF(msg);
        }
    }
    Py_DECREF(report);
    if (exc == NULL) {
        Py_DECREF(cause);
        return NULL;
    }
    PyException_SetCause(exc, cause);   /* steals cause */
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
}
