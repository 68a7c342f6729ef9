/*
 * oob.c — pickle protocol 5 with out-of-band buffers through shared memory.
 *
 * Owns: pickling an object into a frame whose large buffers (numpy arrays
 * and anything else pickled through PickleBuffer, from MCX_OOB_MIN bytes
 * up, and large bytes, bytearray and memoryview arguments and results,
 * through _BytesLike) are stored beside the pickle stream instead of
 * inside it; writing a frame straight into shared memory (each buffer
 * copied exactly once, with the GIL released for big copies); and loading
 * one back with each buffer handed to pickle as a view of the shared memory
 * itself (no copy: a numpy array that comes back IS shared memory), through
 * a SharedMemory object (shared.c) that owns an engine hold (mc_hold) on the
 * task record and releases it when the last view is gone.
 *
 * Shared buffers (multicore.shared) are SharedMemory objects too. A buffer
 * that lies inside one of them, bound for a task of the same pool, is not
 * copied at all: its table entry names a link (MCX_FRAME_LINK) that the
 * engine attaches to the task record, and the receiver gets a view of the
 * very same memory. Such buffers always go out of band, whatever their
 * size, so that a write on one side is seen on the other.
 *
 * The frame's layout, and the code that writes its head and validates it
 * when read back, are frame.h / frame.c's (Python-free, and fuzzed by
 * tests/fuzz/fuzz_frame.c); everything here reads a frame only through
 * mcx_frame_parse() and mcx_frame_link_parse().
 */
#include "ext.h"

#include <stddef.h>
#include <string.h>

/* ---------------------------------------------------------------------
 * Encoding
 * --------------------------------------------------------------------- */

/* buffer_callback: small buffers stay in the stream (True), large ones go
   out of band (False) and are collected in the list bound as self; so does
   any buffer inside a shared buffer, whatever its size. */
static PyObject *collect_buffer(PyObject *list, PyObject *picklebuffer)
{
    const Py_buffer *view = PyPickleBuffer_GetBuffer(picklebuffer);
    if (view == NULL)
        return NULL;
    if (view->len < MCX_OOB_MIN && !(PyBuffer_IsContiguous(view, 'C') && mcx_shm_owner(view)))
        Py_RETURN_TRUE;
    if (PyList_Append(list, picklebuffer) < 0)
        return NULL;
    Py_RETURN_FALSE;
}

static PyMethodDef collect_buffer_def = {"_collect_buffer", collect_buffer, METH_O, NULL};

/* ---------------------------------------------------------------------
 * Large bytes, bytearray and memoryview
 *
 * Pickle writes bytes and bytearray into the stream even with protocol 5
 * (and cannot pickle a memoryview), and its C implementation handles them
 * before any override is consulted. So a large one given directly as an
 * argument (or keyword argument) of run(), or returned by the task, is
 * wrapped in a _BytesLike whose reduction carries a PickleBuffer: it goes
 * out of band, written once; the other side rebuilds a bytes or bytearray
 * from the view (one copy: those types own their memory) or receives a
 * memoryview of the shared memory itself.
 * --------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *obj;
} BytesLikeObject;

static void byteslike_dealloc(BytesLikeObject *self)
{
    Py_XDECREF(self->obj);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *byteslike_reduce_ex(BytesLikeObject *self, PyObject *protocol)
{
    (void)protocol;
    PyObject *ctor;
    if (PyBytes_CheckExact(self->obj))
        ctor = (PyObject *)&PyBytes_Type;
    else if (PyByteArray_CheckExact(self->obj))
        ctor = (PyObject *)&PyByteArray_Type;
    else
        ctor = mcx.as_memoryview;
    PyObject *buffer = PyPickleBuffer_FromObject(self->obj);
    if (buffer == NULL)
        return NULL;
    PyObject *result = Py_BuildValue("(O(N))", ctor, buffer);
    return result;
}

static PyMethodDef byteslike_methods[] = {
    {"__reduce_ex__", (PyCFunction)byteslike_reduce_ex, METH_O, NULL},
    {NULL, NULL, 0, NULL}
};

PyTypeObject mcx_BytesLikeType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "multicore._multicore._BytesLike",
    .tp_basicsize = sizeof(BytesLikeObject),
    .tp_dealloc = (destructor)byteslike_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = byteslike_methods,
};

/* ---------------------------------------------------------------------
 * Lists of numbers
 *
 * Pickle writes a list item by item: about 10-25 ns an int to dump and as
 * much to load, in the caller's one thread, which bounded chunked maps of
 * small items (issue 4's (c): the caller pickles every chunk it sends and
 * unpickles every result list). An exact list of MCX_NUMLIST_MIN or more
 * items that are all exact ints fitting in 64 bits, or all exact floats,
 * given directly as an argument or returned, is wrapped in a _NumList: it
 * travels as one buffer of 8-byte values (out of band from MCX_OOB_MIN
 * bytes), and _multicore._numlist() rebuilds an equal list of exact ints
 * or floats (float bits included: NaN payloads, -0.0). Anything else (a
 * bool or any int or float subclass, an int beyond 64 bits, a mix, a list
 * subclass) is pickled as before.
 * --------------------------------------------------------------------- */

enum { NUMLIST_INTS = 0, NUMLIST_FLOATS = 1 };

typedef struct {
    PyObject_HEAD
    int kind;
    PyObject *packed; /* bytes: the values, 8 bytes each, native order */
} NumListObject;

static void numlist_dealloc(NumListObject *self)
{
    Py_XDECREF(self->packed);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *numlist_reduce_ex(NumListObject *self, PyObject *protocol)
{
    (void)protocol;
    PyObject *data = PyBytes_GET_SIZE(self->packed) >= MCX_OOB_MIN ? PyPickleBuffer_FromObject(self->packed)
                                                                   : Py_NewRef(self->packed);
    if (data == NULL)
        return NULL;
    return Py_BuildValue("(O(iN))", mcx.numlist, self->kind, data);
}

static PyMethodDef numlist_methods[] = {
    {"__reduce_ex__", (PyCFunction)numlist_reduce_ex, METH_O, NULL},
    {NULL, NULL, 0, NULL}
};

PyTypeObject mcx_NumListType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "multicore._multicore._NumList",
    .tp_basicsize = sizeof(NumListObject),
    .tp_dealloc = (destructor)numlist_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = numlist_methods,
};

/* A _NumList of list, or NULL: with an exception set on an error, without
   one when the list does not qualify. */
static PyObject *numlist_pack(PyObject *list)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    if (n < MCX_NUMLIST_MIN || n > PY_SSIZE_T_MAX / 8)
        return NULL;
    PyObject *first = PyList_GET_ITEM(list, 0);
    int kind = PyLong_CheckExact(first) ? NUMLIST_INTS : PyFloat_CheckExact(first) ? NUMLIST_FLOATS : -1;
    if (kind < 0)
        return NULL;
    PyObject *packed = PyBytes_FromStringAndSize(NULL, n * 8);
    if (packed == NULL)
        return NULL;
    char *p = PyBytes_AS_STRING(packed);
    /* No Python code runs in this loop (exact types only), so the list
       cannot change under it. */
    for (Py_ssize_t i = 0; i < n; i++, p += 8) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (kind == NUMLIST_INTS) {
            int overflow;
            if (!PyLong_CheckExact(item))
                goto not_ours;
            long long v = PyLong_AsLongLongAndOverflow(item, &overflow);
            if (overflow)
                goto not_ours;
            if (v == -1 && PyErr_Occurred()) {
                Py_DECREF(packed);
                return NULL;
            }
            memcpy(p, &v, 8);
        } else {
            if (!PyFloat_CheckExact(item))
                goto not_ours;
            double d = PyFloat_AS_DOUBLE(item);
            memcpy(p, &d, 8);
        }
    }
    NumListObject *w = PyObject_New(NumListObject, &mcx_NumListType);
    if (w == NULL) {
        Py_DECREF(packed);
        return NULL;
    }
    w->kind = kind;
    w->packed = packed;
    return (PyObject *)w;
not_ours:
    Py_DECREF(packed);
    return NULL;
}

PyObject *mcx_numlist_unpack(PyObject *module, PyObject *args)
{
    (void)module;
    int kind;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "iy*:_numlist", &kind, &view))
        return NULL;
    PyObject *list = NULL;
    if ((kind != NUMLIST_INTS && kind != NUMLIST_FLOATS) || view.len % 8 != 0) {
        PyErr_Format(PyExc_ValueError, "_numlist: kind %d with %zd bytes (want kind 0 or 1 and a multiple of 8)",
                     kind, view.len);
        goto out;
    }
    Py_ssize_t n = view.len / 8;
    if ((list = PyList_New(n)) == NULL)
        goto out;
    const char *p = view.buf;
    for (Py_ssize_t i = 0; i < n; i++, p += 8) {
        PyObject *item;
        if (kind == NUMLIST_INTS) {
            long long v;
            memcpy(&v, p, 8);
            item = PyLong_FromLongLong(v);
        } else {
            double d;
            memcpy(&d, p, 8);
            item = PyFloat_FromDouble(d);
        }
        if (item == NULL) {
            Py_CLEAR(list);
            goto out;
        }
        PyList_SET_ITEM(list, i, item);
    }
out:
    PyBuffer_Release(&view);
    return list;
}

/* obj itself, or a _BytesLike around it when it is a large bytes,
   bytearray or C-contiguous memoryview, or a memoryview of a shared
   buffer, or a _NumList around a list of numbers. New reference. */
static PyObject *wrap_large(PyObject *obj)
{
    if (PyList_CheckExact(obj)) {
        PyObject *w = numlist_pack(obj);
        return w != NULL ? w : PyErr_Occurred() ? NULL : Py_NewRef(obj);
    }
    Py_ssize_t n = -1;
    if (PyBytes_CheckExact(obj))
        n = PyBytes_GET_SIZE(obj);
    else if (PyByteArray_CheckExact(obj))
        n = PyByteArray_GET_SIZE(obj);
    else if (PyMemoryView_Check(obj) && PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(obj), 'C'))
        n = mcx_shm_owner(PyMemoryView_GET_BUFFER(obj)) ? MCX_OOB_MIN   /* always linked */
                                                       : PyMemoryView_GET_BUFFER(obj)->len;
    if (n < MCX_OOB_MIN)
        return Py_NewRef(obj);
    BytesLikeObject *w = PyObject_New(BytesLikeObject, &mcx_BytesLikeType);
    if (w == NULL)
        return NULL;
    w->obj = Py_NewRef(obj);
    return (PyObject *)w;
}

/* 1 if v cannot hold a reference to a list that pickle would then share
   with another argument: an atom, or a function or class (pickled by
   name). */
static int cannot_hold(PyObject *v)
{
    return v == Py_None || PyBool_Check(v) || PyLong_CheckExact(v) || PyFloat_CheckExact(v) ||
           PyUnicode_CheckExact(v) || PyBytes_CheckExact(v) || PyFunction_Check(v) || PyCFunction_Check(v) ||
           PyType_Check(v);
}

/* A list argument is wrapped only if no other argument can refer to it:
   pickle's memo keeps one object given twice (or also held inside another
   argument) one object on the other side, and a _NumList would not.
   kwargs may be NULL. */
static int keeps_list_whole(PyObject *list, PyObject *v, Py_ssize_t *seen)
{
    return v == list ? ++*seen > 1 : !cannot_hold(v);
}

static PyObject *wrap_arg(PyObject *obj, PyObject *args, PyObject *kwargs)
{
    if (!PyList_CheckExact(obj))
        return wrap_large(obj);
    Py_ssize_t seen = 0, pos = 0;
    PyObject *key, *value;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++)
        if (keeps_list_whole(obj, PyTuple_GET_ITEM(args, i), &seen))
            return Py_NewRef(obj);
    while (kwargs && PyDict_Next(kwargs, &pos, &key, &value))
        if (keeps_list_whole(obj, value, &seen))
            return Py_NewRef(obj);
    return wrap_large(obj);
}

/* A call's (args, kwargs) pair with large bytes-likes and lists of
   numbers wrapped, or the pair itself when there is none. New reference. */
static PyObject *wrap_call(PyObject *pair)
{
    PyObject *args = PyTuple_GET_ITEM(pair, 0), *kwargs = PyTuple_GET_ITEM(pair, 1);
    PyObject *new_args = PyTuple_New(PyTuple_GET_SIZE(args));
    PyObject *new_kwargs = new_args ? PyDict_New() : NULL;
    if (new_kwargs == NULL) {
        Py_XDECREF(new_args);
        return NULL;
    }
    int changed = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(args); i++) {
        PyObject *item = wrap_arg(PyTuple_GET_ITEM(args, i), args, kwargs);
        if (item == NULL)
            goto fail;
        changed |= item != PyTuple_GET_ITEM(args, i);
        PyTuple_SET_ITEM(new_args, i, item);
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(kwargs, &pos, &key, &value)) {
        PyObject *item = wrap_arg(value, args, kwargs);
        if (item == NULL)
            goto fail;
        changed |= item != value;
        int rc = PyDict_SetItem(new_kwargs, key, item);
        Py_DECREF(item);
        if (rc < 0)
            goto fail;
    }
    if (!changed) {
        Py_DECREF(new_args);
        Py_DECREF(new_kwargs);
        return Py_NewRef(pair);
    }
    PyObject *out = PyTuple_Pack(2, new_args, new_kwargs);
    Py_DECREF(new_args);
    Py_DECREF(new_kwargs);
    return out;
fail:
    Py_DECREF(new_args);
    Py_DECREF(new_kwargs);
    return NULL;
}

/* A result: a list of numbers travels packed when it is the result or
   an item of a returned tuple (as map's chunks return (results,
   seconds)), under wrap_arg()'s rule; large bytes-likes only as the
   result itself. New reference; no allocation when nothing is wrapped. */
static PyObject *wrap_result(PyObject *obj)
{
    if (!PyTuple_CheckExact(obj))
        return wrap_large(obj);
    Py_ssize_t n = PyTuple_GET_SIZE(obj);
    PyObject *out = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(obj, i);
        if (!PyList_CheckExact(item))
            continue;
        PyObject *w = wrap_arg(item, obj, NULL);
        if (w == NULL) {
            Py_XDECREF(out);
            return NULL;
        }
        if (w == item) {
            Py_DECREF(w);
            continue;
        }
        if (out == NULL) { /* a new tuple (a slice of the whole would be obj itself) */
            if ((out = PyTuple_New(n)) == NULL) {
                Py_DECREF(w);
                return NULL;
            }
            for (Py_ssize_t k = 0; k < n; k++)
                PyTuple_SET_ITEM(out, k, Py_NewRef(PyTuple_GET_ITEM(obj, k)));
        }
        Py_SETREF(((PyTupleObject *)out)->ob_item[i], w);
    }
    return out != NULL ? out : Py_NewRef(obj);
}

/* The frame's size: head, pickle stream, and the bytes of every buffer
   that does not travel as a link. */
static size_t frame_size_of(const mcx_oob *out)
{
    size_t nbuf = out->buffers ? (size_t)PyList_GET_SIZE(out->buffers) : 0;
    size_t size = mcx_frame_head_size(nbuf) + (size_t)PyBytes_GET_SIZE(out->pickle);
    for (size_t i = 0; i < nbuf; i++) {
        if (out->buf_shared[i] >= 0)
            continue;
        const Py_buffer *view = PyPickleBuffer_GetBuffer(PyList_GET_ITEM(out->buffers, i));
        assert(view != NULL);   /* plan_buffers() read every one */
        size = mcx_frame_align(size) + (size_t)view->len;
    }
    return size;
}

/* The index of hold among the frame's linked buffers, adding it (with its
   SharedMemory object, or NULL) if it is new; -1 beyond max_links. */
static int link_index(mcx_oob *out, const mc_hold *hold, PyObject *owner, int max_links)
{
    int k = 0;
    while (k < out->nshared && out->holds[k] != hold)
        k++;
    if (k == out->nshared) {
        if (k >= max_links)
            return -1;
        out->holds[k] = hold;
        out->shared[k] = Py_XNewRef(owner);
        out->nshared++;
    }
    return k;
}

/* Decide, for each collected buffer, whether it travels as a link (it lies
   in a shared buffer of the destination pool) or as bytes; size the frame. */
static int plan_buffers(mcx_oob *out, const void *tag)
{
    size_t nbuf = out->buffers ? (size_t)PyList_GET_SIZE(out->buffers) : 0;
    if (nbuf > 0) {
        out->buf_shared = PyMem_Malloc(nbuf);
        out->buf_offset = PyMem_Malloc(nbuf * sizeof *out->buf_offset);
        if (out->buf_shared == NULL || out->buf_offset == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (size_t i = 0; i < nbuf; i++) {
        const Py_buffer *view = PyPickleBuffer_GetBuffer(PyList_GET_ITEM(out->buffers, i));
        if (view == NULL)
            return -1;
        mcx_shm *owner = NULL;
        if (tag != NULL && PyBuffer_IsContiguous(view, 'C'))
            owner = mcx_shm_owner(view);
        out->buf_shared[i] = -1;
        if (owner != NULL && owner->tag == tag) {
            int k = link_index(out, owner->hold, (PyObject *)owner, MC_SHARE_MAX);
            if (k < 0) {
                PyErr_Format(PyExc_ValueError,
                             "a task can pass at most %d shared buffers (multicore.shared) "
                             "each way; this one uses more",
                             MC_SHARE_MAX);
                return -1;
            }
            out->buf_shared[i] = (signed char)k;
            out->buf_offset[i] = (size_t)((const char *)view->buf - owner->base);
        }
    }
    out->frame_size = frame_size_of(out);
    return 0;
}

int mcx_oob_move(mcx_oob *out, int max_links)
{
    size_t nbuf = out->buffers ? (size_t)PyList_GET_SIZE(out->buffers) : 0;
    int moved = 0;
    /* Every view first: frame_size_of() reads them all, and code the
       caller's drop of the result ran may have released one. */
    for (size_t i = 0; i < nbuf; i++) {
        if (PyPickleBuffer_GetBuffer(PyList_GET_ITEM(out->buffers, i)) == NULL)
            return -1;
    }
    for (size_t i = 0; i < nbuf; i++) {
        if (out->buf_shared[i] >= 0)
            continue;
        PyObject *pb = PyList_GET_ITEM(out->buffers, i);
        const Py_buffer *view = PyPickleBuffer_GetBuffer(pb);
        size_t off = 0;
        /* the PickleBuffer too must be ours alone (the list's reference):
           one the task kept would reach the array through its view */
        const mc_hold *hold = Py_REFCNT(pb) == 1 ? mcx_np_movable(view, &off) : NULL;
        int k = hold ? link_index(out, hold, NULL, max_links) : -1;
        if (k < 0)
            continue;   /* copied, as any buffer */
        out->buf_shared[i] = (signed char)k;
        out->buf_offset[i] = off;
        moved = 1;
    }
    if (moved)
        out->frame_size = frame_size_of(out);
    return 0;
}

/* ---------------------------------------------------------------------
 * Compact frames: small atoms without pickle (layout in frame.h)
 * --------------------------------------------------------------------- */

/* 1 and *a set if obj is an atom a compact frame carries, else 0 (never
   an exception). Exact types only: a subclass may pickle differently. */
static int as_atom(PyObject *obj, mcx_atom *a)
{
    a->data = NULL;
    a->len = 0;
    if (obj == Py_None) {
        a->type = MCX_ATOM_NONE;
    } else if (obj == Py_True) {
        a->type = MCX_ATOM_TRUE;
    } else if (obj == Py_False) {
        a->type = MCX_ATOM_FALSE;
    } else if (PyLong_CheckExact(obj)) {
        int overflow = 0;
        long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (overflow != 0 || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;   /* beyond 64 bits: pickled */
        }
        a->type = MCX_ATOM_INT;
        a->i = (int64_t)v;
    } else if (PyFloat_CheckExact(obj)) {
        a->type = MCX_ATOM_FLOAT;
        a->f = PyFloat_AS_DOUBLE(obj);
    } else if (PyUnicode_CheckExact(obj)) {
        if (PyUnicode_GET_LENGTH(obj) > (Py_ssize_t)MCX_COMPACT_MAX)
            return 0;
        Py_ssize_t n;
        const char *utf8 = PyUnicode_AsUTF8AndSize(obj, &n);
        if (utf8 == NULL) {
            PyErr_Clear();   /* lone surrogates: pickled */
            return 0;
        }
        a->type = MCX_ATOM_STR;
        a->data = utf8;
        a->len = (size_t)n;
    } else if (PyBytes_CheckExact(obj)) {
        if (PyBytes_GET_SIZE(obj) > (Py_ssize_t)MCX_COMPACT_MAX)
            return 0;
        a->type = MCX_ATOM_BYTES;
        a->data = PyBytes_AS_STRING(obj);
        a->len = (size_t)PyBytes_GET_SIZE(obj);
    } else {
        return 0;
    }
    return 1;
}

/* Write obj (is_call: an (args, kwargs) pair) as a compact frame into
   out->compact: 1 if it is one, 0 if it must be pickled. */
static int compact_encode(PyObject *obj, int is_call, mcx_oob *out)
{
    mcx_compact_writer w;
    mcx_atom a;
    if (is_call) {
        PyObject *args = PyTuple_GET_ITEM(obj, 0), *kwargs = PyTuple_GET_ITEM(obj, 1);
        Py_ssize_t n = PyTuple_GET_SIZE(args);
        if (PyDict_GET_SIZE(kwargs) != 0 || n > (Py_ssize_t)MCX_COMPACT_MAX_ITEMS)
            return 0;
        mcx_compact_begin(&w, out->compact, MCX_COMPACT_CALL);
        for (Py_ssize_t i = 0; i < n; i++)
            if (!as_atom(PyTuple_GET_ITEM(args, i), &a) || mcx_compact_put(&w, &a) < 0)
                return 0;
    } else {
        mcx_compact_begin(&w, out->compact, MCX_COMPACT_VALUE);
        if (!as_atom(obj, &a) || mcx_compact_put(&w, &a) < 0)
            return 0;
    }
    out->compact_len = mcx_compact_end(&w);
    out->frame_size = out->compact_len;
    return 1;
}

int mcx_compact_objects(const mcx_compact *c, PyObject **out)
{
    for (size_t k = 0; k < c->n; k++) {
        const mcx_atom *a = &c->item[k];
        PyObject *o;
        switch (a->type) {
        case MCX_ATOM_NONE:
            o = Py_NewRef(Py_None);
            break;
        case MCX_ATOM_FALSE:
            o = Py_NewRef(Py_False);
            break;
        case MCX_ATOM_TRUE:
            o = Py_NewRef(Py_True);
            break;
        case MCX_ATOM_INT:
            o = PyLong_FromLongLong((long long)a->i);
            break;
        case MCX_ATOM_FLOAT:
            o = PyFloat_FromDouble(a->f);
            break;
        case MCX_ATOM_STR:
            o = PyUnicode_DecodeUTF8(a->data, (Py_ssize_t)a->len, "strict");
            break;
        default:   /* MCX_ATOM_BYTES: the parser admits nothing else */
            o = PyBytes_FromStringAndSize(a->data, (Py_ssize_t)a->len);
            break;
        }
        if (o == NULL) {
            for (size_t j = 0; j < k; j++)
                Py_DECREF(out[j]);
            return -1;
        }
        out[k] = o;
    }
    return 0;
}

/* The object of a compact frame: the atom, or an (args, {}) pair. */
static PyObject *compact_loads(const void *frame, size_t len)
{
    mcx_compact c;
    if (mcx_compact_parse(frame, len, &c) < 0) {
        PyErr_SetString(PyExc_ValueError, "malformed compact frame");
        return NULL;
    }
    PyObject *items[MCX_COMPACT_MAX_ITEMS];
    if (mcx_compact_objects(&c, items) < 0)
        return NULL;
    if (c.kind == MCX_COMPACT_VALUE)
        return items[0];
    PyObject *args = PyTuple_New((Py_ssize_t)c.n);
    if (args == NULL) {
        for (size_t k = 0; k < c.n; k++)
            Py_DECREF(items[k]);
        return NULL;
    }
    for (size_t k = 0; k < c.n; k++)
        PyTuple_SET_ITEM(args, (Py_ssize_t)k, items[k]);
    PyObject *kwargs = PyDict_New();
    PyObject *pair = kwargs ? PyTuple_Pack(2, args, kwargs) : NULL;
    Py_DECREF(args);
    Py_XDECREF(kwargs);
    return pair;
}

/* Pickle obj for a frame: mcx_oob.frame_size tells how much shared memory
   mcx_oob_write() needs. is_call: obj is a run()'s (args, kwargs) pair.
   tag names the destination pool (NULL: link nothing). With dill there
   are no out-of-band buffers. */
int mcx_oob_encode(PyObject *obj, int is_call, int use_dill, const void *tag, mcx_oob *out)
{
    memset(out, 0, offsetof(mcx_oob, compact));
    if (!use_dill && compact_encode(obj, is_call, out))
        return 0;
    if (use_dill) {
        out->pickle = mcx_dumps(obj, 1);
        if (out->pickle == NULL)
            return -1;
    } else {
        PyObject *list = PyList_New(0);
        if (list == NULL)
            return -1;
        PyObject *callback = PyCFunction_New(&collect_buffer_def, list);
        if (callback == NULL) {
            Py_DECREF(list);
            return -1;
        }
        PyObject *wrapped = is_call ? wrap_call(obj) : wrap_result(obj);
        PyObject *kwargs = wrapped ? Py_BuildValue("{s:O}", "buffer_callback", callback) : NULL;
        PyObject *args = kwargs ? PyTuple_Pack(2, wrapped, mcx.protocol) : NULL;
        Py_XDECREF(wrapped);
        out->pickle = args ? PyObject_Call(mcx.pickle_dumps, args, kwargs) : NULL;
        Py_XDECREF(args);
        Py_XDECREF(kwargs);
        Py_DECREF(callback);
        if (out->pickle == NULL || !PyBytes_Check(out->pickle)) {
            if (out->pickle != NULL)
                PyErr_SetString(PyExc_TypeError, "pickler did not return bytes");
            Py_CLEAR(out->pickle);
            Py_DECREF(list);
            return -1;
        }
        if (PyList_GET_SIZE(list) > 0)
            out->buffers = list;
        else
            Py_DECREF(list);
    }
    if (plan_buffers(out, tag) < 0) {
        mcx_oob_release(out);
        return -1;
    }
    return 0;
}

/* Write the frame at dst (64-byte aligned, frame_size bytes), linking the
   shared buffers to the task or result through share(). */
int mcx_oob_write(const mcx_oob *src, void *dst, mcx_share_fn share, void *share_arg)
{
    unsigned links[MC_SHARE_MAX];
    if (src->compact_len > 0) {
        memcpy(dst, src->compact, src->compact_len);
        return 0;
    }
    for (int k = 0; k < src->nshared; k++) {
        int rc = share ? share(share_arg, src->holds[k], &links[k]) : MC_EINVAL;
        if (rc != MC_OK) {
            mcx_raise_share(rc);
            return -1;
        }
    }
    unsigned char *p = dst;
    size_t pickle_len = (size_t)PyBytes_GET_SIZE(src->pickle);
    size_t nbuf = src->buffers ? (size_t)PyList_GET_SIZE(src->buffers) : 0;
    mcx_frame_write_head(p, pickle_len, nbuf);
    size_t at = mcx_frame_head_size(nbuf);
    memcpy(p + at, PyBytes_AS_STRING(src->pickle), pickle_len);
    at += pickle_len;
    for (size_t i = 0; i < nbuf; i++) {
        const Py_buffer *view = PyPickleBuffer_GetBuffer(PyList_GET_ITEM(src->buffers, i));
        if (view == NULL)
            return -1;
        size_t n = (size_t)view->len;
        if (src->buf_shared[i] >= 0) {
            mcx_frame_set_buffer(p, i, mcx_frame_link_entry(links[src->buf_shared[i]], src->buf_offset[i]),
                                 n);
            continue;
        }
        at = mcx_frame_align(at);
        mcx_frame_set_buffer(p, i, at, n);
        if (PyBuffer_IsContiguous(view, 'C')) {
            if ((size_t)view->len >= MCX_BIG_COPY) {
                /* the PickleBuffer holds the exporter: safe without the GIL */
                Py_BEGIN_ALLOW_THREADS
                memcpy(p + at, view->buf, (size_t)view->len);
                Py_END_ALLOW_THREADS
            } else {
                memcpy(p + at, view->buf, (size_t)view->len);
            }
        } else if (PyBuffer_ToContiguous(p + at, view, view->len, 'C') < 0) {
            return -1;
        }
        at += n;
    }
    return 0;
}

void mcx_oob_release(mcx_oob *o)
{
    Py_CLEAR(o->pickle);
    Py_CLEAR(o->buffers);
    for (int k = 0; k < o->nshared; k++)
        Py_CLEAR(o->shared[k]);
    o->nshared = 0;
    PyMem_Free(o->buf_shared);
    PyMem_Free(o->buf_offset);
    o->buf_shared = NULL;
    o->buf_offset = NULL;
    o->frame_size = 0;
    o->compact_len = 0;
}

/* ---------------------------------------------------------------------
 * Decoding
 * --------------------------------------------------------------------- */

/* A memoryview of [off, off + n) of obj (no copy). */
static PyObject *slice_of(PyObject *whole, size_t off, size_t n)
{
    PyObject *start = PyLong_FromSize_t(off);
    PyObject *stop = start ? PyLong_FromSize_t(off + n) : NULL;
    PyObject *slice = stop ? PySlice_New(start, stop, NULL) : NULL;
    PyObject *item = slice ? PyObject_GetItem(whole, slice) : NULL;
    Py_XDECREF(slice);
    Py_XDECREF(stop);
    Py_XDECREF(start);
    return item;
}

/* The buffer a link entry names: a view of the linked shared buffer (one
   memoryview per link, made on first use, in views[]), or a copy when the
   receiver cannot hold it. */
static PyObject *linked_buffer(uint64_t entry, size_t n, mcx_link_fn resolve, void *arg,
                               const void *tag, PyObject **views)
{
    unsigned link;
    size_t off;
    if (mcx_frame_link_parse(entry, &link, &off) < 0 || resolve == NULL) {
        PyErr_SetString(PyExc_ValueError, "malformed out-of-band frame (bad link)");
        return NULL;
    }
    if (views[link] == NULL) {
        mc_hold *hold = NULL;
        const void *data = NULL;
        size_t len = 0;
        int rc = resolve(arg, link, &hold, &data, &len);
        if (rc != MC_OK)
            return mcx_raise_mc(rc, 0, "receiving a shared buffer");
        if (hold != NULL) {
            PyObject *shm = mcx_shared_buffer_new(hold, tag);
            views[link] = shm ? PyMemoryView_FromObject(shm) : NULL;
            Py_XDECREF(shm);   /* the memoryview keeps it */
        } else {
            /* a copy, at the worker's hold limit: still correct to read */
            PyObject *copy = PyByteArray_FromStringAndSize(data, (Py_ssize_t)len);
            views[link] = copy ? PyMemoryView_FromObject(copy) : NULL;
            Py_XDECREF(copy);   /* the memoryview keeps it */
        }
        if (views[link] == NULL)
            return NULL;
    }
    size_t have = (size_t)PyMemoryView_GET_BUFFER(views[link])->len;
    if (off > have || n > have - off) {
        PyErr_SetString(PyExc_ValueError, "malformed out-of-band frame (link range)");
        return NULL;
    }
    return slice_of(views[link], off, n);
}

/*
 * Load the object a frame carries. With out-of-band buffers, *hold must be
 * a hold on the memory the frame lives in (it is then owned by the
 * exporter, and *hold set to NULL); without one the buffers are copied.
 * Linked buffers come from resolve(); the SharedMemory objects made for
 * them get tag (the pool they can be linked to again).
 */
PyObject *mcx_oob_loads(const void *frame, size_t len, int use_dill, mc_hold **hold,
                        mcx_link_fn resolve, void *resolve_arg, const void *tag)
{
    if (mcx_compact_is(frame, len))
        return compact_loads(frame, len);
    mcx_frame f;
    if (mcx_frame_parse(frame, len, &f) < 0) {
        PyErr_SetString(PyExc_ValueError, "malformed out-of-band frame");
        return NULL;
    }
    if (f.nbuf == 0)
        return mcx_loads(f.pickle, f.pickle_len, use_dill);

    PyObject *buffers = PyList_New((Py_ssize_t)f.nbuf);
    if (buffers == NULL)
        return NULL;
    PyObject *whole = NULL, *views[MC_SHARE_MAX] = {NULL};
    PyObject *result = NULL;
    if (hold != NULL && *hold != NULL) {
        PyObject *shm = mcx_shm_new(*hold, (char *)frame, len, NULL);
        *hold = NULL;
        whole = shm ? PyMemoryView_FromObject(shm) : NULL;
        Py_XDECREF(shm);   /* the memoryview keeps it */
        if (whole == NULL)
            goto out;
    }
    for (size_t i = 0; i < f.nbuf; i++) {
        uint64_t off;
        size_t n;
        mcx_frame_buffer(&f, i, &off, &n);
        PyObject *item;
        if (off & MCX_FRAME_LINK)
            item = linked_buffer(off, n, resolve, resolve_arg, tag, views);
        else if (whole != NULL)
            item = slice_of(whole, (size_t)off, n);   /* no copy */
        else
            item = PyByteArray_FromStringAndSize((const char *)frame + off, (Py_ssize_t)n);
        if (item == NULL)
            goto out;
        PyList_SET_ITEM(buffers, (Py_ssize_t)i, item);
    }
    PyObject *view = PyMemoryView_FromMemory((char *)f.pickle, (Py_ssize_t)f.pickle_len, PyBUF_READ);
    if (view != NULL) {
        PyObject *args = PyTuple_Pack(1, view);
        PyObject *kwargs = args ? Py_BuildValue("{s:O}", "buffers", buffers) : NULL;
        if (kwargs != NULL)
            result = PyObject_Call(mcx.pickle_loads, args, kwargs);
        Py_XDECREF(args);
        Py_XDECREF(kwargs);
        PyObject *r = PyObject_CallMethod(view, "release", NULL);
        Py_XDECREF(r);
        if (r == NULL && result != NULL)
            PyErr_Clear();
        Py_DECREF(view);
    }
out:
    Py_DECREF(buffers);
    Py_XDECREF(whole);
    for (int k = 0; k < MC_SHARE_MAX; k++)
        Py_XDECREF(views[k]);
    return result;
}
