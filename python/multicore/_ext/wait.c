/*
 * wait.c — waiting with the GIL released, and wait_first().
 *
 * Owns: the one loop every blocking call of the binding waits in
 * (mcx_wait_sliced: Task.run() waiting for queue room, Task.get() for a
 * part, initialize() for the workers' init, wait_first() for any
 * completion). The engine's waits sleep on futexes and take a timeout; the
 * loop gives them slices of at most MCX_SLICE seconds with the GIL
 * released, and between two slices takes the GIL back to run the signal
 * handlers (Ctrl-C raises KeyboardInterrupt within a slice) and the
 * caller's check (has shutdown() stopped the pool?). What ends a wait is
 * the futex wake-up of the completion itself; the slices only bound how
 * long signals and a stop go unnoticed (a waiting thread wakes 20 times a
 * second to look, and uses no CPU in between). Also owns
 * wait_first(tasks, timeout), which watches
 * the pool's completions (mc_watch_*) and looks at the tasks after each.
 */
#include "ext.h"

#include <time.h>

/* Returned by wait_first's look when it found done tasks. */
#define MCX_FOUND 2

double mcx_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int mcx_wait_sliced(mcx_wait_fn wait, mcx_check_fn check, void *arg, double deadline)
{
    for (;;) {
        if (PyErr_CheckSignals() < 0)
            return MCX_RAISED;
        if (check != NULL) {
            int rc = check(arg);
            if (rc != MC_OK)
                return rc;
        }
        double slice = MCX_SLICE;
        if (deadline >= 0) {
            double left = deadline - mcx_monotonic();
            if (left <= 0)
                return MC_ETIMEDOUT;
            if (left < slice)
                slice = left;
        }
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = wait(arg, slice);
        Py_END_ALLOW_THREADS
        if (rc != MC_ETIMEDOUT && rc != MC_EINTR)
            return rc;
    }
}

/* ---------------------------------------------------------------------
 * wait_first()
 * --------------------------------------------------------------------- */

/* Indices of the done tasks in `seq` (a fast sequence), as a list. A list
   given to wait_first() is that very list, which another thread may have
   appended to while the wait slept: its size and items are read afresh,
   and each item checked. */
static PyObject *done_indices(PyObject *seq, const mcx_poolref *ref)
{
    PyObject *found = PyList_New(0);
    for (Py_ssize_t i = 0; found != NULL && i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *item = PySequence_Fast_ITEMS(seq)[i];
        if (!PyObject_TypeCheck(item, &mcx_TaskType) || mcx_task_pool(item) != ref) {
            PyErr_Format(PyExc_TypeError,
                         "wait_first(): tasks[%zd] is not a Task of the same pool", i);
            Py_CLEAR(found);
            break;
        }
        if (!mcx_task_done(item))
            continue;
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(found, index) < 0)
            Py_CLEAR(found);
        Py_XDECREF(index);
    }
    return found;
}

struct first_wait {
    PyObject *seq;
    const mcx_poolref *ref;
    mc_group *group;     /* a private empty group of the pool, watching */
    uint32_t seen;
    PyObject *found;     /* the done indices, once some are */
};

/* mcx_wait_fn: sleep until a task of the pool finishes. */
static int first_slice(void *arg, double slice)
{
    struct first_wait *w = arg;
    int rc = mc_watch_wait(w->group, &w->seen, slice);
    return rc == MC_OK ? MC_EINTR : rc;   /* a completion: look again */
}

/* mcx_check_fn: look at the tasks. */
static int first_look(void *arg)
{
    struct first_wait *w = arg;
    w->found = done_indices(w->seq, w->ref);
    if (w->found == NULL)
        return MCX_RAISED;
    if (PyList_GET_SIZE(w->found) > 0)
        return MCX_FOUND;
    Py_CLEAR(w->found);
    return MC_OK;
}

PyObject *mcx_wait_first(PyObject *module, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"tasks", "timeout", NULL};
    PyObject *tasks_obj, *timeout_obj = Py_None;
    (void)module;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:wait_first", kwlist,
                                     &tasks_obj, &timeout_obj))
        return NULL;
    double timeout;
    if (mcx_parse_timeout(timeout_obj, &timeout) < 0)
        return NULL;
    PyObject *seq = PySequence_Fast(tasks_obj, "wait_first(): tasks must be a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyObject_TypeCheck(PySequence_Fast_ITEMS(seq)[i], &mcx_TaskType)) {
            PyErr_Format(PyExc_TypeError, "wait_first(): tasks[%zd] is not a Task", i);
            Py_DECREF(seq);
            return NULL;
        }
    }
    const mcx_poolref *ref = n > 0 ? mcx_task_pool(PySequence_Fast_ITEMS(seq)[0]) : NULL;
    for (Py_ssize_t i = 1; i < n; i++) {
        if (mcx_task_pool(PySequence_Fast_ITEMS(seq)[i]) != ref) {
            PyErr_SetString(PyExc_ValueError,
                            "wait_first(): the tasks belong to different pools");
            Py_DECREF(seq);
            return NULL;
        }
    }
    PyObject *found = done_indices(seq, ref);
    if (found == NULL || PyList_GET_SIZE(found) > 0 || n == 0 || timeout == 0 ||
        !mcx_ref_alive(ref)) {
        Py_DECREF(seq);
        return found;
    }
    Py_DECREF(found);

    /* Watch completions, then look again: nothing finishing between the
       look and the sleep can be missed. A private empty group names the
       pool and keeps its handle alive if shutdown() runs meanwhile (the
       tasks' own groups may be destroyed by Task.cancel() meanwhile). */
    struct first_wait w = {seq, ref, NULL, 0, NULL};
    int rc = mc_group_create(ref->pool, &w.group);
    if (rc != MC_OK) {
        Py_DECREF(seq);
        return mcx_raise_mc(rc, 0, "wait_first");
    }
    w.seen = mc_watch_begin(w.group);
    double deadline = timeout < 0 ? -1.0 : mcx_monotonic() + timeout;
    rc = mcx_wait_sliced(first_slice, first_look, &w, deadline);
    mc_watch_end(w.group);
    mc_group_destroy(w.group);
    Py_DECREF(seq);
    switch (rc) {
    case MCX_FOUND:
        return w.found;
    case MCX_RAISED:
        return NULL;
    case MC_ETIMEDOUT:
        return PyList_New(0);   /* none done within the timeout */
    case MC_ESTATE:
        PyErr_SetString(mcx.PoolNotRunningError, "wait_first(): the multicore pool stopped");
        return NULL;
    default:
        return mcx_raise_mc(rc, 0, "wait_first");
    }
}
