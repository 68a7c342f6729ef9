/*
 * module.c — the module multicore._multicore.
 *
 * Owns: the module state (mcx) and module init; initialize() / shutdown()
 * of the process-wide pool mcx.main (the work is lifecycle.c's);
 * ranges(), number_of_workers(), is_running(), worker_id(), worker_state(),
 * stats(), and two introspection helpers for tests (_worker_pids,
 * _zygote_pid).
 */
#include "ext.h"

mcx_state mcx;
_Thread_local long mcx_tls_inflight;

int mcx_number_of_workers(void)
{
    return mcx_pool_alive() ? mcx.main.workers : mc_online_cpus();
}

/* ---------------------------------------------------------------------
 * initialize / shutdown
 * --------------------------------------------------------------------- */

PyDoc_STRVAR(initialize_doc,
"initialize(workers=None, worker_init=None, worker_exit=None,\n"
"           shared_memory=None)\n"
"--\n\n"
"Start the process-wide pool of worker processes (once; calling it again\n"
"while it runs does nothing). workers defaults to the number of online\n"
"CPUs. worker_init, a callable, runs once in every worker before its\n"
"first task; if it raises, WorkerInitError carries its traceback.\n"
"worker_exit, a callable, runs in every worker when it leaves at\n"
"shutdown() (to close that connection); its exceptions are printed.\n"
"shared_memory, in bytes, caps the arguments and results in flight\n"
"together (default: twice the RAM, reserved, committed only when used);\n"
"beyond it run() and get() raise MemoryError.\n"
"Functions and globals defined before this call are visible to the\n"
"workers.");

static PyObject *mod_initialize(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"workers", "worker_init", "worker_exit", "shared_memory", NULL};
    PyObject *workers_obj = Py_None, *init_obj = Py_None, *exit_obj = Py_None;
    PyObject *shm_obj = Py_None;
    size_t region_size = 0;
    int workers = 0;
    (void)module;

    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OOOO:initialize", kwlist,
                                     &workers_obj, &init_obj, &exit_obj, &shm_obj))
        return NULL;
    if (mcx_parse_pool_args(workers_obj, init_obj, exit_obj, shm_obj, &workers,
                            &region_size) < 0)
        return NULL;
    if (mcx_ref_start(&mcx.main, workers, region_size, init_obj, exit_obj) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(shutdown_doc,
"shutdown()\n"
"--\n\n"
"Stop the pool: queued tasks are cancelled, every worker exits and is\n"
"reaped. Harmless when the pool is not running; initialize() may be\n"
"called again afterwards.");

static PyObject *mod_shutdown(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (mcx_ref_stop(&mcx.main) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------
 * ranges, number_of_workers, introspection
 * --------------------------------------------------------------------- */

PyDoc_STRVAR(ranges_doc,
"ranges(iterable, min_range_size=0, number_of_workers=None)\n"
"--\n\n"
"Split range(len(iterable)) into consecutive (start, end) pairs, one per\n"
"worker, each at least min_range_size long (the last may be shorter).\n"
"number_of_workers defaults to multicore.NUMBER_OF_WORKERS. Returns an\n"
"iterator. multicore.utils.ranges() is this, with a Django QuerySet\n"
"counted by .count() instead of len().");

static PyObject *mod_ranges(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"iterable", "min_range_size", "number_of_workers", NULL};
    PyObject *iterable, *min_obj = NULL, *workers_obj = Py_None;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO:ranges", kwlist,
                                     &iterable, &min_obj, &workers_obj))
        return NULL;
    Py_ssize_t min_size = 0;
    if (min_obj != NULL && min_obj != Py_None) {
        min_size = mcx_parse_int_min(min_obj, "min_range_size", 0);
        if (min_size < 0)
            return NULL;
    }
    Py_ssize_t workers;
    if (workers_obj == Py_None) {
        workers = mcx_number_of_workers();
    } else {
        workers = mcx_parse_int_min(workers_obj, "number_of_workers", 1);
        if (workers < 0)
            return NULL;
        if (workers > 1 << 20)
            workers = 1 << 20;
    }
    Py_ssize_t count = PyObject_Length(iterable);
    if (count < 0)
        return NULL;

    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    size_t step = mc_range_step((size_t)count, (size_t)min_size, (int)workers);
    if (count > 0 && step == 0) {
        Py_DECREF(list);
        PyErr_SetString(PyExc_SystemError, "mc_range_step returned 0");
        return NULL;
    }
    for (size_t start = 0; start < (size_t)count; start += step) {
        size_t end = start + step;
        if (end > (size_t)count || end < start)
            end = (size_t)count;
        PyObject *pair = Py_BuildValue("(nn)", (Py_ssize_t)start, (Py_ssize_t)end);
        if (pair == NULL || PyList_Append(list, pair) < 0) {
            Py_XDECREF(pair);
            Py_DECREF(list);
            return NULL;
        }
        Py_DECREF(pair);
        if (end == (size_t)count)
            break;
    }
    PyObject *it = PyObject_GetIter(list);
    Py_DECREF(list);
    return it;
}

PyDoc_STRVAR(number_of_workers_doc,
"number_of_workers()\n"
"--\n\n"
"The running pool's worker count, else the number of online CPUs.");

static PyObject *mod_number_of_workers(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyLong_FromLong(mcx_number_of_workers());
}

PyDoc_STRVAR(is_running_doc,
"is_running()\n"
"--\n\n"
"True while the process-wide pool of initialize() runs in this process:\n"
"False before initialize() and after shutdown(), in a process forked\n"
"from the caller (os.fork()) and in a worker. A multicore.Pool is not\n"
"the process-wide pool (see its running attribute).");

static PyObject *mod_is_running(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return PyBool_FromLong(mcx_pool_alive());
}

PyDoc_STRVAR(worker_pids_doc,
"_worker_pids()\n"
"--\n\n"
"Process ids of the running pool's live workers (for tests).");

PyObject *mcx_ref_worker_pids(mcx_poolref *ref)
{
    if (!mcx_ref_alive(ref))
        return PyList_New(0);
    int max = ref->workers > 0 ? ref->workers : 1;
    pid_t *pids = PyMem_Malloc((size_t)max * sizeof *pids);
    if (pids == NULL)
        return PyErr_NoMemory();
    int n = mc_pool_worker_pids(ref->pool, pids, max);
    PyObject *list = PyList_New(0);
    for (int i = 0; list != NULL && i < n; i++) {
        PyObject *v = PyLong_FromLong((long)pids[i]);
        if (v == NULL || PyList_Append(list, v) < 0)
            Py_CLEAR(list);
        Py_XDECREF(v);
    }
    PyMem_Free(pids);
    return list;
}

static PyObject *mod_worker_pids(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return mcx_ref_worker_pids(&mcx.main);
}

PyDoc_STRVAR(zygote_pid_doc,
"_zygote_pid()\n"
"--\n\n"
"Process id of the running pool's zygote, or None (for tests).");

static PyObject *mod_zygote_pid(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (!mcx_pool_alive())
        Py_RETURN_NONE;
    return PyLong_FromLong((long)mc_pool_zygote_pid(mcx.main.pool));
}

PyDoc_STRVAR(worker_id_doc,
"worker_id()\n"
"--\n\n"
"In a worker, its index in the pool (0 to workers - 1; a replacement\n"
"worker takes the index of the one it replaces). None outside a worker.");

static PyObject *mod_worker_id(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    int index = mc_worker_index();
    if (index < 0)
        Py_RETURN_NONE;
    return PyLong_FromLong(index);
}

PyDoc_STRVAR(worker_state_doc,
"worker_state()\n"
"--\n\n"
"A dict that lives as long as this worker process: worker_init can put a\n"
"database connection in it and every task the worker runs finds it\n"
"there. Each worker starts with an empty one. Outside a worker it is a\n"
"dict of the calling process.");

static PyObject *mod_worker_state(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    if (mcx.worker_state == NULL && (mcx.worker_state = PyDict_New()) == NULL)
        return NULL;
    return Py_NewRef(mcx.worker_state);
}

PyDoc_STRVAR(stats_doc,
"stats()\n"
"--\n\n"
"Counters of the running pool, as a dict: 'workers' (a list with, per\n"
"worker slot, 'pid', 'tasks_done', 'busy_seconds', 'bytes_out',\n"
"'respawns', 'cancel_kills', 'start_failures', 'retirements'),\n"
"'worker_count',\n"
"'live_workers', 'queued' (tasks waiting), 'bytes_in', 'bytes_out',\n"
"'shm_in_use' and 'shm_size'. PoolNotRunningError when no pool runs.");

PyObject *mcx_ref_stats(mcx_poolref *ref)
{
    if (!mcx_ref_alive(ref)) {
        PyErr_SetString(mcx.PoolNotRunningError,
                        "multicore.stats(): the pool is not running");
        return NULL;
    }
    int n = ref->workers;
    mc_worker_stats *ws = PyMem_Calloc((size_t)n, sizeof *ws);
    if (ws == NULL)
        return PyErr_NoMemory();
    mc_pool_stats ps;
    int got = mc_pool_get_stats(ref->pool, &ps, ws, n);
    if (got < 0) {
        PyMem_Free(ws);
        return mcx_raise_mc(got, 0, "multicore.stats");
    }
    PyObject *list = PyList_New(got), *result = NULL;
    if (list == NULL)
        goto out;
    for (int i = 0; i < got; i++) {
        PyObject *w = Py_BuildValue(
            "{s:i,s:K,s:d,s:K,s:I,s:I,s:I,s:I}",
            "pid", (int)ws[i].pid,
            "tasks_done", (unsigned long long)ws[i].tasks_done,
            "busy_seconds", (double)ws[i].busy_ns * 1e-9,
            "bytes_out", (unsigned long long)ws[i].bytes_out,
            "respawns", ws[i].respawns,
            "cancel_kills", ws[i].cancel_kills,
            "start_failures", ws[i].start_failures,
            "retirements", ws[i].retirements);
        if (w == NULL)
            goto out;
        PyList_SET_ITEM(list, i, w);
    }
    result = Py_BuildValue(
        "{s:O,s:i,s:i,s:K,s:K,s:K,s:K,s:K}",
        "workers", list,
        "worker_count", ps.workers,
        "live_workers", ps.live_workers,
        "queued", (unsigned long long)ps.queued,
        "bytes_in", (unsigned long long)ps.bytes_in,
        "bytes_out", (unsigned long long)ps.bytes_out,
        "shm_in_use", (unsigned long long)ps.shm_in_use,
        "shm_size", (unsigned long long)ps.shm_size);
out:
    Py_XDECREF(list);
    PyMem_Free(ws);
    return result;
}

static PyObject *mod_stats(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    return mcx_ref_stats(&mcx.main);
}

/* ---------------------------------------------------------------------
 * Module init
 * --------------------------------------------------------------------- */

static PyObject *mod_as_memoryview(PyObject *module, PyObject *buffer)
{
    (void)module;
    return PyMemoryView_FromObject(buffer);
}

static PyObject *mod_shared_buffer(PyObject *module, PyObject *nbytes)
{
    (void)module;
    return mcx_shared_buffer_alloc(NULL, nbytes);
}

static PyMethodDef module_methods[] = {
    {"initialize", (PyCFunction)(void (*)(void))mod_initialize,
     METH_VARARGS | METH_KEYWORDS, initialize_doc},
    {"shutdown", mod_shutdown, METH_NOARGS, shutdown_doc},
    {"ranges", (PyCFunction)(void (*)(void))mod_ranges,
     METH_VARARGS | METH_KEYWORDS, ranges_doc},
    {"number_of_workers", mod_number_of_workers, METH_NOARGS,
     number_of_workers_doc},
    {"is_running", mod_is_running, METH_NOARGS, is_running_doc},
    {"worker_id", mod_worker_id, METH_NOARGS, worker_id_doc},
    {"stats", mod_stats, METH_NOARGS, stats_doc},
    {"_as_memoryview", mod_as_memoryview, METH_O,
     "_as_memoryview(buffer)\n--\n\nmemoryview(buffer): rebuilds a memoryview sent out of band."},
    {"_numlist", mcx_numlist_unpack, METH_VARARGS,
     "_numlist(kind, buffer)\n--\n\nThe list of ints (kind 0) or floats (kind 1) packed in buffer."},
    {"wait_first", (PyCFunction)(void (*)(void))mcx_wait_first,
     METH_VARARGS | METH_KEYWORDS,
     "wait_first(tasks, timeout=None)\n--\n\n"
     "Wait until at least one of the Tasks in `tasks` is done(); return the\n"
     "indices of those that are, in order ([] past the timeout). Sleeps:\n"
     "workers wake it when a task finishes. A list is read again after each\n"
     "completion in the pool, so Tasks (of the same pool) that another\n"
     "thread appends to it meanwhile are waited for too."},
    {"worker_state", mod_worker_state, METH_NOARGS, worker_state_doc},
    {"_worker_pids", mod_worker_pids, METH_NOARGS, worker_pids_doc},
    {"_shared_buffer", mod_shared_buffer, METH_O,
     "_shared_buffer(nbytes)\n--\n\nA SharedMemory buffer of the process-wide pool, or of this "
     "worker's pool inside a task (see multicore.shared)."},
    {"_zygote_pid", mod_zygote_pid, METH_NOARGS, zygote_pid_doc},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "multicore._multicore",
    "C extension of multicore: a persistent pool of worker processes fed\n"
    "through shared memory (libmulticore).",
    -1,
    module_methods,
    NULL, NULL, NULL, NULL
};

static int import_attr(const char *module_name, const char *attr, PyObject **slot)
{
    PyObject *module = PyImport_ImportModule(module_name);
    if (module == NULL)
        return -1;
    PyObject *value = PyObject_GetAttrString(module, attr);
    Py_DECREF(module);
    if (value == NULL)
        return -1;
    Py_XSETREF(*slot, value);
    return 0;
}

PyMODINIT_FUNC PyInit__multicore(void);

PyMODINIT_FUNC PyInit__multicore(void)
{
    if (PyType_Ready(&mcx_TaskType) < 0 || PyType_Ready(&mcx_SharedMemoryType) < 0 ||
        PyType_Ready(&mcx_PoolHandleType) < 0 || PyType_Ready(&mcx_BytesLikeType) < 0 ||
        PyType_Ready(&mcx_NumListType) < 0)
        return NULL;
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL)
        return NULL;

    /* Imported now, before any fork, so that every worker has them. */
    if (import_attr("pickle", "dumps", &mcx.pickle_dumps) < 0 ||
        import_attr("pickle", "loads", &mcx.pickle_loads) < 0 ||
        import_attr("json", "dumps", &mcx.json_dumps) < 0 ||
        import_attr("json", "loads", &mcx.json_loads) < 0 ||
        import_attr("traceback", "format_exception", &mcx.format_exception) < 0)
        goto fail;
    if (mcx.protocol == NULL && (mcx.protocol = PyLong_FromLong(5)) == NULL)
        goto fail;
    if (mcx_load_exceptions() < 0)
        goto fail;
    Py_XSETREF(mcx.as_memoryview, PyObject_GetAttrString(module, "_as_memoryview"));
    if (mcx.as_memoryview == NULL)
        goto fail;
    Py_XSETREF(mcx.numlist, PyObject_GetAttrString(module, "_numlist"));
    if (mcx.numlist == NULL)
        goto fail;
    if (mcx_forget_if_forked() < 0)
        goto fail;

    Py_INCREF(&mcx_TaskType);
    if (PyModule_AddObject(module, "Task", (PyObject *)&mcx_TaskType) < 0) {
        Py_DECREF(&mcx_TaskType);
        goto fail;
    }
    Py_INCREF(&mcx_PoolHandleType);
    if (PyModule_AddObject(module, "PoolHandle", (PyObject *)&mcx_PoolHandleType) < 0) {
        Py_DECREF(&mcx_PoolHandleType);
        goto fail;
    }
    Py_INCREF(&mcx_SharedMemoryType);
    if (PyModule_AddObject(module, "SharedMemory", (PyObject *)&mcx_SharedMemoryType) < 0) {
        Py_DECREF(&mcx_SharedMemoryType);
        goto fail;
    }
    if (PyModule_AddStringConstant(module, "ENGINE_VERSION",
                                   Py_STRINGIFY(MC_VERSION_MAJOR) "."
                                   Py_STRINGIFY(MC_VERSION_MINOR) "."
                                   Py_STRINGIFY(MC_VERSION_PATCH)) < 0)
        goto fail;
    return module;

fail:
    Py_DECREF(module);
    return NULL;
}
