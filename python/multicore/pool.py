"""multicore.Pool: a drop-in for multiprocessing.Pool, on a pool of its own.

    with multicore.Pool(4, initializer=connect, maxtasksperchild=100) as pool:
        squares = pool.map(square, range(1000))
        r = pool.apply_async(fn, (x,), callback=print)
        r.get(timeout=10)

Pool(processes=None, initializer=None, initargs=(), maxtasksperchild=None)
takes multiprocessing.Pool's arguments and multicore's own keywords
(workers=, worker_init=, worker_exit=, shared_memory=); its methods mean
what multiprocessing's mean (docs/pool.md lists the differences). Each Pool
runs its own zygote and workers beside the process-wide pool of
initialize(); pool.Task() and pool.Executor() still give multicore's APIs
on it.

Glue over the C types PoolHandle and Task. One handler thread per pool (the
first asynchronous call starts it) settles results: it sleeps in
wait_first() on the live list of tasks in flight (wait_first reads the list
again after every completion, so tasks appended meanwhile are seen), and
feeds the queued jobs' next parts as room frees up. Submitting callers feed
too, so a new task never waits for a completion. The thread holds the
_Core, never the Pool, so a dropped Pool is collected (and terminated).
"""

import atexit
import functools
import itertools
import pickle
import sys
import threading
import traceback
import warnings
import weakref
from collections import deque

from multicore import _multicore
from multicore import cluster as _cluster
from multicore.cluster import wait_first
from multicore.exceptions import (PoolClosedError, PoolNotRunningError,
                                  TimeoutExceededError)
from multiprocessing.pool import MaybeEncodingError

__all__ = ["Pool", "ApplyResult", "AsyncResult", "MapResult", "IMapIterator",
           "IMapUnorderedIterator"]

# multiprocessing.pool's state names (its tests set pool._state to them)
RUN, CLOSE, TERMINATE = "RUN", "CLOSE", "TERMINATE"

# Parts in flight per worker: well under the engine's queue (256 per
# worker), so a submit never blocks, and enough that workers never wait
# for the handler thread.
_IN_FLIGHT_PER_WORKER = 32


def _apply_call(fn, args, kwds):
    """Runs in a worker: one apply()."""
    return _Encoded(fn(*args, **kwds))


def _chunk_call(fn, items, star):
    """Runs in a worker: fn over a chunk of map/imap."""
    if star:
        return _Encoded([fn(*item) for item in items])
    return _Encoded([fn(item) for item in items])


class _Encoded:
    """A result on its way back from a worker. Its pickling catches what
    cannot be pickled as multiprocessing does: MaybeEncodingError(error,
    value) is then the task's failure, and the worker lives on. The value's
    pickle travels as bytes, its large buffers still out of band; the
    caller receives the value itself."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __reduce_ex__(self, protocol):
        buffers = []
        try:
            data = pickle.dumps(self.value, protocol=5,
                                buffer_callback=buffers.append)
        except Exception as e:
            raise MaybeEncodingError(e, self.value) from None
        return _decoded, (data, buffers)


def _decoded(data, buffers):
    return pickle.loads(data, buffers=buffers)


def _report(what):
    """A callback raised: print it (as an exception in a thread is) and go on."""
    print(f"Exception in multicore.Pool {what}:", file=sys.stderr)
    traceback.print_exc()


class _Core:
    """The state a Pool and its handler thread share."""

    def __init__(self, handle, workers):
        self.handle = handle
        self.state = RUN
        # Reentrant: a Pool collected by a garbage collection that runs in
        # the handler thread while it holds the lock terminates the pool.
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.feed_lock = threading.Lock()
        self.jobs = deque()          # jobs with parts still to submit, FIFO
        self.watched = []            # Tasks in flight (wait_first's live list)
        self.meta = []               # (job, part index), beside watched
        self.limit = _IN_FLIGHT_PER_WORKER * workers
        self.thread = None

    # -- submitting --------------------------------------------------------

    def submit(self, job):
        with self.lock:
            if self.state != RUN:
                raise PoolClosedError("Pool not running (this multicore.Pool "
                                      "is closed or terminated)")
            self.jobs.append(job)
            if self.thread is None:
                self.thread = threading.Thread(target=self._handler, daemon=True,
                                               name="multicore-pool")
                self.thread.start()
        self.feed()
        return job

    def feed(self):
        """Submit the queued jobs' next parts while there is room."""
        with self.feed_lock:
            while True:
                with self.lock:
                    if (self.state == TERMINATE or not self.jobs or
                            len(self.watched) >= self.limit):
                        self.cond.notify_all()
                        return
                    job = self.jobs[0]
                try:
                    part = job._next_part()
                except BaseException as e:     # the input iterable raised
                    job._source_failed(e)
                    part = None
                if part is None:
                    with self.lock:
                        if self.jobs and self.jobs[0] is job:
                            self.jobs.popleft()
                    job._exhausted()
                    continue
                index, fn, args, use_dill = part
                del part
                try:
                    task = self.handle.task()
                    task.run(fn, *args, use_dill=use_dill)
                except BaseException as e:     # unpicklable, pool stopped, ...
                    job._set(index, False, e)
                    continue
                finally:
                    del args
                with self.lock:
                    terminated = self.state == TERMINATE
                    if not terminated:
                        self.watched.append(task)
                        self.meta.append((job, index))
                if terminated:          # terminate() ran while we submitted
                    task.cancel()
                    job._set(index, False, _terminated())
                del task, job

    # -- the handler thread ------------------------------------------------

    def _handler(self):
        try:
            self._settle_loop()
        finally:
            if self.state != TERMINATE:
                self._stop()

    def _settle_loop(self):
        while True:
            self.feed()
            with self.lock:
                while not self.watched:
                    if self.state == TERMINATE or (self.state == CLOSE and
                                                   not self.jobs):
                        return
                    self.cond.wait()
                watched = self.watched
            try:
                done = wait_first(watched, None)
            except PoolNotRunningError as e:   # terminated meanwhile
                self._fail_watched(e)
                return
            del watched
            self._settle(done)

    def _settle(self, done):
        # A frame of its own: nothing of the results stays referenced once
        # they are handed over (the handler then sleeps a long time).
        with self.lock:
            settled = [(self.watched[i], *self.meta[i]) for i in done]
            for i in sorted(done, reverse=True):
                del self.watched[i]
                del self.meta[i]
            terminated = self.state == TERMINATE
        for task, job, index in settled:
            if terminated:
                job._set(index, False, _terminated())
                continue
            try:
                value = task.get(timeout=0)[0]
            except BaseException as e:     # the task's own exception
                job._set(index, False, e)
            else:
                job._set(index, True, value)

    def _fail_watched(self, error):
        with self.lock:
            meta, self.meta, self.watched = self.meta, [], []
        for job, index in meta:
            job._set(index, False, error)

    def _stop(self):
        self.handle.close()

    # -- close / terminate / join -----------------------------------------

    def close(self):
        with self.lock:
            if self.state == RUN:
                self.state = CLOSE
            thread = self.thread
            self.cond.notify_all()
        if thread is None:
            self._stop()        # nothing was ever queued: stop at once

    def terminate(self):
        with self.lock:
            self.state = TERMINATE
            jobs, self.jobs = list(self.jobs), deque()
            tasks = list(self.watched)
            thread = self.thread
            self.cond.notify_all()
        for task in tasks:
            try:
                task.cancel()   # queued parts never run; running ones are stopped
            except RuntimeError:
                pass            # the handler is reading its result right now
        del tasks
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._fail_watched(_terminated())
        for job in jobs:
            job._abandon(_terminated())
        self._stop()

    def join(self):
        with self.lock:
            if self.state == RUN:
                raise ValueError("Pool is still running")
            thread = self.thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self._stop()


def _terminated():
    return PoolClosedError("the multicore.Pool was terminated before this "
                           "task finished")


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------

class ApplyResult:
    """The result of apply_async(): multiprocessing.pool.AsyncResult."""

    def __init__(self, callback=None, error_callback=None):
        self._event = threading.Event()
        self._callback = callback
        self._error_callback = error_callback
        self._success = None
        self._value = None

    def ready(self):
        return self._event.is_set()

    def successful(self):
        if not self.ready():
            raise ValueError(f"{self!r} not ready")
        return self._success

    def wait(self, timeout=None):
        self._event.wait(timeout)

    def get(self, timeout=None):
        self.wait(timeout)
        if not self.ready():
            raise TimeoutExceededError(
                f"AsyncResult.get(): timeout of {timeout} seconds exceeded")
        if self._success:
            return self._value
        raise self._value

    def _finish(self, success, value):
        self._success, self._value = success, value
        try:
            if success and self._callback is not None:
                self._callback(value)
            elif not success and self._error_callback is not None:
                self._error_callback(value)
        except BaseException:
            _report("callback")
        self._callback = self._error_callback = None
        self._event.set()

    # -- the job interface the _Core feeds ----------------------------------

    def _init_apply(self, fn, args, kwds, use_dill):
        self._part = (0, _apply_call, (fn, tuple(args), dict(kwds)), use_dill)

    def _next_part(self):
        part, self._part = self._part, None
        return part

    def _source_failed(self, error):      # pragma: no cover (no source)
        self._finish(False, error)

    def _exhausted(self):
        pass

    def _set(self, index, success, value):
        self._finish(success, value)

    def _abandon(self, error):
        if not self.ready():
            self._finish(False, error)


AsyncResult = ApplyResult


class _ChunkedJob:
    """Parts cut from an iterable: chunk i is part i. Counts what is in
    flight, so that the job knows when its last part has settled."""

    def _init_chunks(self, fn, iterable, chunksize, star, use_dill):
        self._fn, self._star, self._use_dill = fn, star, use_dill
        self._items = iter(iterable)
        self._chunksize = chunksize
        self._created = 0
        self._settled = 0
        self._done_creating = False
        self._source_error = None

    def _next_part(self):
        chunk = list(itertools.islice(self._items, self._chunksize))
        if not chunk:
            return None
        index = self._created
        self._created += 1
        return index, _chunk_call, (self._fn, chunk, self._star), self._use_dill

    def _source_failed(self, error):
        # the partly read chunk is dropped: the error stands in its place
        self._source_error = error

    def _exhausted(self):
        self._items = None
        self._done_creating = True
        self._check_complete()

    def _abandon(self, error):
        if self._source_error is None:
            self._source_failed(error)
        self._exhausted()


class MapResult(_ChunkedJob, ApplyResult):
    """The result of map_async()/starmap_async(): every chunk's results, in
    order, or the first failure (raised once every chunk has finished)."""

    def __init__(self, fn, iterable, chunksize, star, use_dill,
                 callback=None, error_callback=None):
        ApplyResult.__init__(self, callback, error_callback)
        self._init_chunks(fn, iterable, chunksize, star, use_dill)
        self._chunks = {}
        self._error = None
        self._lock = threading.RLock()   # the handler and a feeder may settle

    def _next_part(self):
        if self._chunksize == 0:
            return None
        return _ChunkedJob._next_part(self)

    def _source_failed(self, error):
        _ChunkedJob._source_failed(self, error)
        if self._error is None:
            self._error = error

    def _set(self, index, success, value):
        with self._lock:
            self._settled += 1
            if success:
                self._chunks[index] = value
            elif self._error is None:
                self._error = value
            self._check_complete()

    def _check_complete(self):
        with self._lock:
            if (self.ready() or not self._done_creating or
                    self._settled < self._created):
                return
            self._complete()

    def _complete(self):
        if self._error is not None:
            error, self._error, self._chunks = self._error, None, None
            self._finish(False, error)
        else:
            chunks, self._chunks = self._chunks, None
            values = [v for i in range(self._created) for v in chunks[i]]
            del chunks
            self._finish(True, values)


class IMapIterator(_ChunkedJob):
    """imap()'s iterator: results in input order; a failed chunk raises at
    its place, and an error of the input iterable after the results of the
    items read before it."""

    _ordered = True

    def __init__(self, fn, iterable, chunksize, star, use_dill):
        self._init_chunks(fn, iterable, chunksize, star, use_dill)
        self._cond = threading.Condition(threading.Lock())
        self._results = {}           # index -> (success, value); or a deque
        self._next_index = 0
        self._items_out = deque()    # the current chunk's remaining items
        self._finished = False

    def __iter__(self):
        return self

    def _set(self, index, success, value):
        with self._cond:
            self._settled += 1
            self._store(index, (success, value))
            self._cond.notify_all()

    def _store(self, index, item):
        self._results[index] = item

    def _take(self):
        return self._results.pop(self._next_index, None)

    def _check_complete(self):
        with self._cond:
            self._cond.notify_all()

    def next(self, timeout=None):
        if self._items_out:
            return self._items_out.popleft()
        with self._cond:
            while True:
                item = self._take()
                if item is not None:
                    self._next_index += 1
                    success, value = item
                    if success:
                        self._items_out.extend(value)
                        if self._items_out:
                            return self._items_out.popleft()
                        continue
                    raise value
                if self._done_creating and self._next_index >= self._created:
                    if self._source_error is not None:
                        error, self._source_error = self._source_error, None
                        raise error
                    raise StopIteration
                if not self._cond.wait(timeout):
                    raise TimeoutExceededError(
                        f"IMapIterator.next(): timeout of {timeout} seconds "
                        f"exceeded")

    __next__ = next


class IMapUnorderedIterator(IMapIterator):
    """imap_unordered()'s iterator: results as their chunks finish."""

    def __init__(self, *args):
        IMapIterator.__init__(self, *args)
        self._results = deque()

    def _store(self, index, item):
        self._results.append(item)

    def _take(self):
        return self._results.popleft() if self._results else None


# ---------------------------------------------------------------------------
# The Pool
# ---------------------------------------------------------------------------

class _Worker:
    """A worker as multiprocessing's tests look at one (pool._pool)."""

    def __init__(self, pid, handle):
        self.pid = pid
        self._handle = handle

    def is_alive(self):
        return self._handle.running and self.pid in self._handle._worker_pids()

    def __repr__(self):
        return f"<multicore worker pid={self.pid}>"


class Pool:
    def __init__(self, processes=None, initializer=None, initargs=(),
                 maxtasksperchild=None, *, workers=None, worker_init=None,
                 worker_exit=None, shared_memory=None, cluster=None):
        self._state = RUN   # before anything can fail: __del__ reads it
        self._core = None
        if processes is not None and workers is not None:
            raise ValueError("give processes or workers, not both")
        if processes is None:
            processes = workers
        if initializer is not None:
            if not callable(initializer):
                raise TypeError("initializer must be a callable")
            if worker_init is not None:
                raise ValueError("give initializer or worker_init, not both")
            worker_init = functools.partial(initializer, *initargs)
        if cluster is None:
            cluster = _cluster.default_pool_target()
        if cluster is not None:   # a cluster session of its own (docs/cluster.md)
            self._handle = _cluster.pool_session(cluster, processes, worker_init,
                                                 worker_exit, shared_memory,
                                                 maxtasksperchild)
        else:
            self._handle = _multicore.PoolHandle(processes, worker_init, worker_exit,
                                                 shared_memory, maxtasksperchild)
        self._core = _Core(self._handle, self._handle.workers)
        _live_cores.add(self._core)

    # -- multicore's own API ------------------------------------------------

    @property
    def workers(self):
        """Number of workers (0 once stopped)."""
        return self._handle.workers

    def Task(self, max_load_average=None):
        """A Task of this pool (see multicore.Task)."""
        return self._handle.task(max_load_average)

    def Executor(self):
        """A concurrent.futures.Executor on this pool (see multicore.Executor)."""
        from multicore.executor import Executor
        return Executor(pool=self)

    def stats(self):
        """This pool's counters (see multicore.stats())."""
        return self._handle.stats()

    # -- multiprocessing.Pool's API ------------------------------------------

    def apply(self, func, args=(), kwds={}):
        return self.apply_async(func, args, kwds).get()

    def apply_async(self, func, args=(), kwds={}, callback=None,
                    error_callback=None, *, use_dill=False):
        result = ApplyResult(callback, error_callback)
        result._init_apply(func, args, kwds, use_dill)
        return self._core.submit(result)

    def map(self, func, iterable, chunksize=None, *, timeout=None, use_dill=False):
        return self._map_async(func, iterable, chunksize, False, use_dill).get(timeout)

    def starmap(self, func, iterable, chunksize=None, *, timeout=None,
                use_dill=False):
        return self._map_async(func, iterable, chunksize, True, use_dill).get(timeout)

    def map_async(self, func, iterable, chunksize=None, callback=None,
                  error_callback=None, *, use_dill=False):
        return self._map_async(func, iterable, chunksize, False, use_dill,
                               callback, error_callback)

    def starmap_async(self, func, iterable, chunksize=None, callback=None,
                      error_callback=None, *, use_dill=False):
        return self._map_async(func, iterable, chunksize, True, use_dill,
                               callback, error_callback)

    def imap(self, func, iterable, chunksize=1, *, use_dill=False):
        self._check_running()
        _check_chunksize(chunksize)
        return self._core.submit(IMapIterator(func, iterable, chunksize, False,
                                              use_dill))

    def imap_unordered(self, func, iterable, chunksize=1, *, use_dill=False):
        self._check_running()
        _check_chunksize(chunksize)
        return self._core.submit(IMapUnorderedIterator(func, iterable, chunksize,
                                                       False, use_dill))

    def _map_async(self, func, iterable, chunksize, star, use_dill,
                   callback=None, error_callback=None):
        self._check_running()
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)
        if chunksize is None:       # multiprocessing's default
            chunksize, extra = divmod(len(iterable), self._handle.workers * 4)
            if extra:
                chunksize += 1
        else:
            _check_chunksize(chunksize)
        if len(iterable) == 0:
            chunksize = 0           # no part at all
        return self._core.submit(MapResult(func, iterable, chunksize, star,
                                           use_dill, callback, error_callback))

    def _check_running(self):
        if self._state != RUN:
            raise PoolClosedError("Pool not running (this multicore.Pool is "
                                  "closed or terminated)")

    def close(self):
        """No more work: the workers finish what was given, then the pool
        stops (join() waits for that)."""
        self._state = CLOSE if self._state == RUN else self._state
        self._core.close()

    def terminate(self):
        """Stop now: queued work never runs, running tasks are stopped,
        every process is reaped."""
        self._state = TERMINATE
        self._core.terminate()

    def join(self):
        """Wait until a closed (or terminated) pool has stopped."""
        if self._state == RUN:
            raise ValueError("Pool is still running")
        self._core.join()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, *exc_info):
        self.terminate()

    def __reduce__(self):
        raise NotImplementedError("pool objects cannot be passed between "
                                  "processes or pickled")

    def __repr__(self):
        return (f"<{type(self).__module__}.{type(self).__qualname__} "
                f"state={self._state} pool_size={self.workers}>")

    def __del__(self, _warn=warnings.warn):
        if self._core is None:
            return
        if self._state == RUN:
            _warn(f"unclosed running multiprocessing pool {self!r}",
                  ResourceWarning, source=self)
        if self._core.state != TERMINATE and self._handle.running:
            self._core.terminate()

    # -- what multiprocessing's own tests look at --------------------------

    @property
    def _pool(self):
        """The live workers, each with .pid and .is_alive()."""
        if not self._handle.running:
            return []
        return [_Worker(pid, self._handle) for pid in self._handle._worker_pids()]

    @property
    def _processes(self):
        return self._handle.workers

    def _repopulate_pool(self):
        """Nothing to do: the zygote replaces workers by itself."""


def _check_chunksize(chunksize):
    if isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1:
        raise ValueError(f"Chunksize must be 1+, not {chunksize!r}")


# Pools still running at exit are terminated before the interpreter
# finalizes (their handler threads are daemons, which then freeze), as
# multiprocessing does for its own.
_live_cores = weakref.WeakSet()


@atexit.register
def _terminate_live_pools():
    for core in list(_live_cores):
        if core.state != TERMINATE:
            core.terminate()
