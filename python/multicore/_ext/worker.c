/*
 * worker.c — what runs inside a worker process.
 *
 * Owns: the task entry (the mc_task_fn every Python task is submitted
 * with), the worker_init and worker_exit callbacks given to the engine.
 *
 * A worker is forked from the zygote, which was forked from the caller, so
 * it holds a copy of the caller's interpreter. After the fork the worker's
 * fork hook (lifecycle.c) parks the GIL in mcx.worker_tstate; each callback
 * here takes it back with PyEval_RestoreThread for exactly the time it runs
 * Python code and parks it again before returning to the engine. Nothing
 * raised by user code escapes: every failure becomes a task code and a
 * result the caller turns back into an exception (see errors.c).
 */
#include "ext.h"

#include <stddef.h>
#include <string.h>

/* Set a UTF-8 text result and return code (used for the non-exception
   failures the caller reports by code). */
static int text_result(mc_task_ctx *ctx, int code, PyObject *text)
{
    const char *utf8 = NULL;
    Py_ssize_t n = 0;
    if (text != NULL)
        utf8 = PyUnicode_AsUTF8AndSize(text, &n);
    if (utf8 == NULL) {
        PyErr_Clear();
        utf8 = "unknown error";
        n = (Py_ssize_t)strlen(utf8);
    }
    if (mc_result_set(ctx, utf8, (size_t)n) != MC_OK)
        mc_result_set(ctx, NULL, 0);
    return code;
}

/* The current exception becomes the task's failure report. */
static int exception_result(mc_task_ctx *ctx)
{
    PyObject *report = mcx_encode_exception();
    if (report == NULL) {
        PyObject *summary = mcx_exception_summary();
        int rc = text_result(ctx, MCX_RC_PAYLOAD, summary);
        Py_XDECREF(summary);
        return rc;
    }
    int rc = mc_result_set(ctx, PyBytes_AS_STRING(report),
                           (size_t)PyBytes_GET_SIZE(report));
    Py_ssize_t size = PyBytes_GET_SIZE(report);
    Py_DECREF(report);
    if (rc != MC_OK) {
        PyObject *msg = PyUnicode_FromFormat(
            "the task raised, and its failure report (%zd bytes) did not "
            "fit in shared memory", size);
        rc = text_result(ctx, MCX_RC_NOMEM, msg);
        Py_XDECREF(msg);
        return rc;
    }
    return MCX_RC_EXCEPTION;
}

/* Load the task's callable; by-reference pickles are cached per worker. */
static PyObject *load_callable(const mcx_wire_task *task)
{
    if (!task->use_dill && mcx.w_last_fn != NULL &&
        (size_t)PyBytes_GET_SIZE(mcx.w_last_fn_bytes) == task->fn_len &&
        memcmp(PyBytes_AS_STRING(mcx.w_last_fn_bytes), task->fn,
               task->fn_len) == 0) {
        Py_INCREF(mcx.w_last_fn);
        return mcx.w_last_fn;
    }
    PyObject *fn = mcx_loads(task->fn, task->fn_len, task->use_dill);
    if (fn == NULL)
        return NULL;
    if (!task->use_dill) {
        PyObject *bytes = PyBytes_FromStringAndSize(task->fn,
                                                    (Py_ssize_t)task->fn_len);
        if (bytes == NULL) {
            PyErr_Clear();   /* the cache is optional */
        } else {
            Py_INCREF(fn);
            Py_XSETREF(mcx.w_last_fn, fn);
            Py_XSETREF(mcx.w_last_fn_bytes, bytes);
        }
    }
    return fn;
}

/* mcx_link_fn for the arguments: a hold of the linked buffer, or, at the
   worker's hold limit, its bytes to copy. */
static int hold_arg_link(void *ctx, unsigned link, mc_hold **hold, const void **data, size_t *len)
{
    int rc = mc_task_link_hold(ctx, link, hold);
    if (rc != MC_ENOMEM)
        return rc;
    *hold = NULL;
    *data = mc_task_link_data(ctx, link, len);
    return *data ? MC_OK : MC_EINVAL;
}

/* mcx_share_fn for the result. */
static int share_with_result(void *ctx, const mc_hold *buffer, unsigned *link)
{
    return mc_result_share(ctx, buffer, link);
}

/* Links the task record carries already (its arguments'): the engine
   fills them in order, and result links share the same MC_SHARE_MAX. */
static int links_in_use(mc_task_ctx *ctx)
{
    int n = 0;
    while (n < MC_SHARE_MAX && mc_task_link_data(ctx, (unsigned)n, NULL) != NULL)
        n++;
    return n;
}

static int run_task(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    mcx_wire_task task;
    PyObject *fn = NULL, *call = NULL, *result = NULL, *msg = NULL;
    mcx_buffer out = {NULL, NULL, 0};
    mcx_oob frame_out;
    mc_hold *hold = NULL;
    int rc;

    memset(&frame_out, 0, offsetof(mcx_oob, compact));

    if (mcx_wire_parse(arg, arg_len, &task) < 0) {
        msg = PyUnicode_FromFormat("malformed task payload (%zu bytes)",
                                   arg_len);
        rc = text_result(ctx, MCX_RC_PAYLOAD, msg);
        goto done;
    }

    fn = load_callable(&task);
    if (fn == NULL) {
        msg = mcx_exception_summary();
        rc = text_result(ctx, MCX_RC_CALLABLE, msg);
        goto done;
    }

    /* A compact frame: the atoms are the positional arguments. */
    if (mcx_compact_is(task.args, task.args_len)) {
        mcx_compact c;
        PyObject *argv[MCX_COMPACT_MAX_ITEMS];
        if (mcx_compact_parse(task.args, task.args_len, &c) < 0 || c.kind != MCX_COMPACT_CALL) {
            msg = PyUnicode_FromFormat("malformed compact arguments (%zu bytes)", task.args_len);
            rc = text_result(ctx, MCX_RC_ARGS, msg);
            goto done;
        }
        if (mcx_compact_objects(&c, argv) < 0) {
            msg = mcx_exception_summary();
            rc = text_result(ctx, MCX_RC_ARGS, msg);
            goto done;
        }
        result = PyObject_Vectorcall(fn, argv, c.n, NULL);
        for (size_t k = 0; k < c.n; k++)
            Py_DECREF(argv[k]);
        if (result == NULL) {
            rc = exception_result(ctx);
            goto done;
        }
        goto encode;
    }

    /* Large arguments are views of the shared memory; a hold keeps it in
       place for as long as the task (or whatever it kept) uses them. */
    mcx_frame frame;
    if (mcx_frame_parse(task.args, task.args_len, &frame) == 0 && mcx_frame_has_inline(&frame) &&
        mc_task_hold(ctx, &hold) != MC_OK)
        hold = NULL;   /* at the per-worker limit: the buffers are copied */
    call = mcx_oob_loads(task.args, task.args_len, task.use_dill, &hold, hold_arg_link, ctx,
                         MCX_WORKER_TAG);
    mc_hold_release(hold);
    hold = NULL;
    if (call == NULL) {
        msg = mcx_exception_summary();
        rc = text_result(ctx, MCX_RC_ARGS, msg);
        goto done;
    }
    if (!PyTuple_Check(call) || PyTuple_GET_SIZE(call) != 2 ||
        !PyTuple_Check(PyTuple_GET_ITEM(call, 0)) ||
        !PyDict_Check(PyTuple_GET_ITEM(call, 1))) {
        msg = PyUnicode_FromString("arguments are not an (args, kwargs) pair");
        rc = text_result(ctx, MCX_RC_ARGS, msg);
        goto done;
    }

    result = PyObject_Call(fn, PyTuple_GET_ITEM(call, 0),
                           PyTuple_GET_ITEM(call, 1));
    if (result == NULL) {
        rc = exception_result(ctx);
        goto done;
    }
    /* Drop the arguments before encoding: they may be large. */
    Py_CLEAR(call);

encode:
    if (task.format == MCX_FMT_PICKLE) {
        /* large buffers of the result go out of band: copied once */
        if (mcx_oob_encode(result, 0, 0, MCX_WORKER_TAG, &frame_out) < 0) {
            rc = exception_result(ctx);
            goto done;
        }
        if (frame_out.buffers != NULL) {
            /* Dropping the result first leaves its arrays referenced by
               their PickleBuffers alone, unless the worker kept them:
               those nothing else can reach are moved, not copied. */
            Py_CLEAR(result);
            if (mcx_oob_move(&frame_out, MC_SHARE_MAX - links_in_use(ctx)) < 0) {
                rc = exception_result(ctx);   /* a __del__ released a buffer */
                goto done;
            }
            if (mcx_np_pending())
                mcx_np_install();   /* numpy came in with this task */
        }
        void *dst = mc_result_alloc(ctx, frame_out.frame_size);
        if (dst == NULL) {
            msg = PyUnicode_FromFormat(
                "the task's result (%zu bytes) did not fit in shared memory",
                frame_out.frame_size);
            rc = text_result(ctx, MCX_RC_NOMEM, msg);
            goto done;
        }
        if (mcx_oob_write(&frame_out, dst, share_with_result, ctx) < 0) {
            rc = exception_result(ctx);
            goto done;
        }
        rc = MCX_RC_OK;
        goto done;
    }
    if (mcx_encode_result(result, task.format, &out) < 0) {
        rc = exception_result(ctx);
        goto done;
    }
    void *dst = mc_result_alloc(ctx, (size_t)out.len);
    if (dst == NULL) {
        msg = PyUnicode_FromFormat(
            "the task's result (%zd bytes) did not fit in shared memory",
            out.len);
        rc = text_result(ctx, MCX_RC_NOMEM, msg);
        goto done;
    }
    if (out.len > 0)
        memcpy(dst, out.data, (size_t)out.len);
    rc = MCX_RC_OK;

done:
    mcx_buffer_release(&out);
    mcx_oob_release(&frame_out);
    Py_XDECREF(msg);
    Py_XDECREF(result);
    Py_XDECREF(call);
    Py_XDECREF(fn);
    PyErr_Clear();
    return rc;
}

int mcx_task_entry(const void *arg, size_t arg_len, mc_task_ctx *ctx)
{
    if (mcx.worker_tstate == NULL)
        return MCX_RC_PAYLOAD;   /* not a worker this extension set up */
    PyEval_RestoreThread(mcx.worker_tstate);
    mcx.worker_tstate = NULL;
    int rc = run_task(arg, arg_len, ctx);
    mcx.worker_tstate = PyEval_SaveThread();
    return rc;
}

int mcx_worker_init(int worker_index, void *arg)
{
    mcx_poolref *ref = arg;   /* the pool this worker belongs to */
    (void)worker_index;
    if (mcx.worker_tstate == NULL) {
        mc_worker_set_error("multicore: worker started without its Python "
                            "thread state (fork hook did not run)");
        return 1;
    }
    PyEval_RestoreThread(mcx.worker_tstate);
    mcx.worker_tstate = NULL;
    int rc = 0;
    /* worker_state() starts empty in every worker: what the caller kept in
       its own dict is not the worker's. */
    PyObject *state = PyDict_New();
    if (state == NULL) {
        PyErr_Clear();
        mc_worker_set_error("multicore: out of memory creating worker_state()");
        mcx.worker_tstate = PyEval_SaveThread();
        return 1;
    }
    Py_XSETREF(mcx.worker_state, state);
    mcx_np_worker_start(ref->np_workers);   /* large numpy arrays in shared memory */
    if (ref->worker_init != NULL) {
        PyObject *r = PyObject_CallNoArgs(ref->worker_init);
        if (r == NULL) {
            PyObject *report = mcx_traceback_text();
            const char *text = report ? PyUnicode_AsUTF8(report) : NULL;
            if (text == NULL) {
                PyErr_Clear();
                text = "worker_init raised an exception "
                       "(its traceback could not be formatted)";
            }
            mc_worker_set_error(text);
            Py_XDECREF(report);
            rc = 1;
        } else {
            Py_DECREF(r);
        }
        PyErr_Clear();
        if (mcx_np_pending())
            mcx_np_install();   /* worker_init may have imported numpy */
    }
    mcx.worker_tstate = PyEval_SaveThread();
    return rc;
}

void mcx_worker_exit(int worker_index, void *arg)
{
    mcx_poolref *ref = arg;
    (void)worker_index;
    if (mcx.worker_tstate == NULL)
        return;
    PyEval_RestoreThread(mcx.worker_tstate);
    mcx.worker_tstate = NULL;
    if (ref->worker_exit != NULL) {
        /* Nobody is left to raise to: print the traceback, as Python does
           for an exception in an atexit function. */
        PyObject *r = PyObject_CallNoArgs(ref->worker_exit);
        if (r == NULL)
            PyErr_Print();
        Py_XDECREF(r);
    }
    /* Workers leave with _exit(): flush what the tasks printed. */
    mcx_flush_std();
    mcx.worker_tstate = PyEval_SaveThread();
}
