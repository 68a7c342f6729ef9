/*
 * forksafe.c — make a worker's copy of the interpreter safe to print and
 * log from, although the caller it was forked from may run threads.
 *
 * Owns: mcx_prepare_streams_for_fork() and mcx_forget_prepared_streams(),
 * in the caller around its fork of the zygote, and
 * mcx_renew_streams_after_fork(), in each worker right after
 * PyOS_AfterFork_Child() (the zygote between them runs no Python: see
 * lifecycle.c's fork hooks). Also mcx_flush_std(), which empties the
 * standard streams' buffers before each fork and before a worker exits.
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

/* ---------------------------------------------------------------------
 * Which streams, and their fresh replacements
 *
 * One walk over the streams in question serves both sides of the fork:
 * the caller, just before it forks the zygote, opens the fresh objects
 * (where that is a few microseconds, not a copy-on-write fault per page
 * the allocation touches) and keeps them in `prepared`, old with fresh; each
 * worker inherits the map through the zygote's snapshot and points the
 * streams at them. A stream the map does not know (replaced by another
 * thread while the caller prepared) is reopened in the worker.
 * --------------------------------------------------------------------- */

/* [(old stream, fresh), ...], or NULL. A list searched by identity: a
   handful of entries, and no stream's __eq__ or __hash__ is called. */
static PyObject *prepared;

/* The fresh object for `old` (new reference), from `prepared` or opened now
   and remembered there; NULL when old is not a stream to repair. *io is
   imported at the first stream `prepared` does not know. */
static PyObject *fresh_for(PyObject *old, PyObject **io)
{
    if (prepared == NULL && (prepared = PyList_New(0)) == NULL) {
        PyErr_Clear();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(prepared); i++) {
        PyObject *pair = PyList_GET_ITEM(prepared, i);
        if (PyTuple_GET_ITEM(pair, 0) == old)
            return Py_NewRef(PyTuple_GET_ITEM(pair, 1));
    }
    if (*io == NULL && (*io = PyImport_ImportModule("io")) == NULL) {
        PyErr_Clear();
        return NULL;
    }
    PyObject *fresh = reopen_text_stream(old, *io);
    PyObject *pair = fresh ? PyTuple_Pack(2, old, fresh) : NULL;
    if (pair != NULL && PyList_Append(prepared, pair) < 0)
        PyErr_Clear();
    Py_XDECREF(pair);
    PyErr_Clear();
    return fresh;
}

/* Visit sys.stdout, sys.stderr and every logging handler's stream. With
   install, point each at its fresh object (sys.__stdout__/__stderr__ too
   when they are the same object); the old objects are leaked on purpose
   (see top). Without, only fill `prepared`. */
static void walk_streams(int install)
{
    PyObject *io = NULL;
    const char *names[2] = {"stdout", "stderr"};
    for (int k = 0; k < 2; k++) {
        PyObject *old = PySys_GetObject(names[k]);         /* borrowed */
        if (old == NULL || old == Py_None)
            continue;
        PyObject *fresh = fresh_for(old, &io);
        if (fresh != NULL && install) {
            Py_INCREF(old);                                /* leaked */
            char dunder[16];
            PyOS_snprintf(dunder, sizeof dunder, "__%s__", names[k]);
            if (PySys_GetObject(dunder) == old)
                PySys_SetObject(dunder, fresh);
            PySys_SetObject(names[k], fresh);
        }
        Py_XDECREF(fresh);
    }

    PyObject *name = PyUnicode_FromString("logging");
    PyObject *logging = name ? PyImport_GetModule(name) : NULL;
    Py_XDECREF(name);
    PyObject *refs = logging ? PyObject_GetAttrString(logging, "_handlerList") : NULL;
    PyErr_Clear();                         /* logging never imported: no handlers */
    Py_ssize_t n = refs && PyList_Check(refs) ? PyList_GET_SIZE(refs) : 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *handler = PyObject_CallNoArgs(PyList_GET_ITEM(refs, i)); /* weakref */
        PyObject *stream = handler && handler != Py_None
                               ? PyObject_GetAttrString(handler, "stream") : NULL;
        PyErr_Clear();
        PyObject *fresh = stream && stream != Py_None ? fresh_for(stream, &io) : NULL;
        if (fresh != NULL && install) {
            Py_INCREF(stream);                             /* leaked */
            /* Set directly: setStream() would flush the old object. */
            if (PyObject_SetAttrString(handler, "stream", fresh) < 0)
                PyErr_Clear();
        }
        Py_XDECREF(fresh);
        Py_XDECREF(stream);
        Py_XDECREF(handler);
    }
    Py_XDECREF(refs);
    Py_XDECREF(logging);
    Py_XDECREF(io);
    PyErr_Clear();
}

void mcx_prepare_streams_for_fork(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    Py_CLEAR(prepared);
    walk_streams(0);
    PyErr_Restore(type, value, tb);
}

void mcx_forget_prepared_streams(void)
{
    /* The fresh objects were never used here: closing them (closefd=False,
       empty buffers) neither writes nor closes a descriptor. */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    Py_CLEAR(prepared);
    PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

void mcx_renew_streams_after_fork(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    walk_streams(1);
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
