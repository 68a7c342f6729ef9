/*
 * shared.c — the type multicore.SharedMemory, and allocating shared buffers
 * from Python (multicore.shared).
 *
 * Owns: the SharedMemory object (mcx_shm, ext.h): memory of a pool's
 * shared region that exports the buffer protocol and owns an engine hold
 * (mc_hold), released when the object goes, that is when the last array or
 * view over it is gone. Two kinds exist: a shared buffer (tag: the pool it
 * may be linked to, passed to tasks by reference), and the memory of a
 * received frame (tag NULL: oob.c hands its out-of-band buffers to pickle
 * as views of it, and copies it when sent on). Also: finding the
 * SharedMemory object a buffer lies in (mcx_shm_owner, for oob.c's links),
 * and the two entry points that create a shared buffer: the module's
 * _shared_buffer(nbytes), which allocates from the process-wide pool in
 * the caller and from the worker's own pool inside a task, and
 * Pool._shared_buffer(nbytes) for an explicit multicore.Pool. numpy arrays
 * over a buffer are made by the Python glue (python/multicore/shared.py),
 * so this extension does not depend on numpy.
 */
#include "ext.h"

/* ---------------------------------------------------------------------
 * The type
 * --------------------------------------------------------------------- */

static int shm_getbuffer(mcx_shm *self, Py_buffer *view, int flags)
{
    if (PyBuffer_FillInfo(view, (PyObject *)self, self->base, self->len, 0, flags) < 0)
        return -1;
    self->exports++;
    return 0;
}

static void shm_releasebuffer(mcx_shm *self, Py_buffer *view)
{
    (void)view;
    self->exports--;
}

static void shm_dealloc(mcx_shm *self)
{
    /* A fork() child's copy is not ours to release (mc_hold_release checks
       the pid too); the engine call takes the region lock briefly. */
    if (self->hold != NULL)
        mc_hold_release(self->hold);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Sent as a memoryview of itself: a link when it is a shared buffer of the
   destination pool, else its bytes, out of band. */
static PyObject *shm_reduce_ex(mcx_shm *self, PyObject *protocol)
{
    (void)protocol;
    PyObject *buffer = PyPickleBuffer_FromObject((PyObject *)self);
    if (buffer == NULL)
        return NULL;
    return Py_BuildValue("(O(N))", mcx.as_memoryview, buffer);
}

static PyObject *shm_get_nbytes(mcx_shm *self, void *closure)
{
    (void)closure;
    return PyLong_FromSsize_t(self->len);
}

static PyObject *shm_get_shared(mcx_shm *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->tag != NULL);
}

static PyMethodDef shm_methods[] = {
    {"__reduce_ex__", (PyCFunction)shm_reduce_ex, METH_O, NULL},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef shm_getset[] = {
    {"nbytes", (getter)shm_get_nbytes, NULL, "size in bytes", NULL},
    {"shared", (getter)shm_get_shared, NULL,
     "True for a shared buffer (passed to tasks by reference), False for "
     "memory received from a task's frame (copied when sent on)", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

static PyBufferProcs shm_as_buffer = {
    .bf_getbuffer = (getbufferproc)shm_getbuffer,
    .bf_releasebuffer = (releasebufferproc)shm_releasebuffer,
};

PyTypeObject mcx_SharedMemoryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "multicore.SharedMemory",
    .tp_basicsize = sizeof(mcx_shm),
    .tp_dealloc = (destructor)shm_dealloc,
    .tp_as_buffer = &shm_as_buffer,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_methods = shm_methods,
    .tp_getset = shm_getset,
    .tp_doc = "Memory in the pool's shared region, kept alive by the arrays and "
              "views that use it: a shared buffer (multicore.shared), or memory "
              "received from another process of the pool.",
};

PyObject *mcx_shm_new(mc_hold *hold, char *base, size_t len, const void *tag)
{
    mcx_shm *shm = PyObject_New(mcx_shm, &mcx_SharedMemoryType);
    if (shm == NULL) {
        mc_hold_release(hold);
        return NULL;
    }
    shm->hold = hold;
    shm->base = base;
    shm->len = (Py_ssize_t)len;
    shm->exports = 0;
    shm->pid = mcx_getpid();
    shm->tag = tag;
    return (PyObject *)shm;
}

PyObject *mcx_shared_buffer_new(mc_hold *hold, const void *tag)
{
    size_t len = 0;
    char *data = mc_hold_data(hold, &len);
    if (data == NULL) {
        mc_hold_release(hold);
        PyErr_SetString(PyExc_SystemError, "not a shared buffer's hold");
        return NULL;
    }
    return mcx_shm_new(hold, data, len, tag);
}

/* ---------------------------------------------------------------------
 * Finding the shared buffer a buffer lies in
 * --------------------------------------------------------------------- */

/* The SharedMemory object a buffer's memory belongs to, if it is a shared
   buffer this process may link: found through the chain of owners (an
   array's base, a memoryview's exporter). Borrowed reference, or NULL. */
mcx_shm *mcx_shm_owner(const Py_buffer *view)
{
    PyObject *obj = view->obj, *owned = NULL;
    mcx_shm *found = NULL;
    for (int depth = 0; obj != NULL && obj != Py_None && depth < 16; depth++) {
        if (Py_IS_TYPE(obj, &mcx_SharedMemoryType)) {
            found = (mcx_shm *)obj;
            break;
        }
        PyObject *next;
        if (PyMemoryView_Check(obj)) {
            next = Py_XNewRef(PyMemoryView_GET_BUFFER(obj)->obj);
        } else if (PyBytes_CheckExact(obj) || PyByteArray_CheckExact(obj) || PyPickleBuffer_Check(obj)) {
            break;
        } else {
            next = PyObject_GetAttrString(obj, "base");   /* numpy arrays */
            if (next == NULL) {
                PyErr_Clear();
                break;
            }
        }
        Py_XSETREF(owned, next);
        obj = next;
    }
    /* The chain is kept alive by the view itself, so found stays valid. */
    Py_XDECREF(owned);
    if (found == NULL || found->tag == NULL || found->pid != mcx_getpid() ||
        (const char *)view->buf < found->base || view->len > found->len ||
        (const char *)view->buf - found->base > found->len - view->len)
        return NULL;
    return found;
}

/* ---------------------------------------------------------------------
 * Allocating a shared buffer
 * --------------------------------------------------------------------- */

/* A new shared buffer of ref's pool, or of this worker's pool (ref NULL). */
PyObject *mcx_shared_buffer_alloc(mcx_poolref *ref, PyObject *nbytes_obj)
{
    size_t nbytes;
    if (mcx_parse_nbytes(nbytes_obj, &nbytes) < 0)
        return NULL;
    mc_pool *pool = NULL;
    const void *tag = MCX_WORKER_TAG;
    if (ref != NULL) {
        if (!mcx_ref_alive(ref)) {
            PyErr_SetString(mcx.PoolNotRunningError, "this multicore.Pool is closed");
            return NULL;
        }
        pool = ref->pool;
        tag = pool;
    } else if (mc_worker_index() < 0) {
        if (!mcx_pool_alive()) {
            PyErr_SetString(mcx.PoolNotRunningError,
                            "multicore.shared: the multicore pool is not running "
                            "(call multicore.initialize() first)");
            return NULL;
        }
        pool = mcx.main.pool;
        tag = pool;
    }
    mc_hold *hold = NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS   /* pre-faulting a large buffer takes a while */
    rc = mc_buffer_alloc(pool, nbytes, &hold);
    Py_END_ALLOW_THREADS
    if (rc != MC_OK)
        return mcx_raise_buffer_alloc(rc, nbytes, pool == NULL);
    return mcx_shared_buffer_new(hold, tag);
}
