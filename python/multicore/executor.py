"""multicore.Executor: a concurrent.futures.Executor on the multicore pool.

    with multicore.Executor() as ex:
        futures = [ex.submit(fn, x) for x in items]
        for f in concurrent.futures.as_completed(futures): ...
        results = list(ex.map(fn, items, chunksize=64))

A submitted call waits, PENDING, in the executor's queue until the pool
has room: at most two tasks per worker, plus one, are handed to the pool at
once (each one Task of one part), as ProcessPoolExecutor keeps a few calls
queued for its workers. Handing a call over is what makes its future
RUNNING. submit() hands over at once when there is room; otherwise
whichever thread frees room does (the collector as tasks finish, or a
cancel()). cancel() of a pending future reports it done at once
(CANCELLED_AND_NOTIFIED: wait() and as_completed() see it); its call is
skipped.

The collector thread sleeps in wait_first() on the live list of the tasks
handed over (no timeout of its own: the worker that finishes a task wakes
it; a task handed over meanwhile is in the list it watches) and settles
their futures. Only the collector removes from that list, so the indices
wait_first() returns stay valid; a cancelled task stays in it, complete,
until the collector drops it (a cancel wakes no watcher: wait_first() sees
it when it looks at the list again, at the next completion or within its
50 ms slice). Settling checks the future's state under its
own condition and accepts losing to a cancel() (InvalidStateError). The
collector keeps nothing of a settled future or its result once it sleeps
again.

The collector thread holds the executor's state (_Collector), never the
executor: an executor dropped without shutdown() is collected, and its
thread exits once the calls it still owes are done, as
ProcessPoolExecutor's manager thread does. At interpreter exit (a
threading._register_atexit hook, which runs before multicore's own atexit
shutdown()) every executor's pending calls are run first, as the standard
library does.

Which pool: the process-wide one (if none runs, the executor starts it with
max_workers workers and stops it at shutdown()); the multicore.Pool given
as pool= (never stopped by the executor); or, with initializer= or
max_tasks_per_child=, a multicore.Pool of the executor's own, forked at the
first submit() as ProcessPoolExecutor forks its workers. An initializer
that fails there breaks the executor (logged, BrokenProcessPool from
submit()), as in the standard library.

Differences from ProcessPoolExecutor, by design (docs/executor.md lists
them all): cancel() also works on a RUNNING future (the worker running it
is stopped and replaced); a dead worker fails only its own future
(WorkerDiedError, a BrokenProcessPool) and the executor goes on.

This is glue over Task and wait_first (the C extension does the work).
"""

import concurrent.futures as _cf
import functools
import itertools
import threading
import weakref
from collections import deque
from concurrent.futures.process import BrokenProcessPool

from multicore import _multicore
from multicore._multicore import Task
from multicore.cluster import executor_pool as _cluster_pool, wait_first
from multicore.exceptions import (MulticoreError, PoolNotRunningError,
                                  RemoteTraceback, ResultUnpicklingError,
                                  WorkerInitError)
from multicore.mapping import _in_flight_limit, _pool_workers, _run_chunk

__all__ = ["Executor"]

_RUN_OPTIONS = ("serialization_format", "use_dill")  # keywords Task.run() takes

_PENDING = _cf._base.PENDING
_RUNNING = _cf._base.RUNNING
_FINISHED = _cf._base.FINISHED
_CANCELLED = (_cf._base.CANCELLED, _cf._base.CANCELLED_AND_NOTIFIED)
_LOGGER = _cf._base.LOGGER          # "concurrent.futures", as the stdlib logs

# A call's states (changed under its collector's lock).
_QUEUED = 0      # in the queue
_HANDING = 1     # taken from the queue, being handed to the pool
_WATCHED = 2     # its task is in the collector's list
_SETTLING = 3    # the collector reads its result
_DROPPED = 4     # cancelled: skipped, or its task cancelled
_DONE = 5

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
        self._call = None            # its _Call until settled or cancelled

    def cancel(self):
        with self._condition:
            if self._state == _FINISHED:
                return False
            if self._state in _CANCELLED:
                return True
            self._state = _cf._base.CANCELLED
            self._condition.notify_all()
            # Tell wait() and as_completed() now (CANCELLED_AND_NOTIFIED):
            # the executor skips this call, or stops its task, and never
            # settles this future.
            self.set_running_or_notify_cancel()
            call, self._call = self._call, None
        if call is not None:
            self._collector.forget(call)
        self._invoke_callbacks()
        return True


class _Call:
    """One submit(): its future, what to run, and where it is."""

    __slots__ = ("future", "fn", "args", "kwargs", "task", "state")

    def __init__(self, future, fn, args, kwargs):
        self.future = future
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.task = None
        self.state = _QUEUED

    def clear(self, state):
        self.future = self.fn = self.args = self.kwargs = self.task = None
        self.state = state


class _Collector:
    """An executor's calls, pending and handed over, and the thread that
    settles their futures."""

    def __init__(self, new_task, handle, starter=None):
        self.new_task = new_task         # Task, or a multicore.Pool's Task
        self.handle = handle             # that Pool's PoolHandle, or None
        self.starter = starter           # makes the executor's own Pool
        self.private_pool = None         # that Pool, closed at the end
        self.broken = False              # why the executor is broken
        self.broken_by = None            # the WorkerInitError that broke it
        self.start_lock = threading.Lock()
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        self.queue = deque()             # _Calls, pending (or dropped)
        self.watched = []                # Tasks handed over: wait_first's live list
        self.calls = []                  # their _Calls, beside watched
        self.in_flight = 0               # handed over or being handed over
        self.last_limit = 1
        self.shutdown = False            # shutdown() called
        self.dropped = False             # the executor was collected
        self.thread = None
        self.executor = None             # weakref to the executor

    def ensure_started(self):
        """Start the executor's own pool at the first submit(), or raise
        BrokenProcessPool if its initializer failed."""
        if self.starter is None and not self.broken:
            return
        with self.start_lock:
            if self.broken:
                raise BrokenProcessPool(self.broken) from self.broken_by
            if self.starter is None:
                return
            try:
                pool = self.starter()
            except WorkerInitError as e:
                self.break_for(e)
                raise BrokenProcessPool(self.broken) from e
            self.private_pool = pool
            self.handle = pool._handle
            self.new_task = pool.Task
            self.starter = None

    def break_for(self, error):
        """The executor's own workers cannot start: log the initializer's
        failure (as ProcessPoolExecutor's workers do) and refuse work."""
        _LOGGER.critical("Exception in initializer:\n%s", error)
        self.broken_by = error.with_traceback(None)
        self.broken = ("A process in the process pool failed its initializer; "
                       "the executor is not usable anymore (see the cause)")

    def limit(self):
        self.last_limit = _in_flight_limit(_pool_workers(self.handle))
        return self.last_limit

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

    def close_pool(self):
        pool, self.private_pool = self.private_pool, None
        if pool is not None:
            pool.close()

    # -- handing calls over (any thread) -----------------------------------

    def fill(self):
        """Hand pending calls to the pool while it has room."""
        try:
            limit = self.limit()
        except PoolNotRunningError as e:
            self.fail_pending(e)
            return
        while True:
            with self.lock:
                if self.in_flight >= limit or not self.queue:
                    return
                call = self.queue.popleft()
                if call.state != _QUEUED:
                    continue             # cancelled while pending
                call.state = _HANDING
                self.in_flight += 1
            self.hand_over(call)

    def hand_over(self, call):
        future, fn, args, kwargs = call.future, call.fn, call.args, call.kwargs
        call.args = call.kwargs = None
        if not _start(future):           # cancel() came first
            self.handed(call, None)
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
            self.handed(call, None)
            _settle(future, False, e.with_traceback(None))
            if not isinstance(e, Exception):
                raise
            return
        self.handed(call, task)

    def handed(self, call, task):
        """The hand-over ended: task is in the pool (or None)."""
        with self.lock:
            if task is not None and call.state == _HANDING:
                call.state = _WATCHED
                call.task = task
                self.watched.append(task)
                self.calls.append(call)
                task = None
            else:
                self.in_flight -= 1
                call.clear(_DONE)
            self.wakeup.notify()
        if task is not None:             # cancel() came during the hand-over
            task.cancel()

    def forget(self, call):
        """cancel() of the future of `call`: skip it, or stop its task."""
        task = None
        with self.lock:
            if call.state == _QUEUED:
                call.clear(_DROPPED)     # fill() skips it
            elif call.state == _HANDING:
                call.state = _DROPPED    # handed() cancels its task
            elif call.state == _WATCHED:
                # stays in the collector's list (complete) until it drops it
                call.state = _DROPPED
                call.future = call.fn = None
                task = call.task
                self.in_flight -= 1
            # _SETTLING: the collector reads its result; _settle() loses to us
        if task is not None:
            task.cancel()                # its part never runs, or is stopped
            self.fill()                  # there is room now

    def cancel_pending(self):
        with self.lock:
            pending = [call.future for call in self.queue if call.state == _QUEUED]
        for future in pending:
            future.cancel()

    def fail_pending(self, error):
        with self.lock:
            calls = [call for call in self.queue if call.state == _QUEUED]
            futures = [call.future for call in calls]
            for call in calls:
                call.clear(_DONE)
            self.queue.clear()
        for future in futures:
            if _start(future):
                _settle(future, False, error)

    # -- settling futures (collector thread) -------------------------------

    def run(self):
        try:
            while self.settle_some():
                pass
        finally:
            _collectors.discard(self)
            with self.start_lock:
                self.close_pool()

    def settle_some(self):
        """Wait for a task handed over and settle what finished; False once
        nothing is left to do. Keeps no reference to a settled future or
        its result once it returns (the thread then sleeps in here again)."""
        with self.lock:
            while not self.watched:
                if self.queue and self.in_flight < self.last_limit:
                    break                # pending calls to hand over
                if (self.shutdown or self.dropped or _global_shutdown) and \
                        not self.queue and self.in_flight == 0:
                    return False
                self.wakeup.wait()
            watched = self.watched
        if not watched:
            self.fill()
            return True
        try:
            done = wait_first(watched, None)
        except MulticoreError as e:      # the pool stopped, or no worker starts
            self.fail_all(e)
            return True
        self.settle(done)
        self.fill()
        return True

    def settle(self, done):
        with self.lock:
            taken = []
            for i in sorted(done, reverse=True):
                call = self.calls.pop(i)
                del self.watched[i]
                if call.state == _WATCHED:
                    call.state = _SETTLING
                    self.in_flight -= 1
                    taken.append(call)
                else:                    # cancelled: nothing to settle
                    call.clear(_DONE)
        for call in reversed(taken):
            _settle_call(call)

    def fail_all(self, error):
        """The pool stopped (or no worker can start): fail every call."""
        if isinstance(error, WorkerInitError) and self.private_pool is not None \
                and not self.broken:
            self.break_for(error)
            broken = BrokenProcessPool(self.broken)
            broken.__cause__ = error
            error = broken
        with self.lock:
            calls = [call for call in self.calls if call.state == _WATCHED]
            self.in_flight -= len(calls)
            futures = [call.future for call in calls]
            tasks = [call.task for call in calls]
            for call in self.calls:
                call.clear(_DONE)
            del self.calls[:], self.watched[:]
        for task in tasks:
            try:
                task.cancel()
            except RuntimeError:
                pass
        for future in futures:
            _settle(future, False, error)
        self.fail_pending(error)


def _start(future):
    """PENDING -> RUNNING; False if cancel() came first."""
    with future._condition:
        if future._state != _PENDING:
            return False
        return future.set_running_or_notify_cancel()


def _settle_call(call):
    # A frame of its own: nothing of the result stays referenced once the
    # future has it.
    future, task, fn = call.future, call.task, call.fn
    call.clear(_DONE)
    with future._condition:
        future._call = None
    ok, value = _outcome(task, fn)
    del task
    _settle(future, ok, value)


def _outcome(task, fn):
    """(True, result) or (False, exception) of a finished task."""
    try:
        return True, task.get(timeout=0)[0]
    except (MulticoreError, MemoryError) as e:
        # multicore's own (worker died, pool stopped, ...): its traceback
        # would only show (and keep alive) this frame
        return False, e.with_traceback(None)
    except BaseException as e:
        if isinstance(e.__cause__, RemoteTraceback):
            return False, e.with_traceback(None)   # the task's own exception
        # The result came back but does not unpickle here (even a
        # SystemExit while unpickling must not end this thread, or the
        # caller's): ProcessPoolExecutor gives BrokenProcessPool.
        error = ResultUnpicklingError(
            f"the result of {_name(fn)} could not be unpickled in the "
            f"caller ({type(e).__name__}: {e})")
        error.__cause__ = e
        return False, error


def _settle(future, ok, value):
    """Complete a future unless cancel() won the race (checked under the
    future's condition, and set_result() checks again under it)."""
    with future._condition:
        if future._state in _CANCELLED or future._state == _FINISHED:
            return
    try:
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
    except _cf.InvalidStateError:
        pass                             # cancelled meanwhile: not wanted


def _name(fn):
    module = getattr(fn, "__module__", None)
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if name is None:
        return repr(fn)
    return f"{module}.{name}" if module else name


def _own_pool(max_workers, initializer, initargs, max_tasks_per_child):
    from multicore.pool import Pool
    return Pool(max_workers, initializer=initializer, initargs=initargs,
                maxtasksperchild=max_tasks_per_child)


class Executor(_cf.Executor):
    """Executor(max_workers=None, mp_context=None, initializer=None,
    initargs=(), *, max_tasks_per_child=None, pool=None): see
    docs/executor.md."""

    def __init__(self, max_workers=None, mp_context=None, initializer=None,
                 initargs=(), *, max_tasks_per_child=None, pool=None):
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
        if max_tasks_per_child is not None:
            if isinstance(max_tasks_per_child, bool) or \
                    not isinstance(max_tasks_per_child, int):
                raise TypeError(f"max_tasks_per_child must be an integer, "
                                f"not {max_tasks_per_child!r}")
            if max_tasks_per_child <= 0:
                raise ValueError(f"max_tasks_per_child must be >= 1, "
                                 f"not {max_tasks_per_child}")
        if pool is not None and (max_workers is not None or initializer is not None
                                 or max_tasks_per_child is not None):
            raise ValueError("give pool, or max_workers, initializer and "
                             "max_tasks_per_child, not both")
        self._owns_pool = False
        if pool is None and initializer is None and max_tasks_per_child is None:
            pool = _cluster_pool()   # the process-wide pool when it is a cluster
        if initializer is not None or max_tasks_per_child is not None:
            # The workers of the process-wide pool may already run, without
            # this initializer or recycling: a pool of the executor's own,
            # forked at the first submit().
            state = _Collector(None, None, functools.partial(
                _own_pool, max_workers, initializer, tuple(initargs),
                max_tasks_per_child))
        elif pool is not None:
            state = _Collector(pool.Task, pool._handle)
        else:
            self._owns_pool = not _multicore.is_running()
            if self._owns_pool:
                _multicore.initialize(workers=max_workers)
            state = _Collector(Task, None)
        self._state = state
        # held by the state, which outlives the executor (a weakref held by
        # garbage alone would not call back)
        state.executor = weakref.ref(self, state.drop)

    def submit(self, fn, /, *args, **kwargs):
        state = self._state
        with state.lock:
            if state.broken:
                raise BrokenProcessPool(state.broken) from state.broken_by
            if state.shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if _global_shutdown:
                raise RuntimeError("cannot schedule new futures after "
                                   "interpreter shutdown")
        state.ensure_started()
        _pool_workers(state.handle)      # PoolNotRunningError if it stopped
        future = Future(state)
        call = future._call = _Call(future, fn, args, kwargs)
        with state.lock:
            if state.shutdown:           # shutdown() ran meanwhile
                call.clear(_DONE)
                refused = True
            else:
                state.queue.append(call)
                state.start()
                refused = False
        if refused:
            if state.thread is None:
                with state.start_lock:
                    state.close_pool()
            raise RuntimeError("cannot schedule new futures after shutdown")
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
            idle = state.thread is None
        if cancel_futures:
            state.cancel_pending()
        if idle:                         # no collector ever ran to close it
            with state.start_lock:
                state.close_pool()
        if wait:
            state.join()
            if self._owns_pool:
                _multicore.shutdown()
        # without wait, the collector runs what is pending and then closes
        # a pool of the executor's own; a process-wide pool this executor
        # started stops at exit (or at multicore.shutdown())

    # -- what ProcessPoolExecutor has, and CPython's tests look at ---------

    @property
    def _broken(self):
        """False, or why the executor is broken (its initializer failed)."""
        return self._state.broken

    @property
    def _executor_manager_thread(self):
        """The thread that settles the futures (None before the first submit)."""
        return self._state.thread


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
