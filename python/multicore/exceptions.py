"""Exceptions raised by multicore.

Every error multicore itself raises is a MulticoreError. A task's own
exception is re-raised in the caller as its original type, with the
worker's traceback attached as ``__cause__`` (a RemoteTraceback), as
concurrent.futures does.

The errors that say a task could not be run or received by the pool's
machinery (its worker died, its callable or arguments did not load in the
worker, its result did not load in the caller, no worker could start) are
also concurrent.futures.process.BrokenProcessPool, which ProcessPoolExecutor
raises in those cases, so that code written for it catches them. Unlike
ProcessPoolExecutor, multicore fails only the task concerned; the pool goes
on.
"""

import multiprocessing as _mp
import multiprocessing.pool as _mp_pool
from concurrent.futures.process import BrokenProcessPool as _BrokenProcessPool

__all__ = [
    "MulticoreError",
    "TimeoutExceededError",
    "NoAvailableInputBufferError",
    "InputBufferTooSmallError",
    "TaskCompleteError",
    "WorkerDiedError",
    "PoolNotRunningError",
    "CallableNotFoundError",
    "ArgumentsUnpicklingError",
    "WorkerInitError",
    "ResultUnpicklingError",
    "RemoteTraceback",
    "PoolClosedError",
]


class MulticoreError(Exception):
    """Base class of multicore's errors."""


class TimeoutExceededError(MulticoreError, _mp.TimeoutError):
    """Task.get() waited longer than its timeout. Also a
    multiprocessing.TimeoutError, which multicore.Pool's results raise."""


class NoAvailableInputBufferError(MulticoreError):
    """Kept from multicore 0.1.1 for compatibility; no longer raised (the
    queue now applies backpressure instead of running out of buffers)."""


class InputBufferTooSmallError(MulticoreError):
    """Kept from multicore 0.1.1 for compatibility; no longer raised
    (there are no fixed-size buffers any more)."""


class TaskCompleteError(MulticoreError):
    """run() or get() on a task whose get() has already finished."""


class WorkerDiedError(MulticoreError, _BrokenProcessPool):
    """The worker process running a task died (signal or exit). Also a
    BrokenProcessPool, as ProcessPoolExecutor raises when a worker dies."""

    def __init__(self, message="", pid=None, signal=None, exit_status=None):
        super().__init__(message)
        self.pid = pid
        self.signal = signal
        self.exit_status = exit_status

    def __reduce__(self):
        return (type(self), (str(self), self.pid, self.signal, self.exit_status))


class PoolNotRunningError(MulticoreError, RuntimeError):
    """run() or get() after shutdown() stopped the pool. Also a
    RuntimeError, which concurrent.futures raises for work submitted to an
    executor that is shut down."""


class CallableNotFoundError(MulticoreError, _BrokenProcessPool):
    """The callable does not exist in the workers (defined after
    initialize(); pass use_dill=True to send it by value). Also a
    BrokenProcessPool (ProcessPoolExecutor's worker dies of it)."""


class ArgumentsUnpicklingError(MulticoreError, _BrokenProcessPool):
    """A task's arguments could not be unpickled in a worker. Also a
    BrokenProcessPool (ProcessPoolExecutor's worker dies of it)."""


class WorkerInitError(MulticoreError, _BrokenProcessPool):
    """worker_init raised in a worker; the message holds its traceback.
    Also a BrokenProcessPool, as ProcessPoolExecutor raises when its
    initializer fails."""


class ResultUnpicklingError(MulticoreError, _BrokenProcessPool):
    """multicore.Executor: a task's result came back but could not be
    unpickled in the caller (the exception that stopped it is __cause__).
    Also a BrokenProcessPool, as ProcessPoolExecutor raises then."""


# The formatted traceback of an exception raised in a worker, set as the
# __cause__ of the exception re-raised in the caller: multiprocessing's own
# type (str() is the text, .tb too), so that code written for
# multiprocessing.Pool recognises it.
RemoteTraceback = _mp_pool.RemoteTraceback


class PoolClosedError(PoolNotRunningError, ValueError):
    """Work given to a multicore.Pool after close() or terminate(). A
    ValueError, as multiprocessing.Pool raises there."""
