/*
 * oob.c — pickle protocol 5 with out-of-band buffers through shared memory.
 *
 * Owns: the frame that carries a pickled object whose large buffers (numpy
 * arrays and anything else pickled through PickleBuffer, from MCX_OOB_MIN
 * bytes up) are stored beside the pickle stream instead of inside it; writing a frame
 * straight into shared memory (each buffer copied exactly once, with the
 * GIL released for big copies); reading one back with each buffer handed to
 * pickle as a view of the shared memory itself (no copy: a numpy array that
 * comes back IS shared memory); and the SharedMemory exporter type those
 * views come from, which owns an engine hold (mc_hold) on the task record
 * and releases it when the last view is gone.
 *
 * Frame layout (native-endian; the frame starts 64-byte aligned):
 *
 *   0   u64  pickle_len
 *   8   u64  nbuf
 *   16  nbuf x {u64 offset, u64 length}   offsets from the frame start
 *   ..  pickle stream (pickle_len bytes)
 *   ..  each buffer at a 64-byte aligned offset
 *
 * mcx_frame_parse() validates every offset and length against the frame's
 * size before anything is read through them: a frame crosses processes.
 */
#include "ext.h"

#include <string.h>
#include <unistd.h>

#define MCX_FRAME_ALIGN 64u
#define ALIGN_UP(x) (((x) + (MCX_FRAME_ALIGN - 1)) & ~(size_t)(MCX_FRAME_ALIGN - 1))

/* ---------------------------------------------------------------------
 * Frame parsing (pure C: also built into the fuzz harness)
 * --------------------------------------------------------------------- */

int mcx_frame_parse(const void *data, size_t len, mcx_frame *out)
{
    const unsigned char *p = data;
    uint64_t pickle_len, nbuf;
    if (data == NULL || len < 16)
        return -1;
    memcpy(&pickle_len, p, 8);
    memcpy(&nbuf, p + 8, 8);
    if (nbuf > (len - 16) / 16)
        return -1;
    size_t table_end = 16 + (size_t)nbuf * 16;
    if (pickle_len > len - table_end)
        return -1;
    for (uint64_t i = 0; i < nbuf; i++) {
        uint64_t off, n;
        memcpy(&off, p + 16 + i * 16, 8);
        memcpy(&n, p + 24 + i * 16, 8);
        if (off < table_end + pickle_len || off > len || n > len - off)
            return -1;
    }
    out->pickle = (const char *)p + table_end;
    out->pickle_len = (size_t)pickle_len;
    out->nbuf = (size_t)nbuf;
    out->table = p + 16;
    return 0;
}

void mcx_frame_buffer(const mcx_frame *f, size_t i, size_t *off, size_t *len)
{
    uint64_t o, n;
    memcpy(&o, f->table + i * 16, 8);
    memcpy(&n, f->table + i * 16 + 8, 8);
    *off = (size_t)o;
    *len = (size_t)n;
}

/* ---------------------------------------------------------------------
 * Encoding
 * --------------------------------------------------------------------- */

/* buffer_callback: small buffers stay in the stream (True), large ones go
   out of band (False) and are collected in the list bound as self. */
static PyObject *collect_buffer(PyObject *list, PyObject *picklebuffer)
{
    Py_buffer view;
    if (PyObject_GetBuffer(picklebuffer, &view, PyBUF_FULL_RO) < 0)
        return NULL;
    Py_ssize_t n = view.len;
    PyBuffer_Release(&view);
    if (n < MCX_OOB_MIN)
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

/* obj itself, or a _BytesLike around it when it is a large bytes,
   bytearray or C-contiguous memoryview. New reference. */
static PyObject *wrap_large(PyObject *obj)
{
    Py_ssize_t n = -1;
    if (PyBytes_CheckExact(obj))
        n = PyBytes_GET_SIZE(obj);
    else if (PyByteArray_CheckExact(obj))
        n = PyByteArray_GET_SIZE(obj);
    else if (PyMemoryView_Check(obj) && PyBuffer_IsContiguous(PyMemoryView_GET_BUFFER(obj), 'C'))
        n = PyMemoryView_GET_BUFFER(obj)->len;
    if (n < MCX_OOB_MIN)
        return Py_NewRef(obj);
    BytesLikeObject *w = PyObject_New(BytesLikeObject, &mcx_BytesLikeType);
    if (w == NULL)
        return NULL;
    w->obj = Py_NewRef(obj);
    return (PyObject *)w;
}

/* A call's (args, kwargs) pair with large bytes-likes wrapped, or the
   pair itself when there is none. New reference. */
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
        PyObject *item = wrap_large(PyTuple_GET_ITEM(args, i));
        if (item == NULL)
            goto fail;
        changed |= item != PyTuple_GET_ITEM(args, i);
        PyTuple_SET_ITEM(new_args, i, item);
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(kwargs, &pos, &key, &value)) {
        PyObject *item = wrap_large(value);
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

/* Pickle obj for a frame: mcx_oob.frame_size tells how much shared memory
   mcx_oob_write() needs. is_call: obj is a run()'s (args, kwargs) pair.
   With dill there are no out-of-band buffers. */
int mcx_oob_encode(PyObject *obj, int is_call, int use_dill, mcx_oob *out)
{
    memset(out, 0, sizeof *out);
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
        PyObject *wrapped = is_call ? wrap_call(obj) : wrap_large(obj);
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
    size_t nbuf = out->buffers ? (size_t)PyList_GET_SIZE(out->buffers) : 0;
    size_t size = 16 + nbuf * 16 + (size_t)PyBytes_GET_SIZE(out->pickle);
    for (size_t i = 0; i < nbuf; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(out->buffers, i), &view, PyBUF_FULL_RO) < 0) {
            mcx_oob_release(out);
            return -1;
        }
        size = ALIGN_UP(size) + (size_t)view.len;
        PyBuffer_Release(&view);
    }
    out->frame_size = size;
    return 0;
}

/* Write the frame at dst (64-byte aligned, frame_size bytes). */
int mcx_oob_write(const mcx_oob *src, void *dst)
{
    unsigned char *p = dst;
    uint64_t pickle_len = (uint64_t)PyBytes_GET_SIZE(src->pickle);
    uint64_t nbuf = src->buffers ? (uint64_t)PyList_GET_SIZE(src->buffers) : 0;
    memcpy(p, &pickle_len, 8);
    memcpy(p + 8, &nbuf, 8);
    size_t at = 16 + (size_t)nbuf * 16;
    memcpy(p + at, PyBytes_AS_STRING(src->pickle), (size_t)pickle_len);
    at += (size_t)pickle_len;
    for (uint64_t i = 0; i < nbuf; i++) {
        Py_buffer view;
        if (PyObject_GetBuffer(PyList_GET_ITEM(src->buffers, i), &view, PyBUF_FULL_RO) < 0)
            return -1;
        at = ALIGN_UP(at);
        uint64_t off = at, n = (uint64_t)view.len;
        memcpy(p + 16 + i * 16, &off, 8);
        memcpy(p + 24 + i * 16, &n, 8);
        int rc = 0;
        if (PyBuffer_IsContiguous(&view, 'C')) {
            if ((size_t)view.len >= MCX_BIG_COPY) {
                /* the exporter is held by the view: safe without the GIL */
                Py_BEGIN_ALLOW_THREADS
                memcpy(p + at, view.buf, (size_t)view.len);
                Py_END_ALLOW_THREADS
            } else {
                memcpy(p + at, view.buf, (size_t)view.len);
            }
        } else {
            rc = PyBuffer_ToContiguous(p + at, &view, view.len, 'C');
        }
        PyBuffer_Release(&view);
        if (rc < 0)
            return -1;
        at += (size_t)n;
    }
    return 0;
}

void mcx_oob_release(mcx_oob *o)
{
    Py_CLEAR(o->pickle);
    Py_CLEAR(o->buffers);
    o->frame_size = 0;
}

/* ---------------------------------------------------------------------
 * The exporter: shared memory kept alive by an engine hold
 * --------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    mc_hold *hold;       /* released with the last reference */
    char *base;
    Py_ssize_t len;
    Py_ssize_t exports;
    pid_t pid;
} SharedMemoryObject;

static int shm_getbuffer(SharedMemoryObject *self, Py_buffer *view, int flags)
{
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->base, self->len, 0, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void shm_releasebuffer(SharedMemoryObject *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static void shm_dealloc(SharedMemoryObject *self)
{
    /* A fork() child's copy is not ours to release (mc_hold_release checks
       the pid too); the engine call takes the region lock briefly. */
    if (self->hold != NULL)
        mc_hold_release(self->hold);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyBufferProcs shm_as_buffer = {
    .bf_getbuffer = (getbufferproc)shm_getbuffer,
    .bf_releasebuffer = (releasebufferproc)shm_releasebuffer,
};

PyTypeObject mcx_SharedMemoryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "multicore.SharedMemory",
    .tp_basicsize = sizeof(SharedMemoryObject),
    .tp_dealloc = (destructor)shm_dealloc,
    .tp_as_buffer = &shm_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Shared memory received from another process of the pool; "
              "the arrays and views that use it keep it alive.",
};

/* ---------------------------------------------------------------------
 * Decoding
 * --------------------------------------------------------------------- */

/*
 * Load the object a frame carries. With out-of-band buffers, *hold must be
 * a hold on the memory the frame lives in (it is then owned by the
 * exporter, and *hold set to NULL); without one the buffers are copied.
 */
PyObject *mcx_oob_loads(const void *frame, size_t len, int use_dill, mc_hold **hold)
{
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
    PyObject *whole = NULL;
    if (hold != NULL && *hold != NULL) {
        SharedMemoryObject *shm = PyObject_New(SharedMemoryObject, &mcx_SharedMemoryType);
        if (shm == NULL) {
            Py_DECREF(buffers);
            return NULL;
        }
        shm->hold = *hold;
        *hold = NULL;
        shm->base = (char *)frame;
        shm->len = (Py_ssize_t)len;
        shm->exports = 0;
        shm->pid = mcx_getpid();
        whole = PyMemoryView_FromObject((PyObject *)shm);
        Py_DECREF(shm);   /* the memoryview keeps it */
        if (whole == NULL) {
            Py_DECREF(buffers);
            return NULL;
        }
    }
    for (size_t i = 0; i < f.nbuf; i++) {
        size_t off, n;
        mcx_frame_buffer(&f, i, &off, &n);
        PyObject *item;
        if (whole != NULL) {
            /* a slice of the shared memory: no copy */
            PyObject *start = PyLong_FromSize_t(off);
            PyObject *stop = start ? PyLong_FromSize_t(off + n) : NULL;
            PyObject *slice = stop ? PySlice_New(start, stop, NULL) : NULL;
            item = slice ? PyObject_GetItem(whole, slice) : NULL;
            Py_XDECREF(slice);
            Py_XDECREF(stop);
            Py_XDECREF(start);
        } else {
            item = PyByteArray_FromStringAndSize((const char *)frame + off, (Py_ssize_t)n);
        }
        if (item == NULL) {
            Py_DECREF(buffers);
            Py_XDECREF(whole);
            return NULL;
        }
        PyList_SET_ITEM(buffers, (Py_ssize_t)i, item);
    }
    PyObject *view = PyMemoryView_FromMemory((char *)f.pickle, (Py_ssize_t)f.pickle_len, PyBUF_READ);
    PyObject *result = NULL;
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
    Py_DECREF(buffers);
    Py_XDECREF(whole);
    return result;
}
