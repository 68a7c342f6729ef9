/*
 * wire.c — the serializers on both sides of the crossing between the
 * caller and a worker.
 *
 * Owns: pickle/dill dumps and loads (loads straight from shared memory
 * through a view), and the three result formats ('pickle', 'json',
 * 'string') encoded in the worker and decoded in the caller; both ends of
 * each format are here, so they agree. The byte layouts these travel in
 * are frame.c's; pickling with out-of-band buffers is oob.c's; the
 * failure report of a task that raised is errors.c's.
 */
#include "ext.h"

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
