"""Exceptions raised by multicore.

Every error multicore itself raises is a MulticoreError. A task's own
exception is re-raised in the caller as its original type, with the
worker's traceback attached as ``__cause__`` (a RemoteTraceback), as
concurrent.futures does.
"""

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
    "RemoteTraceback",
]


class MulticoreError(Exception):
    """Base class of multicore's errors."""


class TimeoutExceededError(MulticoreError):
    """Task.get() waited longer than its timeout."""


class NoAvailableInputBufferError(MulticoreError):
    """Kept from multicore 0.1.1 for compatibility; no longer raised (the
    queue now applies backpressure instead of running out of buffers)."""


class InputBufferTooSmallError(MulticoreError):
    """Kept from multicore 0.1.1 for compatibility; no longer raised
    (there are no fixed-size buffers any more)."""


class TaskCompleteError(MulticoreError):
    """run() or get() on a task whose get() has already finished."""


class WorkerDiedError(MulticoreError):
    """The worker process running a task died (signal or exit)."""

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


class CallableNotFoundError(MulticoreError):
    """The callable does not exist in the workers (defined after
    initialize(); pass use_dill=True to send it by value)."""


class ArgumentsUnpicklingError(MulticoreError):
    """A task's arguments could not be unpickled in a worker."""


class WorkerInitError(MulticoreError):
    """worker_init raised in a worker; the message holds its traceback."""


class RemoteTraceback(Exception):
    """The formatted traceback of an exception raised in a worker; set as
    the ``__cause__`` of the exception re-raised in the caller."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb
