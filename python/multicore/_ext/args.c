/*
 * args.c — the parsers of the arguments that the module's functions and
 * the types' methods share.
 *
 * Owns: turning a Python argument into the C value the engine or the
 * binding needs, or raising the TypeError / ValueError that names the
 * argument, the value given and the limit it broke. Every parser returns
 * 0 (or the value) on success and -1 with the exception set; none takes a
 * reference it does not give back. A function's own argument list
 * (PyArg_ParseTupleAndKeywords) stays with the function; what more than
 * one place accepts, or what has a limit to name, is parsed here.
 */
#include "ext.h"

#include <math.h>

/* ---------------------------------------------------------------------
 * Pools: initialize(), multicore.Pool()
 * --------------------------------------------------------------------- */

/* obj as a long long, if it is an int and not a bool: 0, with *overflow as
   PyLong_AsLongLongAndOverflow() sets it; or -1 with a TypeError saying
   that `name` must be `what`. */
static int int_value(PyObject *obj, const char *name, const char *what, long long *out,
                     int *overflow)
{
    if (PyBool_Check(obj) || !PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be %s, not %.100s", name, what,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *overflow = 0;
    *out = PyLong_AsLongLongAndOverflow(obj, overflow);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* 0 if obj is callable or None, else -1 with a TypeError naming it. */
static int optional_callable(PyObject *obj, const char *name)
{
    if (obj == Py_None || PyCallable_Check(obj))
        return 0;
    PyErr_Format(PyExc_TypeError, "%s must be callable or None, not %.100s", name,
                 Py_TYPE(obj)->tp_name);
    return -1;
}

int mcx_parse_pool_args(PyObject *workers_obj, PyObject *init_obj, PyObject *exit_obj,
                        PyObject *shm_obj, int *workers_out, size_t *region_out)
{
    int workers = 0;
    size_t region_size = 0;
    if (workers_obj != Py_None) {
        long long w;
        int overflow;
        if (int_value(workers_obj, "workers", "a positive int or None", &w, &overflow) < 0)
            return -1;
        if (overflow != 0 || w < 1 || w > MC_WORKERS_MAX) {
            PyErr_Format(PyExc_ValueError,
                         "workers must be between 1 and %d, got %R",
                         MC_WORKERS_MAX, workers_obj);
            return -1;
        }
        workers = (int)w;
    }
    if (optional_callable(init_obj, "worker_init") < 0)
        return -1;
    if (shm_obj != Py_None) {
        long long n;
        int overflow;
        if (int_value(shm_obj, "shared_memory", "an int (bytes) or None", &n, &overflow) < 0)
            return -1;
        if (overflow != 0 || n < (long long)MC_REGION_MIN) {
            PyErr_Format(PyExc_ValueError,
                         "shared_memory must be at least %zu MiB (%zu bytes), got %R",
                         MC_REGION_MIN >> 20, MC_REGION_MIN, shm_obj);
            return -1;
        }
        region_size = (size_t)n;
    }
    if (optional_callable(exit_obj, "worker_exit") < 0)
        return -1;
    if (mc_worker_index() >= 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "a multicore pool cannot be started in a worker");
        return -1;
    }
    *workers_out = workers;
    *region_out = region_size;
    return 0;
}

/* max_tasks_per_worker: a positive int or None (no limit). ValueError
   otherwise, as multiprocessing.Pool's maxtasksperchild gives. */
int mcx_parse_max_tasks(PyObject *obj, uint64_t *out)
{
    *out = 0;
    if (obj == Py_None)
        return 0;
    if (!PyLong_Check(obj) || PyBool_Check(obj)) {
        PyErr_Format(PyExc_ValueError,
                     "max_tasks_per_worker must be a positive int or None, "
                     "not %.100s %R", Py_TYPE(obj)->tp_name, obj);
        return -1;
    }
    int overflow = 0;
    long long n = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (overflow < 0 || (overflow == 0 && n < 1)) {
        PyErr_Format(PyExc_ValueError,
                     "max_tasks_per_worker must be a positive int or None, got %R", obj);
        return -1;
    }
    *out = overflow > 0 ? UINT64_MAX : (uint64_t)n;
    return 0;
}

/* ---------------------------------------------------------------------
 * Tasks: load limits, timeouts, result formats
 * --------------------------------------------------------------------- */

/* obj as a double, or `none` for None: 1 (a number), 0 (None), or -1 with
   the TypeError of float(). */
static int optional_double(PyObject *obj, double none, double *out)
{
    *out = none;
    if (obj == Py_None)
        return 0;
    double v = PyFloat_AsDouble(obj);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    *out = v;
    return 1;
}

int mcx_parse_load_limit(PyObject *obj, double *out)
{
    int given = optional_double(obj, NAN, out);   /* None: no limit */
    if (given > 0 && isnan(*out)) {
        PyErr_SetString(PyExc_ValueError, "max_load_average must not be NaN");
        return -1;
    }
    return given < 0 ? -1 : 0;
}

int mcx_parse_timeout(PyObject *obj, double *out)
{
    int given = optional_double(obj, -1.0, out);  /* None: no limit */
    if (given > 0 && (isnan(*out) || *out < 0)) {
        PyErr_Format(PyExc_ValueError,
                     "timeout must be a non-negative number or None, got %R", obj);
        return -1;
    }
    return given < 0 ? -1 : 0;
}

int mcx_parse_format(PyObject *obj, int *format)
{
    if (PyUnicode_Check(obj)) {
        if (PyUnicode_CompareWithASCIIString(obj, "pickle") == 0) {
            *format = MCX_FMT_PICKLE;
            return 0;
        }
        if (PyUnicode_CompareWithASCIIString(obj, "json") == 0) {
            *format = MCX_FMT_JSON;
            return 0;
        }
        if (PyUnicode_CompareWithASCIIString(obj, "string") == 0) {
            *format = MCX_FMT_STRING;
            return 0;
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "serialization_format must be one of 'pickle', 'json', "
                 "'string'; got %R", obj);
    return -1;
}

/* ---------------------------------------------------------------------
 * Sizes and counts
 * --------------------------------------------------------------------- */

int mcx_parse_nbytes(PyObject *obj, size_t *out)
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

Py_ssize_t mcx_parse_int_min(PyObject *obj, const char *name, Py_ssize_t minimum)
{
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", name,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t v = PyNumber_AsSsize_t(obj, PyExc_OverflowError);
    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < minimum) {
        PyErr_Format(PyExc_ValueError, "%s must be >= %zd, got %zd", name,
                     minimum, v);
        return -1;
    }
    return v;
}
