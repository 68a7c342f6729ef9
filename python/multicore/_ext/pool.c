/*
 * pool.c — explicit pools: the type multicore._multicore.PoolHandle, under
 * the Python class multicore.Pool.
 *
 * Owns: a pool of its own beside the process-wide one of initialize(),
 * with the same lifecycle code (mcx_ref_start / mcx_ref_stop in lifecycle.c)
 * applied to the mcx_poolref embedded in the object. Tasks made by
 * task() hold a strong reference to the handle, so the ref outlives them;
 * close() (or the handle's destruction) stops the pool, after which those
 * tasks answer PoolNotRunningError like the process-wide pool's do after
 * shutdown(). A handle inherited through fork() is not the child's: it is
 * never stopped there (mcx_ref_alive() compares the owner's pid).
 */
#include "ext.h"

typedef struct {
    PyObject_HEAD
    mcx_poolref ref;
} PoolHandleObject;

static PyObject *PoolHandle_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"workers", "worker_init", "worker_exit", "shared_memory",
                             "max_tasks_per_worker", NULL};
    PyObject *workers_obj = Py_None, *init_obj = Py_None, *exit_obj = Py_None;
    PyObject *shm_obj = Py_None, *max_obj = Py_None;
    int workers = 0;
    size_t region_size = 0;
    uint64_t max_tasks = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OOOOO:Pool", kwlist, &workers_obj,
                                     &init_obj, &exit_obj, &shm_obj, &max_obj))
        return NULL;
    if (mcx_parse_pool_args(workers_obj, init_obj, exit_obj, shm_obj, &workers,
                            &region_size) < 0)
        return NULL;
    if (mcx_parse_max_tasks(max_obj, &max_tasks) < 0)
        return NULL;
    PoolHandleObject *self = (PoolHandleObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->ref.max_tasks = max_tasks;
    if (mcx_ref_start(&self->ref, workers, region_size, init_obj, exit_obj) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void PoolHandle_dealloc(PoolHandleObject *self)
{
    PyObject_GC_UnTrack(self);
    if (mcx_ref_alive(&self->ref) && mcx_ref_stop(&self->ref) < 0)
        PyErr_WriteUnraisable((PyObject *)self);
    Py_CLEAR(self->ref.worker_init);
    Py_CLEAR(self->ref.worker_exit);
    PyMem_RawFree(self->ref.deferred);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int PoolHandle_traverse(PoolHandleObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->ref.worker_init);
    Py_VISIT(self->ref.worker_exit);
    return 0;
}

static PyObject *PoolHandle_task(PoolHandleObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"max_load_average", NULL};
    PyObject *limit_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:task", kwlist, &limit_obj))
        return NULL;
    double limit;
    if (mcx_parse_load_limit(limit_obj, &limit) < 0)
        return NULL;
    if (!mcx_ref_alive(&self->ref)) {
        PyErr_SetString(mcx.PoolNotRunningError, "this multicore.Pool is closed");
        return NULL;
    }
    return mcx_task_new(&self->ref, (PyObject *)self, limit);
}

static PyObject *PoolHandle_close(PoolHandleObject *self, PyObject *unused)
{
    (void)unused;
    if (mcx_ref_alive(&self->ref) && mcx_ref_stop(&self->ref) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *PoolHandle_stats(PoolHandleObject *self, PyObject *unused)
{
    (void)unused;
    return mcx_ref_stats(&self->ref);
}

static PyObject *PoolHandle_worker_pids(PoolHandleObject *self, PyObject *unused)
{
    (void)unused;
    return mcx_ref_worker_pids(&self->ref);
}

static PyObject *PoolHandle_shared_buffer(PoolHandleObject *self, PyObject *nbytes)
{
    return mcx_shared_buffer_alloc(&self->ref, nbytes);
}

static PyObject *PoolHandle_get_workers(PoolHandleObject *self, void *closure)
{
    (void)closure;
    return PyLong_FromLong(mcx_ref_alive(&self->ref) ? self->ref.workers : 0);
}

static PyObject *PoolHandle_get_running(PoolHandleObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(mcx_ref_alive(&self->ref));
}

static PyMethodDef PoolHandle_methods[] = {
    {"task", (PyCFunction)(void (*)(void))PoolHandle_task, METH_VARARGS | METH_KEYWORDS,
     "task(max_load_average=None)\n--\n\nA Task of this pool (None past the load limit)."},
    {"close", (PyCFunction)PoolHandle_close, METH_NOARGS,
     "close()\n--\n\nStop this pool and reap its processes (harmless twice)."},
    {"stats", (PyCFunction)PoolHandle_stats, METH_NOARGS,
     "stats()\n--\n\nThis pool's counters, as multicore.stats() gives them."},
    {"_shared_buffer", (PyCFunction)PoolHandle_shared_buffer, METH_O,
     "_shared_buffer(nbytes)\n--\n\nA SharedMemory buffer of this pool (see multicore.shared)."},
    {"_worker_pids", (PyCFunction)PoolHandle_worker_pids, METH_NOARGS,
     "_worker_pids()\n--\n\nThis pool's live workers (for tests)."},
    {NULL, NULL, 0, NULL}
};

static PyGetSetDef PoolHandle_getset[] = {
    {"workers", (getter)PoolHandle_get_workers, NULL, "number of workers (0 once closed)", NULL},
    {"running", (getter)PoolHandle_get_running, NULL, "True until close()", NULL},
    {NULL, NULL, NULL, NULL, NULL}
};

PyTypeObject mcx_PoolHandleType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "multicore._multicore.PoolHandle",
    .tp_basicsize = sizeof(PoolHandleObject),
    .tp_dealloc = (destructor)PoolHandle_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "PoolHandle(workers=None, worker_init=None, worker_exit=None, "
              "shared_memory=None, max_tasks_per_worker=None)\n--\n\n"
              "A pool of worker processes of its own (see multicore.Pool).",
    .tp_traverse = (traverseproc)PoolHandle_traverse,
    .tp_methods = PoolHandle_methods,
    .tp_getset = PoolHandle_getset,
    .tp_new = PoolHandle_new,
};
