/*
 * wire.c — the bytes that cross between the caller and a worker, and the
 * (de)serialization on both sides of that crossing.
 *
 * Owns: the task payload header (written by the caller in task.c, parsed
 * by the worker in worker.c), pickle/dill dumps and loads, the three result
 * formats ('pickle', 'json', 'string') encoded in the worker and decoded in
 * the caller, and the failure report a worker sends when the task raised
 * (encoded here in the worker, re-raised here in the caller). Keeping both
 * directions in one file keeps the two ends of every format in agreement.
 */
#include "ext.h"

#include <string.h>

/* ---------------------------------------------------------------------
 * pickle / dill
 * --------------------------------------------------------------------- */

int mcx_load_dill(void)
{
    if (mcx.dill_dumps != NULL && mcx.dill_loads != NULL)
        return 0;
    PyObject *dill = PyImport_ImportModule("dill");
    if (dill == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ImportError))
            mcx_raise_chained(PyExc_ImportError,
                              "use_dill=True needs the 'dill' package "
                              "(pip install dill)");
        return -1;
    }
    PyObject *dumps = PyObject_GetAttrString(dill, "dumps");
    PyObject *loads = dumps ? PyObject_GetAttrString(dill, "loads") : NULL;
    Py_DECREF(dill);
    if (loads == NULL) {
        Py_XDECREF(dumps);
        return -1;
    }
    Py_XSETREF(mcx.dill_dumps, dumps);
    Py_XSETREF(mcx.dill_loads, loads);
    return 0;
}

PyObject *mcx_dumps(PyObject *obj, int use_dill)
{
    PyObject *out;
    if (use_dill) {
        if (mcx_load_dill() < 0)
            return NULL;
        out = PyObject_CallOneArg(mcx.dill_dumps, obj);
    } else {
        PyObject *argv[2] = {obj, mcx.protocol};
        out = PyObject_Vectorcall(mcx.pickle_dumps, argv, 2, NULL);
    }
    if (out != NULL && !PyBytes_Check(out)) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_TypeError, "pickler did not return bytes");
        return NULL;
    }
    return out;
}

/* Release a memoryview over foreign memory; keep any pending exception. */
static void release_view(PyObject *view)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *r = PyObject_CallMethod(view, "release", NULL);
    if (r == NULL)
        PyErr_Clear();
    Py_XDECREF(r);
    PyErr_Restore(type, value, tb);
    Py_DECREF(view);
}

PyObject *mcx_loads(const void *data, size_t len, int use_dill)
{
    if (len > (size_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OverflowError, "payload too large");
        return NULL;
    }
    if (use_dill) {
        if (mcx_load_dill() < 0)
            return NULL;
        /* dill wraps its input in a BytesIO: give it bytes. */
        PyObject *bytes = PyBytes_FromStringAndSize((const char *)data,
                                                    (Py_ssize_t)len);
        if (bytes == NULL)
            return NULL;
        PyObject *out = PyObject_CallOneArg(mcx.dill_loads, bytes);
        Py_DECREF(bytes);
        return out;
    }
    /* pickle reads straight from the shared bytes through a view. */
    PyObject *view = PyMemoryView_FromMemory((char *)data, (Py_ssize_t)len,
                                             PyBUF_READ);
    if (view == NULL)
        return NULL;
    PyObject *out = PyObject_CallOneArg(mcx.pickle_loads, view);
    release_view(view);
    return out;
}

/* ---------------------------------------------------------------------
 * Results: encoded in the worker, decoded in the caller
 * --------------------------------------------------------------------- */

void mcx_buffer_release(mcx_buffer *buf)
{
    Py_CLEAR(buf->owner);
    buf->data = NULL;
    buf->len = 0;
}

int mcx_encode_result(PyObject *result, int format, mcx_buffer *out)
{
    out->owner = NULL;
    out->data = NULL;
    out->len = 0;
    switch (format) {
    case MCX_FMT_PICKLE: {
        PyObject *bytes = mcx_dumps(result, 0);
        if (bytes == NULL)
            return -1;
        out->owner = bytes;
        out->data = PyBytes_AS_STRING(bytes);
        out->len = PyBytes_GET_SIZE(bytes);
        return 0;
    }
    case MCX_FMT_JSON: {
        PyObject *text = PyObject_CallOneArg(mcx.json_dumps, result);
        if (text == NULL)
            return -1;
        if (!PyUnicode_Check(text)) {
            Py_DECREF(text);
            PyErr_SetString(PyExc_TypeError, "json.dumps did not return a str");
            return -1;
        }
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(text, &n);
        if (utf8 == NULL) {
            Py_DECREF(text);
            return -1;
        }
        out->owner = text;
        out->data = utf8;
        out->len = n;
        return 0;
    }
    case MCX_FMT_STRING: {
        if (!PyUnicode_Check(result)) {
            PyErr_Format(PyExc_TypeError,
                         "serialization_format='string' needs a str result, "
                         "got %.200s", Py_TYPE(result)->tp_name);
            return -1;
        }
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(result, &n);
        if (utf8 == NULL)
            return -1;
        Py_INCREF(result);
        out->owner = result;
        out->data = utf8;
        out->len = n;
        return 0;
    }
    default:
        PyErr_Format(PyExc_ValueError, "unknown result format %d", format);
        return -1;
    }
}

PyObject *mcx_decode_result(const void *data, size_t len, int format)
{
    if (len > (size_t)PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_OverflowError, "result too large");
        return NULL;
    }
    if (data == NULL)
        data = "";
    switch (format) {
    case MCX_FMT_PICKLE:
        return mcx_loads(data, len, 0);
    case MCX_FMT_JSON: {
        PyObject *text = PyUnicode_DecodeUTF8(data, (Py_ssize_t)len, "strict");
        if (text == NULL)
            return NULL;
        PyObject *out = PyObject_CallOneArg(mcx.json_loads, text);
        Py_DECREF(text);
        return out;
    }
    case MCX_FMT_STRING:
        return PyUnicode_DecodeUTF8(data, (Py_ssize_t)len, "strict");
    default:
        PyErr_Format(PyExc_ValueError, "unknown result format %d", format);
        return NULL;
    }
}

/* ---------------------------------------------------------------------
 * Failure report: a task raised
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

/*
 * Worker side: turn the current exception into the failure report
 * pickle((pickled exception or None, type name, message, traceback text)).
 * The exception is pickled on its own and checked to load back, so an
 * exception that cannot travel still reaches the caller as text.
 * Clears the exception; returns bytes, or NULL with an exception set only
 * if even the fallback could not be built.
 */
PyObject *mcx_encode_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return PyBytes_FromString("");
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);

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
