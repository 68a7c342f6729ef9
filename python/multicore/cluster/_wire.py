"""The bytes that cross between the caller and a cluster worker, both ends
(as python/multicore/_ext/wire.c does for the local pool).

A task is handed to the cluster as ``pickle.loads(payload, buffers=...)``:
the scheduler sees only a builtin function and bytes, so it never needs the
user's modules (nor multicore). Unpickling the payload on a worker calls
execute() below with the callable and the arguments still as bytes, so
that a callable or an argument the worker cannot load is reported as
CallableNotFoundError / ArgumentsUnpicklingError instead of an anonymous
deserialization error. Large buffers (pickle protocol 5) stay out of band
all the way: the caller's arguments, the payload and the result.

The callable and the arguments are pickled with cloudpickle (dill with
use_dill=True): a function of an importable module travels by reference and
must be importable on the workers; a function defined in __main__ (or a
lambda, a closure) travels by value, with copies of the module globals it
uses. The result travels in the task's serialization_format: pickle
(protocol 5, buffers out of band), json, or string (a str as it is).

A task's own exception comes back as a report (the exception if it
pickles, its type name, message and the formatted traceback headed by the
host, pid and worker address), raised in the caller as the exception with
RemoteTraceback(text) as __cause__.
"""

import json
import os
import pickle
import socket
import sys
import threading
import time
import traceback

from multicore.exceptions import (ArgumentsUnpicklingError, CallableNotFoundError,
                                  MulticoreError, RemoteTraceback, WorkerInitError)

FORMATS = ("pickle", "json", "string")

# Report codes: the first item of what execute() returns.
OK = 0             # (OK, format, data, buffers)
FAILED = 1         # (FAILED, exception pickle or None, type name, message, text)
NO_CALLABLE = 2    # (NO_CALLABLE, why)
BAD_ARGS = 3       # (BAD_ARGS, why)
CANCELLED = 4      # (CANCELLED,): cancelled before it started; fn did not run
NO_INIT = 5        # (NO_INIT, text): worker_init failed (or never ran) here

_LENGTHS = {OK: 4, FAILED: 5, NO_CALLABLE: 2, BAD_ARGS: 2, CANCELLED: 1, NO_INIT: 2}


def is_report(obj):
    """Whether obj is what execute() returns (and not, say, the None or the
    key that a gather answered for a result it did not bring)."""
    return type(obj) is tuple and len(obj) > 0 and type(obj[0]) is int and \
        _LENGTHS.get(obj[0]) == len(obj)


# ---------------------------------------------------------------------------
# Pickling the callable and the arguments
# ---------------------------------------------------------------------------

def _pickler(use_dill):
    if use_dill:
        try:
            import dill
        except ImportError:
            raise ImportError("use_dill=True needs the 'dill' package "
                              "(pip install dill)") from None
        return dill
    import cloudpickle
    return cloudpickle


def callable_name(fn):
    """"module.qualname" of fn (as the errors name it)."""
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    module = getattr(fn, "__module__", None)
    return f"{module}.{name}" if module and module != "builtins" else name


class _Call:
    """The payload: unpickling it on a worker runs execute(*args)."""

    __slots__ = ("args",)

    def __init__(self, args):
        self.args = args

    def __reduce__(self):
        return execute, self.args


# The last by-reference callable's bytes (as the C binding caches it): a
# map sends the same function with every chunk.
_fn_cache = (None, None, None)   # (fn, use_dill, bytes)


def _callable_bytes(fn, use_dill):
    global _fn_cache
    cached_fn, cached_dill, cached = _fn_cache
    if cached_fn is fn and cached_dill == use_dill:
        return cached
    data = _pickler(use_dill).dumps(fn, protocol=5)
    # Functions of __main__ travel by value with copies of their globals:
    # pickled again at each run(), so that each run sends the globals as
    # they are then. Importable ones are references: cached.
    if getattr(fn, "__module__", "__main__") not in ("__main__", None) and \
            getattr(fn, "__closure__", None) is None and \
            getattr(fn, "__name__", "<lambda>") != "<lambda>":
        _fn_cache = (fn, use_dill, data)
    return data


def _as_array(buffer):
    """An out-of-band buffer as a uint8 numpy array over the same memory:
    Dask sends arrays out of band at every hop (caller, scheduler, worker),
    while a bare PickleBuffer is copied into the graph on the scheduler.
    Without numpy, the buffer as it is."""
    try:
        import numpy
    except ImportError:
        return buffer
    return numpy.frombuffer(buffer, dtype=numpy.uint8)


def encode_call(key, session_id, fmt, use_dill, fn, args, kwargs):
    """(payload, buffers) for pickle.loads(payload, buffers=buffers) on a
    worker. buffers are the arguments' out-of-band buffers (not copied)."""
    name = callable_name(fn)
    fn_bytes = _callable_bytes(fn, use_dill)
    arg_buffers = []
    args_bytes = _pickler(use_dill).dumps((args, kwargs), protocol=5,
                                          buffer_callback=arg_buffers.append) \
        if not use_dill else _pickler(True).dumps((args, kwargs))
    meta = (key, session_id, fmt, bool(use_dill), name)
    buffers = []
    payload = pickle.dumps(_Call((meta, fn_bytes, args_bytes, arg_buffers)),
                           protocol=5, buffer_callback=buffers.append)
    return payload, [_as_array(b) for b in buffers]


# ---------------------------------------------------------------------------
# The worker side
# ---------------------------------------------------------------------------

class WorkerContext:
    """One session's state in one worker process (made by the backend's
    worker plugin): worker_state(), worker_id(), counters, and claim(key),
    which the backend sets to record on the scheduler that the task starts
    here (False: it was cancelled, do not run it)."""

    def __init__(self, worker_id, claim=None):
        self.worker_id = worker_id
        self.state = {}
        self.claim = claim
        self.init_error = None    # worker_init's traceback text if it failed
        self.tasks_done = 0
        self.busy_seconds = 0.0
        self.bytes_out = 0
        self.lock = threading.Lock()


_contexts = {}        # session id -> WorkerContext, in this worker process
_running = {}         # key -> thread ident of a task running here
_loaded = (None, None, None)   # (bytes, use_dill, fn): the last callable


def _enter(ctx):
    from multicore import cluster
    cluster._here.state = ctx.state
    cluster._here.worker_id = ctx.worker_id


def _leave():
    from multicore import cluster
    cluster._here.state = None
    cluster._here.worker_id = None


def run_in_context(ctx, fn):
    """fn() with worker_state()/worker_id() answering for ctx (worker_init,
    worker_exit)."""
    _enter(ctx)
    try:
        return fn()
    finally:
        _leave()


def _why():
    e = sys.exc_info()[1]
    return f"{type(e).__name__}: {e}"


def _where():
    worker = ""
    try:
        from distributed import get_worker
        worker = f", Dask worker {get_worker().address}"
    except Exception:   # not in a Dask worker (tests call execute directly)
        pass
    return f"host {socket.gethostname()}, pid {os.getpid()}{worker}"


def failure_report():
    """The report of the exception being handled (see the module doc)."""
    etype, value, tb = sys.exc_info()
    try:
        text = "".join(traceback.format_exception(etype, value, tb))
    except Exception:
        text = f"{etype.__name__}: <traceback could not be formatted>\n"
    text = f"Traceback from {_where()}:\n{text}"
    exc_bytes = None
    if isinstance(value, Exception):
        try:
            exc_bytes = pickle.dumps(value, protocol=5)
            pickle.loads(exc_bytes)
        except Exception:
            exc_bytes = None
    try:
        message = str(value)
    except Exception:
        message = "<exception str() failed>"
    module = getattr(etype, "__module__", "builtins")
    name = etype.__qualname__ if module == "builtins" else f"{module}.{etype.__qualname__}"
    return (FAILED, exc_bytes, name, message, text)


def _load_callable(fn_bytes, use_dill):
    global _loaded
    data, dill_flag, fn = _loaded
    if data == fn_bytes and dill_flag == use_dill:
        return fn
    fn = _pickler(True).loads(fn_bytes) if use_dill else pickle.loads(fn_bytes)
    _loaded = (fn_bytes, use_dill, fn)
    return fn


def execute(meta, fn_bytes, args_bytes, arg_buffers):
    """Runs on a worker (from unpickling the payload): the task, and its
    report."""
    key, session_id, fmt, use_dill, name = meta
    ctx = _contexts.get(session_id)
    if ctx is None:
        return (NO_INIT, f"the worker ({_where()}) was not set up for this "
                         f"multicore session (its worker plugin did not run)")
    if ctx.init_error is not None:
        return (NO_INIT, ctx.init_error)
    _running[key] = threading.get_ident()
    try:
        if ctx.claim is not None and not ctx.claim(key):
            return (CANCELLED,)
        try:
            fn = _load_callable(fn_bytes, use_dill)
        except BaseException:
            return (NO_CALLABLE, _why())
        try:
            if use_dill:
                args, kwargs = _pickler(True).loads(args_bytes)
            else:
                args, kwargs = pickle.loads(args_bytes, buffers=arg_buffers)
        except BaseException:
            return (BAD_ARGS, _why())
        del fn_bytes, args_bytes, arg_buffers
        start = time.perf_counter()
        _enter(ctx)
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            return failure_report()
        finally:
            _leave()
            with ctx.lock:
                ctx.tasks_done += 1
                ctx.busy_seconds += time.perf_counter() - start
        del args, kwargs
        try:
            report = _encode_result(result, fmt)
        except BaseException:
            return failure_report()
        with ctx.lock:
            ctx.bytes_out += _size(report)
        return report
    finally:
        _running.pop(key, None)


def _encode_result(result, fmt):
    if fmt == "pickle":
        buffers = []
        data = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
        # memoryviews, which Dask sends as frames of their own (it may
        # pickle a result with a protocol that has no PickleBuffer)
        return (OK, fmt, data, [memoryview(b).cast("B") for b in buffers])
    if fmt == "json":
        return (OK, fmt, json.dumps(result), None)
    if not isinstance(result, str):
        raise TypeError(f"serialization_format='string' needs a str result, "
                        f"got {type(result).__name__}")
    return (OK, fmt, result, None)


def _size(report):
    data, buffers = report[2], report[3]
    n = len(data)
    for b in buffers or ():
        n += memoryview(b).nbytes
    return n


# ---------------------------------------------------------------------------
# The caller side: a report back into a value or an exception
# ---------------------------------------------------------------------------

def decode(report, name):
    """The value of a task's report, or raise its failure. name is the
    callable's name (callable_name())."""
    code = report[0]
    if code == OK:
        _, fmt, data, buffers = report
        if fmt == "pickle":
            return pickle.loads(data, buffers=buffers or ())
        if fmt == "json":
            return json.loads(data)
        return data
    if code == FAILED:
        _, exc_bytes, type_name, message, text = report
        cause = RemoteTraceback(text)
        exc = None
        if exc_bytes is not None:
            try:
                exc = pickle.loads(exc_bytes)
            except Exception:
                exc = None
            if not isinstance(exc, Exception):
                exc = None
        if exc is None:
            exc = MulticoreError(f"RemoteError: {type_name}: {message}" if message
                                 else f"RemoteError: {type_name}")
        exc.__cause__ = cause
        raise exc
    if code == NO_CALLABLE:
        raise CallableNotFoundError(
            f"{name} was not found on the cluster's workers ({report[1]}): "
            f"make its module importable there (install it, or put it on "
            f"the workers' PYTHONPATH), or define it in the main script, "
            f"whose functions travel by value")
    if code == BAD_ARGS:
        raise ArgumentsUnpicklingError(
            f"the arguments for {name} could not be unpickled on a cluster "
            f"worker ({report[1]}): make the modules they use importable on "
            f"the workers, or define what they use in the main script")
    if code == NO_INIT:
        raise WorkerInitError(f"running {name}: worker_init failed on a "
                              f"cluster worker:\n{report[1]}")
    if code == CANCELLED:
        raise MulticoreError(f"running {name} was cancelled before it started")
    raise MulticoreError(f"running {name} failed with an unknown report code {code!r}")
