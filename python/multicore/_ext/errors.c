/*
 * errors.c — the one place where engine error codes become Python
 * exceptions, plus the small exception helpers the other files share.
 *
 * Owns: loading the exception classes of multicore.exceptions into the
 * module state, the MC_E* -> exception mapping (so every call site raises
 * the same type for the same code), exception chaining, and the text
 * helpers that name a callable or summarize an exception.
 */
#include "ext.h"

#include <errno.h>
#include <string.h>

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

PyObject *mcx_raise_chained(PyObject *exc_type, const char *message)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type != NULL) {
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL)
            PyException_SetTraceback(value, tb);
    }
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
