"""multicore.Executor: a concurrent.futures.Executor on the multicore pool.

    with multicore.Executor() as ex:
        futures = [ex.submit(fn, x) for x in items]
        for f in concurrent.futures.as_completed(futures): ...
        results = list(ex.map(fn, items, chunksize=64))

A submitted call waits, PENDING, in the executor's queue until the pool
has room: at most two tasks per worker, plus one, are handed to the pool at
once (each one Task of one part), as ProcessPoolExecutor keeps a few calls
queued for its workers. Handing a call over is what makes its future
RUNNING (set_running_or_notify_cancel(): a future cancelled while pending
is skipped and reported done). submit() hands over at once when there is
room; otherwise the collector thread does as tasks finish. The collector
sleeps in wait_first() on the tasks handed over (woken by the workers) and
settles their futures.

The collector thread holds the executor's state (_Collector), never the
executor: an executor dropped without shutdown() is collected, and its
thread exits once the calls it still owes are done, as
ProcessPoolExecutor's manager thread does. At interpreter exit (a
threading._register_atexit hook, which runs before multicore's own atexit
shutdown()) every executor's pending calls are run first, as the standard
library does.

Differences from ProcessPoolExecutor, by design (docs/executor.md lists
them all): cancel() also works on a RUNNING future (the worker running it
is stopped and replaced). The executor uses the process-wide pool (if none
runs, it starts one with max_workers workers and stops it at shutdown()),
or the multicore.Pool given as pool= (which it never stops), or, with
initializer=, a multicore.Pool of its own.

This is glue over Task and wait_first (the C extension does the work).
"""

import concurrent.futures as _cf
import functools
import itertools
import threading
import weakref
from collections import deque

from multicore import _multicore
from multicore._multicore import Task
from multicore.cluster import executor_pool as _cluster_pool, wait_first
from multicore.exceptions import PoolNotRunningError
from multicore.mapping import _in_flight_limit, _pool_workers, _run_chunk

__all__ = ["Executor"]

_RUN_OPTIONS = ("serialization_format", "use_dill")  # keywords Task.run() takes
_SLICE = 0.05   # the collector looks at newly handed-over tasks this often

_PENDING = _cf._base.PENDING
_RUNNING = _cf._base.RUNNING
_FINISHED = _cf._base.FINISHED
_CANCELLED = (_cf._base.CANCELLED, _cf._base.CANCELLED_AND_NOTIFIED)

# Set at interpreter exit; submit() refuses work from then on, as the
# standard library's executors do.
_global_shutdown = False
_collectors = weakref.WeakSet()   # those with a live thread


def _python_exit():
    global _global_shutdown
    _global_shutdown = True
    collectors = list(_collectors)
    for collector in collectors:
        collector.wake()
    for collector in collectors:
        collector.join()


threading._register_atexit(_python_exit)


class Future(_cf.Future):
    """A concurrent.futures.Future whose cancel() also stops a running task."""

    def __init__(self, collector):
        super().__init__()
        self._collector = collector

    def cancel(self):
        with self._condition:
            if self._state == _FINISHED:
                return False
            if self._state in _CANCELLED:
                return True
            was_running = self._state == _RUNNING
            self._state = _cf._base.CANCELLED
            self._condition.notify_all()
        unqueued = self._collector.forget(self)  # a running task is stopped
        if was_running or unqueued:
            # Nobody else will call set_running_or_notify_cancel() (which
            # tells wait() and as_completed()); otherwise the collector,
            # about to hand the call over, does and skips it.
            self.set_running_or_notify_cancel()
        self._invoke_callbacks()
        return True


class _Collector:
    """An executor's calls, pending and handed over, and the thread that
    hands them over and settles their futures."""

    def __init__(self, new_task, handle, private_pool):
        self.new_task = new_task         # Task, or a multicore.Pool's Task
        self.handle = handle             # that Pool's PoolHandle, or None
        self.private_pool = private_pool  # a multicore.Pool closed at the end
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.queue = deque()             # [future, fn, args, kwargs], pending
        self.running = deque()           # (future, task), handed over
        self.in_flight = 0               # handed over or being handed over
        self.shutdown = False            # shutdown() called
        self.dropped = False             # the executor was collected
        self.thread = None
        self.executor = None             # weakref to the executor

    def limit(self):
        return _in_flight_limit(_pool_workers(self.handle))

    def start(self):                     # under self.lock
        if self.thread is None:
            self.thread = threading.Thread(target=self.run, daemon=True,
                                           name="multicore-executor")
            self.thread.start()
            _collectors.add(self)

    def wake(self):
        with self.lock:
            self.wakeup.notify()

    def drop(self, _ref):
        with self.lock:
            self.dropped = True
            self.wakeup.notify()

    def join(self):
        thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    # -- handing calls over ------------------------------------------------

    def fill(self):
        """Hand pending calls to the pool while it has room."""
        try:
            limit = self.limit()
        except PoolNotRunningError as e:
            self.fail_all(e)
            return
        while True:
            with self.lock:
                if self.in_flight >= limit or not self.queue:
                    return
                item = self.queue.popleft()
                self.in_flight += 1
            self.hand_over(*item)

    def hand_over(self, future, fn, args, kwargs):
        if not future.set_running_or_notify_cancel():
            with self.lock:              # cancelled while pending
                self.in_flight -= 1
            return
        try:
            task = self.new_task()
            if task is None:
                raise PoolNotRunningError("the multicore pool is not running")
            if any(key in kwargs for key in _RUN_OPTIONS):
                # Task.run() would take these as its own options.
                task.run(_call, fn, args, kwargs)
            else:
                task.run(fn, *args, **kwargs)
        except BaseException as e:       # fn or an argument cannot be sent
            with self.lock:
                self.in_flight -= 1
            _settle(future, False, e.with_traceback(None))
            if not isinstance(e, Exception):
                raise
            return
        with self.lock:
            self.running.append((future, task))
            self.start()
            self.wakeup.notify()
        if future.cancelled():           # cancel() came while handing over
            self.forget(future)

    # -- settling futures (collector thread) -------------------------------

    def run(self):
        try:
            while self.settle_some():
                pass
        finally:
            _collectors.discard(self)
            if self.private_pool is not None:
                self.private_pool.close()

    def settle_some(self):
        """Hand over and settle what can be; False once nothing is left.
        Keeps no reference to a settled future or its result once it
        returns (the thread then sleeps in here again)."""
        with self.lock:
            while not self.running:
                if self.queue and self.in_flight == 0:
                    break                # pending calls to hand over
                if (self.shutdown or self.dropped or _global_shutdown) and \
                        not self.queue and self.in_flight == 0:
                    return False
                self.wakeup.wait()
        self.fill()
        with self.lock:
            window = list(self.running)
        if not window:
            return True
        try:
            done = wait_first([task for _, task in window], timeout=_SLICE)
        except PoolNotRunningError as e:
            self.fail_all(e)
            return True
        for i in done:
            future, task = window[i]
            with self.lock:
                try:
                    self.running.remove((future, task))
                except ValueError:
                    continue             # cancelled meanwhile: forget() had it
                self.in_flight -= 1
            try:
                result = task.get(timeout=0)[0]
            except BaseException as e:   # the task's own exception
                # its traceback would only show (and keep alive) this frame;
                # the worker's is its __cause__
                _settle(future, False, e.with_traceback(None))
            else:
                _settle(future, True, result)
        return True

    def forget(self, future):
        """Drop a cancelled future's call: True if it was still pending."""
        with self.lock:
            for item in self.queue:
                if item[0] is future:
                    self.queue.remove(item)
                    return True
            for entry in self.running:
                if entry[0] is future:
                    self.running.remove(entry)
                    self.in_flight -= 1
                    entry[1].cancel()    # its part never runs, or is stopped
                    break
        return False

    def cancel_pending(self):
        with self.lock:
            pending = [item[0] for item in self.queue]
        for future in pending:
            future.cancel()

    def fail_all(self, error):
        with self.lock:
            pending = [item[0] for item in self.queue]
            running = [future for future, _ in self.running]
            self.in_flight -= len(self.running)
            self.queue.clear()
            self.running.clear()
        for future in pending:
            if future.set_running_or_notify_cancel():
                _settle(future, False, error)
        for future in running:
            _settle(future, False, error)


def _settle(future, ok, value):
    """Complete a future unless cancel() won the race (set_result() checks
    the state under the future's own condition)."""
    try:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    except _cf.InvalidStateError:
        pass                             # cancelled: the result is not wanted


class Executor(_cf.Executor):
    """Executor(max_workers=None, mp_context=None, initializer=None,
    initargs=(), *, pool=None): see docs/executor.md."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None,
                 initargs=(), *, pool=None):
        if max_workers is not None:
            if isinstance(max_workers, bool) or not isinstance(max_workers, int):
                raise TypeError(f"max_workers must be an int or None, "
                                f"not {max_workers!r}")
            if max_workers <= 0:
                raise ValueError(f"max_workers must be greater than 0, "
                                 f"not {max_workers}")
        if mp_context is not None and mp_context.get_start_method() != "fork":
            raise ValueError(
                f"multicore forks its workers once, from the program as it is "
                f"then: mp_context must be None or a 'fork' context, not "
                f"{mp_context.get_start_method()!r}")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if pool is not None and (max_workers is not None or initializer is not None):
            raise ValueError("give pool, or max_workers and initializer, not both")
        private_pool = None
        self._owns_pool = False
        if pool is None and initializer is None:
            pool = _cluster_pool()   # the process-wide pool when it is a cluster
        if initializer is not None:
            # The workers of the process-wide pool may already run, without
            # this initializer: a pool of the executor's own.
            from multicore.pool import Pool
            pool = private_pool = Pool(max_workers, worker_init=functools.partial(
                initializer, *initargs))
        if pool is not None:
            state = _Collector(pool.Task, pool._handle, private_pool)
        else:
            self._owns_pool = _multicore._zygote_pid() is None
            if self._owns_pool:
                _multicore.initialize(workers=max_workers)
            state = _Collector(Task, None, None)
        self._state = state
        # held by the state, which outlives the executor (a weakref held by
        # garbage alone would not call back)
        state.executor = weakref.ref(self, state.drop)

    def submit(self, fn, /, *args, **kwargs):
        state = self._state
        with state.lock:
            if state.shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _global_shutdown:
                raise RuntimeError("cannot schedule new futures after "
                                   "interpreter shutdown")
        _pool_workers(state.handle)      # PoolNotRunningError if it stopped
        future = Future(state)
        with state.lock:
            state.queue.append([future, fn, args, kwargs])
            state.start()
        state.fill()
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

    def shutdown(self, wait=True, *, cancel_futures=False):
        state = self._state
        with state.lock:
            state.shutdown = True
            state.wakeup.notify()
            private = state.private_pool if state.thread is None else None
        if cancel_futures:
            state.cancel_pending()
        if private is not None:          # no collector ever ran to close it
            private.close()
        if wait:
            state.join()
            if self._owns_pool:
                _multicore.shutdown()
        # without wait, the collector runs what is pending and then closes
        # a pool of the executor's own; a process-wide pool this executor
        # started stops at exit (or at multicore.shutdown())


def _call(fn, args, kwargs):
    """Runs in a worker: fn(*args, **kwargs), for keywords Task.run() would
    take as its own."""
    return fn(*args, **kwargs)


def _chunks(iterator, size):
    while True:
        chunk = list(itertools.islice(iterator, size))
        if not chunk:
            return
        yield chunk


def _run_chunk_results(fn, chunk):
    """Runs in a worker: fn(*args) over a chunk of argument tuples."""
    return _run_chunk(fn, chunk, True)[0]
