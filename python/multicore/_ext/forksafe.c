/*
 * forksafe.c — make the zygote's copy of the interpreter safe to print and
 * log from, although the caller it was forked from may run threads.
 *
 * Owns: mcx_renew_streams_after_fork(), called once in the zygote right
 * after PyOS_AfterFork_Child(). Every worker is forked from the zygote
 * (single-threaded), so what is repaired here is repaired for all of them.
 * Also mcx_flush_std(), which empties the standard streams' buffers before
 * each fork and before a worker exits.
 *
 * The hazard: a buffered file object (io.BufferedWriter under a
 * TextIOWrapper) has a lock that a thread holds while it writes, with the
 * GIL released during the write() system call. If the caller forks at that
 * moment, the child's copy of that lock is taken by a thread that does not
 * exist there, and the first print or log line in a worker hangs forever.
 * logging re-creates its handlers' own locks at fork, but not the locks of
 * the files they write to (pytest's log file handler on /dev/null hit this
 * in the tests).
 *
 * The repair: open fresh file objects on the same descriptors, with the
 * same settings, for sys.stdout, sys.stderr (and __stdout__/__stderr__),
 * and for the stream of every logging handler that writes to a real file;
 * point everything at the fresh objects. The old objects are deliberately
 * leaked: destroying one would flush it, which takes the lock in question,
 * and would write the caller's pending output a second time. Streams that
 * are not io.TextIOWrapper over a descriptor (StringIO, notebook streams)
 * have no such lock and are left alone.
 */
#include "ext.h"

/* A fresh io.TextIOWrapper on old's descriptor, or NULL (no exception). */
static PyObject *reopen_text_stream(PyObject *old, PyObject *io)
{
    PyObject *wrapper_type = PyObject_GetAttrString(io, "TextIOWrapper");
    int is_text = wrapper_type ? PyObject_IsInstance(old, wrapper_type) : -1;
    Py_XDECREF(wrapper_type);
    if (is_text != 1) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *fresh = NULL;
    PyObject *fd = PyObject_CallMethod(old, "fileno", NULL);
    PyObject *encoding = fd ? PyObject_GetAttrString(old, "encoding") : NULL;
    PyObject *errors = encoding ? PyObject_GetAttrString(old, "errors") : NULL;
    PyObject *line_buffering = errors ? PyObject_GetAttrString(old, "line_buffering") : NULL;
    PyObject *open = line_buffering ? PyObject_GetAttrString(io, "open") : NULL;
    PyObject *args = open ? Py_BuildValue("(Os)", fd, "w") : NULL;
    PyObject *kwargs = args ? Py_BuildValue("{s:O,s:O,s:O}", "encoding", encoding, "errors",
                                            errors, "closefd", Py_False)
                            : NULL;
    if (kwargs != NULL)
        fresh = PyObject_Call(open, args, kwargs);
    if (fresh != NULL && line_buffering == Py_True) {
        /* open() has no line_buffering argument; reconfigure() does */
        PyObject *reconfigure = PyObject_GetAttrString(fresh, "reconfigure");
        PyObject *empty = reconfigure ? PyTuple_New(0) : NULL;
        PyObject *kw = empty ? Py_BuildValue("{s:O}", "line_buffering", Py_True) : NULL;
        PyObject *r = kw ? PyObject_Call(reconfigure, empty, kw) : NULL;
        Py_XDECREF(r);
        Py_XDECREF(kw);
        Py_XDECREF(empty);
        Py_XDECREF(reconfigure);
    }
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    Py_XDECREF(open);
    Py_XDECREF(fd);
    Py_XDECREF(encoding);
    Py_XDECREF(errors);
    Py_XDECREF(line_buffering);
    PyErr_Clear();
    return fresh;
}

/* Replace sys.<name> (and sys.__<name>__ if it is the same object).
   Stores the old and new objects in *old_out / *new_out (new references,
   NULL when nothing was replaced). */
static void renew_sys_stream(const char *name, PyObject *io, PyObject **old_out, PyObject **new_out)
{
    *old_out = *new_out = NULL;
    PyObject *old = PySys_GetObject(name); /* borrowed */
    if (old == NULL || old == Py_None)
        return;
    PyObject *fresh = reopen_text_stream(old, io);
    if (fresh == NULL)
        return;
    Py_INCREF(old);                        /* leaked on purpose, see top */
    char dunder[16];
    PyOS_snprintf(dunder, sizeof dunder, "__%s__", name);
    if (PySys_GetObject(dunder) == old)
        PySys_SetObject(dunder, fresh);
    PySys_SetObject(name, fresh);
    Py_INCREF(old);
    *old_out = old;
    *new_out = fresh;
}

/* Point every logging handler's stream at a fresh object. */
static void renew_logging_streams(PyObject *io, PyObject *olds[2], PyObject *news[2])
{
    PyObject *name = PyUnicode_FromString("logging");
    PyObject *logging = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    if (logging == NULL) {
        PyErr_Clear();
        return;                            /* never imported: nothing to do */
    }
    PyObject *refs = PyObject_GetAttrString(logging, "_handlerList");
    Py_ssize_t n = refs && PyList_Check(refs) ? PyList_GET_SIZE(refs) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *handler = PyObject_CallNoArgs(PyList_GET_ITEM(refs, i)); /* weakref */
        PyObject *stream = handler && handler != Py_None
                               ? PyObject_GetAttrString(handler, "stream") : NULL;
        PyErr_Clear();
        if (stream != NULL && stream != Py_None) {
            PyObject *fresh = NULL;
            for (int k = 0; k < 2; k++)
                if (olds[k] != NULL && stream == olds[k])
                    fresh = Py_NewRef(news[k]);
            if (fresh == NULL && (fresh = reopen_text_stream(stream, io)) != NULL)
                Py_INCREF(stream);         /* leaked on purpose, see top */
            /* Set directly: setStream() would flush the old object. */
            if (fresh != NULL && PyObject_SetAttrString(handler, "stream", fresh) < 0)
                PyErr_Clear();
            Py_XDECREF(fresh);
        }
        Py_XDECREF(stream);
        Py_XDECREF(handler);
    }
    Py_XDECREF(refs);
    Py_DECREF(logging);
    PyErr_Clear();
}

void mcx_renew_streams_after_fork(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyObject *io = PyImport_ImportModule("io");
    if (io != NULL) {
        PyObject *olds[2], *news[2];
        renew_sys_stream("stdout", io, &olds[0], &news[0]);
        renew_sys_stream("stderr", io, &olds[1], &news[1]);
        renew_logging_streams(io, olds, news);
        for (int k = 0; k < 2; k++) {
            Py_XDECREF(olds[k]);
            Py_XDECREF(news[k]);
        }
        Py_DECREF(io);
    }
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

/* Before a fork and before a worker leaves with _exit(): what sys.stdout
   and sys.stderr buffered would otherwise be written twice (by both sides
   of the fork) or never. GIL held; a pending exception is kept. */
void mcx_flush_std(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    const char *names[2] = {"stdout", "stderr"};
    for (int i = 0; i < 2; i++) {
        PyObject *f = PySys_GetObject(names[i]);   /* borrowed */
        if (f == NULL || f == Py_None)
            continue;
        PyObject *r = PyObject_CallMethod(f, "flush", NULL);
        if (r == NULL)
            PyErr_Clear();
        Py_XDECREF(r);
    }
    PyErr_Restore(type, value, tb);
}
