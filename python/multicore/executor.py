"""multicore.Executor: a concurrent.futures.Executor on the multicore pool.

    with multicore.Executor() as ex:
        futures = [ex.submit(fn, x) for x in items]
        for f in concurrent.futures.as_completed(futures): ...
        results = list(ex.map(fn, items, chunksize=64))

Each submit() is one Task of one part; a collector thread sleeps in
wait_first() (woken by the workers, no polling) and settles futures as
their tasks finish. It watches the oldest pending tasks only: the pool runs
tasks first in, first out, so the next to finish are among them.

Differences from ProcessPoolExecutor, by design: a Future can be cancelled
even while its task runs (the worker running it is stopped and replaced),
and shutdown(cancel_futures=True) cancels every unfinished future. The
executor uses the process-wide pool (if none runs, it starts one with
max_workers workers and stops it at shutdown()), or the multicore.Pool
given as pool= (which it never stops).

This is glue over Task and wait_first (the C extension does the work).
"""

import concurrent.futures as _cf
import itertools
import threading
from collections import deque

from multicore import _multicore
from multicore._multicore import Task, wait_first
from multicore.exceptions import PoolNotRunningError
from multicore.mapping import _run_chunk

__all__ = ["Executor"]

_WINDOW = 64  # pending tasks the collector watches at once


class _Future(_cf.Future):
    """A Future whose cancel() also stops a running task."""

    def __init__(self, executor):
        super().__init__()
        self._executor = executor

    def cancel(self):
        with self._condition:
            if self._state == _cf._base.FINISHED:
                return False
        self._executor._forget(self)     # drops the Task: cancels its part
        return super().cancel()


class Executor(_cf.Executor):
    def __init__(self, max_workers: "int | None" = None, *,
                 pool: "object | None" = None) -> None:
        if max_workers is not None and (isinstance(max_workers, bool) or
                                        not isinstance(max_workers, int) or
                                        max_workers < 1):
            raise ValueError(f"max_workers must be a positive int or None, "
                             f"not {max_workers!r}")
        if pool is not None:
            if max_workers is not None:
                raise ValueError("give max_workers or pool, not both")
            self._new_task = pool.Task          # a multicore.Pool's
            self._owns_pool = False
        else:
            self._new_task = Task
            self._owns_pool = _multicore._zygote_pid() is None
            if self._owns_pool:
                _multicore.initialize(workers=max_workers)
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._pending = deque()          # (future, task) in submission order
        self._shutdown = False
        self._collector = threading.Thread(target=self._collect, daemon=True,
                                           name="multicore-executor")
        self._collector.start()

    # -- submitting ------------------------------------------------------

    def submit(self, fn, /, *args, **kwargs):
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
        task = self._new_task()
        if task is None:
            raise PoolNotRunningError("the multicore pool is not running")
        task.run(fn, *args, **kwargs)
        future = _Future(self)
        with self._lock:
            self._pending.append((future, task))
            self._wakeup.notify()
        return future

    def map(self, fn, *iterables, timeout=None, chunksize=1):
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1")
        if chunksize == 1:
            return super().map(fn, *iterables, timeout=timeout)
        chunks = _chunks(zip(*iterables), chunksize)
        results = super().map(_run_chunk_results, itertools.repeat(fn),
                              chunks, timeout=timeout)
        return itertools.chain.from_iterable(results)

    # -- settling futures (collector thread) -------------------------------

    def _collect(self):
        while True:
            with self._lock:
                while not self._pending and not self._shutdown:
                    self._wakeup.wait()
                if not self._pending and self._shutdown:
                    return
                window = list(itertools.islice(self._pending, _WINDOW))
            try:
                done = wait_first([task for _, task in window], timeout=0.1)
            except PoolNotRunningError as e:
                self._fail_all(e)
                return
            for i in done:
                future, task = window[i]
                with self._lock:
                    try:
                        self._pending.remove((future, task))
                    except ValueError:
                        continue         # cancelled meanwhile
                try:
                    result = task.get(timeout=0)[0]
                except BaseException as e:   # the task's own exception
                    if not future.cancelled():
                        future.set_exception(e)
                else:
                    if not future.cancelled():
                        future.set_result(result)

    def _forget(self, future):
        with self._lock:
            for entry in self._pending:
                if entry[0] is future:
                    self._pending.remove(entry)
                    entry[1].cancel()   # its part never runs, or is stopped
                    break

    def _fail_all(self, error):
        with self._lock:
            pending, self._pending = list(self._pending), deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(error)

    # -- shutting down -----------------------------------------------------

    def shutdown(self, wait=True, *, cancel_futures=False):
        with self._lock:
            self._shutdown = True
            self._wakeup.notify()
            cancelled = list(self._pending) if cancel_futures else []
        for future, _ in cancelled:
            future.cancel()
        if wait:
            self._collector.join()
            if self._owns_pool:
                _multicore.shutdown()
        # without wait, a pool this executor started stops at exit (or at
        # multicore.shutdown()), once the futures no longer need it


def _chunks(iterator, size):
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def _run_chunk_results(fn, chunk):
    """Runs in a worker: fn(*args) over a chunk of argument tuples."""
    return _run_chunk(fn, chunk, True)[0]
