/*
 * shared.c — allocating shared buffers from Python (multicore.shared).
 *
 * Owns the two entry points that create a shared buffer: the module's
 * _shared_buffer(nbytes), which allocates from the process-wide pool in
 * the caller and from the worker's own pool inside a task, and
 * Pool._shared_buffer(nbytes) for an explicit multicore.Pool. The buffer
 * is a SharedMemory object (oob.c) owning the engine hold; numpy arrays
 * over it are made by the Python glue (python/multicore/shared.py), so
 * this extension does not depend on numpy.
 */
#include "ext.h"

static int parse_nbytes(PyObject *obj, size_t *out)
{
    Py_ssize_t n = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (n == -1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Format(PyExc_TypeError, "nbytes must be an integer, not %.100s",
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    if (n < 0) {
        PyErr_Format(PyExc_ValueError, "nbytes must be >= 0, not %zd", n);
        return -1;
    }
    *out = (size_t)n;
    return 0;
}

/* A new shared buffer of ref's pool, or of this worker's pool (ref NULL). */
PyObject *mcx_shared_buffer_alloc(mcx_poolref *ref, PyObject *nbytes_obj)
{
    size_t nbytes;
    if (parse_nbytes(nbytes_obj, &nbytes) < 0)
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
    if (rc == MC_ENOMEM && pool == NULL) {
        PyErr_Format(PyExc_MemoryError,
                     "multicore.shared: no room for %zu bytes in shared memory, or this "
                     "worker already holds %d shared buffers and views",
                     nbytes, MC_WORKER_HOLDS);
        return NULL;
    }
    if (rc != MC_OK)
        return mcx_raise_mc(rc, 0, "multicore.shared");
    return mcx_shared_buffer_new(hold, tag);
}
