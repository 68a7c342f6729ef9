"""The Dask distributed backend: a Session (the pool handle of a cluster),
its Task, and what runs in the Dask workers (a WorkerPlugin, the claim,
stopping a stuck task, counters).

Each run() is one Dask task, submitted with pure=False (identical calls are
not merged) under a key of its own; the scheduler sees
pickle.loads(payload) and bytes only (see _wire.py).

At most once. Dask re-runs a task whose worker died, the one that was
running as well as those only queued there. Here a task, when it starts,
claims itself before the callable runs: a set_restrictions request that
sets, on the scheduler, a worker restriction that no worker can satisfy
(the scheduler only reads restrictions when it places a task), sent from
the task's thread over a plain connection of the worker process to the
scheduler (_SchedulerLine), the worker's RPC if that fails. If its worker then dies,
the scheduler cannot place it again (it stays "no-worker"), while tasks
that were only queued there, never claimed, are placed on other workers as
usual. The session subscribes to the scheduler's events: a "remove-worker"
event lists the tasks that were processing on the worker; those of ours
that the scheduler then reports "no-worker" were running, and fail with
WorkerDiedError naming the worker; the others run elsewhere.

Results are fetched as soon as Dask reports them finished: a watcher in the
client's event loop waits on each future's state and queues the finished
ones; a fetch (one gather) takes every result queued, at most one start per
fetch_window (at once while a thread waits in get(), no fetch is in flight
and no task of the session is still unfinished: the last results of a
get(), a round trip). The futures are then dropped, so that the workers free the
results, and a result that has reached this process outlives its worker. A
task that finished on a worker that died before its result was fetched
fails the same way (Dask would run it again); get() waits for its parts'
fates, not for a fetch, so a fetch stuck on a dying worker holds nothing
back once the scheduler has removed that worker. What a fetch answers for
a part is delivered only if it is a report (an overlapping gather can
answer a key it did not bring); otherwise the part is fetched again. A claim that finds its task cancelled
(the caller gave up on it) does not run the callable. Nothing in the
scheduler's settings changes.

Timeouts and cancel(). Dask cannot interrupt a running task. get(timeout)
past its deadline cancels the unfinished tasks (queued ones never run)
and asks every worker to end its own process if it runs one of them; its
nanny starts a new worker process (about a second), and the tasks that
were only queued on it run elsewhere. A worker without a nanny is left to
finish the task.

worker_init / worker_exit run in every worker process of the cluster, in
the thread that runs its tasks (a WorkerPlugin's setup and teardown, so
again in every replacement). worker_state() is that worker's dict for this
session, worker_id() its Dask name.
"""

import asyncio
import atexit
import functools
import itertools
import os
import pickle
import re
import signal
import socket
import struct
import sys
import threading
import time
import traceback
import weakref

import distributed
from distributed.diagnostics.plugin import WorkerPlugin

from multicore.cluster import ClusterTask, _wire
from multicore.exceptions import (MulticoreError, PoolNotRunningError,
                                  TaskCompleteError, TimeoutExceededError,
                                  WorkerDiedError, WorkerInitError)

__all__ = ["DaskSession", "DaskTask", "is_client"]

# The restriction a claimed task gets: no worker has this address.
_CLAIMED = "multicore-claimed://"
# What waiting raises when one of the futures was cancelled.
_CANCELLED = tuple(c for c in (getattr(distributed.client, "FuturesCancelledError", None),
                               getattr(distributed.client, "FutureCancelledError", None),
                               asyncio.CancelledError)
                   if isinstance(c, type))
# States in which a task counts towards the cluster's load.
_LOAD_STATES = ("processing", "queued", "waiting", "no-worker")


def is_client(obj):
    return isinstance(obj, distributed.Client)


def _dumps_hook(fn):
    if fn is None:
        return None
    import cloudpickle
    return cloudpickle.dumps(fn, protocol=5)


class _Part:
    """One run(): its Dask future, its report once fetched (the future is
    then dropped, so that Dask frees the result on its worker), and its
    verdict if the session decided it failed (its worker died, or its
    result could not be fetched)."""

    __slots__ = ("key", "future", "name", "verdict", "report", "fetching",
                 "fetch_failures", "__weakref__")

    def __init__(self, key, future, name):
        self.key = key
        self.future = future
        self.name = name
        self.verdict = None
        self.report = None
        self.fetching = False     # in a fetch in flight
        self.fetch_failures = 0

    def done(self):
        """Settled: its result is here, or its fate is decided (a verdict,
        an error or a cancel on the cluster). A part that finished on its
        worker is done once its result has been fetched."""
        if self.verdict is not None or self.report is not None:
            return True
        future = self.future
        return future is None or future.status in ("error", "cancelled")


class DaskSession:
    """A connection to a Dask cluster, with the pool handle's interface
    (see multicore.cluster)."""

    kind = "dask"
    # What multicore.map aims at per chunk: a task costs a few milliseconds
    # of scheduling here (tens of microseconds locally).
    target_chunk_seconds = 0.1
    # A finished result is fetched from its worker as soon as Dask reports
    # it finished (a result left on a worker is lost if that worker dies,
    # and Dask would run the task again), coalesced: a fetch starts at most
    # once per fetch_window seconds (at once while get() or wait_first()
    # waits, no fetch is in flight and every task of the session has
    # finished), and takes every result finished meanwhile.
    fetch_window = 0.05
    # Fetches in flight at most (one stuck on a dying worker does not hold
    # the others back).
    max_fetches = 4

    def __init__(self, target, worker_init=None, worker_exit=None):
        self.running = False
        self.target = target
        if isinstance(target, str):
            try:
                self.client = distributed.Client(target, set_as_default=False)
            except OSError as e:
                raise MulticoreError(f"could not connect to the Dask scheduler "
                                     f"at {target!r}: {e}") from e
            self._owns_client = True
        else:
            self.client = target
            self._owns_client = False
        self.address = self.client.scheduler.address
        self.id = os.urandom(8).hex()
        self._plugin_name = f"multicore-{self.id}"
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._inflight = weakref.WeakValueDictionary()   # key -> _Part
        self._undecided = {}      # key -> address of the worker that died
        self._workers = {}        # address -> {"host", "pid", "nthreads", "nanny", "name"}
        self._nthreads = 0
        self._keys = itertools.count()
        self._submitted = 0
        # Fetching results (the client's event loop; the lists under _lock):
        self._new = []            # (key, FutureState) submitted, not yet watched
        self._ready = {}          # keys finished on a worker, to fetch
        self._watchers = set()    # the tasks waiting for futures to finish
        self._fetches = 0         # fetches in flight
        self._last_fetch = 0.0    # when the last one started (monotonic)
        self._fetch_handle = None  # a fetch scheduled for later
        self._waiters = 0         # threads in get()/wait_first()
        self._unfinished = 0      # parts submitted that Dask has not finished
        self._fetch_paused = False   # tests: hold fetches back
        self.fetch_count = 0      # fetches started (tests, bench)
        # Watch the cluster before anything runs on it.
        self._previous_handler = self.client._event_handlers.get("all")
        self.client.subscribe_topic("all", self._on_event)
        try:
            self.client.sync(self._refresh)
            plugin = _Plugin(self.id, _dumps_hook(worker_init), _dumps_hook(worker_exit))
            self.client.register_plugin(plugin, name=self._plugin_name)
        except BaseException:
            self._disconnect(unregister=True)
            raise
        self.running = True
        atexit.register(self._at_exit)

    # -- the pool handle -----------------------------------------------------

    @property
    def workers(self):
        """Tasks the cluster runs at once: its running workers' threads."""
        return max(self._nthreads, 1)

    @property
    def Task(self):          # what multicore.Executor(pool=...) calls
        return self.task

    @property
    def _handle(self):
        return self

    def task(self, max_load_average=None):
        if max_load_average is not None:
            if isinstance(max_load_average, bool) or \
                    not isinstance(max_load_average, (int, float)):
                raise TypeError(f"max_load_average must be a number or None, "
                                f"not {type(max_load_average).__name__}")
        if not self.running:
            return None
        if max_load_average is not None and \
                self.load() > max_load_average * self.workers:
            return None
        return DaskTask(self)

    def load(self):
        """The cluster's tasks waiting or running, all clients together
        (what max_load_average compares with, per worker thread)."""
        states = self.client.sync(self.client.scheduler.get_task_prefix_states)
        return sum(counts.get(state, 0) for counts in states.values()
                   for state in _LOAD_STATES)

    def stats(self):
        """Counters: the pool's, and each worker's for this session."""
        per_worker = self.client.run(_worker_stats, self.id, on_error="return")
        workers = []
        for address, info in sorted(self._workers.items()):
            counters = per_worker.get(address)
            if not isinstance(counters, dict):
                counters = {"tasks_done": 0, "busy_seconds": 0.0, "bytes_out": 0}
            workers.append({"address": address, **info, **counters})
        with self._lock:
            queued = sum(1 for part in self._inflight.values() if not part.done())
        return {"cluster": self.address, "workers": workers, "queued": queued,
                "submitted": self._submitted, "threads": self._nthreads}

    def _worker_pids(self):
        return [info["pid"] for info in self._workers.values() if info.get("pid")]

    def close(self):
        """Release this session's tasks, run worker_exit on the workers,
        and disconnect (the cluster keeps running)."""
        if not self.running:
            return
        self.running = False
        atexit.unregister(self._at_exit)
        with self._lock:
            futures = [part.future for part in self._inflight.values()
                       if part.future is not None]
            self._inflight.clear()
            self._undecided.clear()
            self._ready.clear()
            self._new = []
            self._cond.notify_all()
        if futures and self.client.status == "running":
            try:
                self.client.cancel(futures)
            except Exception:
                pass
        self._disconnect(unregister=True)

    def _at_exit(self):
        # Before distributed's own exit hooks close the client.
        from multicore import cluster
        if cluster._session is self:
            cluster.shutdown()
        else:
            self.close()

    def _disconnect(self, unregister):
        if self.client.status == "running":
            if unregister:
                try:
                    self.client.unregister_worker_plugin(self._plugin_name)
                except Exception:
                    pass          # never registered, or the workers are gone
            try:
                self.client.unsubscribe_topic("all")
                if self._previous_handler is not None:
                    self.client.subscribe_topic("all", self._previous_handler)
            except Exception:
                pass
        if self._owns_client:
            self.client.close()

    # -- submitting ----------------------------------------------------------

    def submit(self, fn, args, kwargs, fmt, use_dill):
        if not self.running:
            raise PoolNotRunningError("the multicore cluster session is closed "
                                      "(shutdown() was called)")
        name = _wire.callable_name(fn)
        short = re.sub(r"[^A-Za-z0-9_.]", "_", getattr(fn, "__name__", "call"))[:40]
        key = f"multicore-{short}-{self.id}-{next(self._keys)}"
        payload, buffers = _wire.encode_call(key, self.id, fmt, use_dill, fn, args, kwargs)
        extra = {"buffers": buffers} if buffers else {}
        future = self.client.submit(pickle.loads, payload, key=key, pure=False, **extra)
        part = _Part(key, future, name)
        with self._lock:
            self._inflight[key] = part
            self._submitted += 1
            self._new.append((key, future._state))
            self._unfinished += 1
            arm = len(self._new) == 1
        if arm:       # add_callback: the one IOLoop method safe from other threads
            self.client.loop.add_callback(self._watch_new)
        return part

    # -- fetching results as they finish (in the client's event loop) --------

    def _watch_new(self):
        """Watch the futures submitted since the last call: each one's
        state, not the Future itself, so that a Task dropped without get()
        still releases its futures (and Dask its queued tasks)."""
        with self._lock:
            new, self._new = self._new, []
        for key, state in new:
            watcher = asyncio.ensure_future(self._await_done(key, state))
            self._watchers.add(watcher)
            watcher.add_done_callback(self._watchers.discard)

    async def _await_done(self, key, state):
        # "lost": its worker died after it finished; Dask may finish it again
        try:
            while state.status in ("pending", "lost"):
                await state.wait()
        finally:
            with self._lock:
                self._unfinished -= 1
        with self._cond:
            if key not in self._inflight:
                return
            if state.status == "finished":
                self._ready[key] = None
            else:                        # error, cancelled: done as it is
                self._cond.notify_all()
                return
        self._schedule_fetch()

    def _schedule_fetch(self):
        """Start a fetch of the results finished and not fetched, now or
        when the window since the last one has passed (event loop)."""
        if self._fetch_paused or not self.running:
            return
        with self._lock:
            if not self._ready or self._fetches >= self.max_fetches:
                return
            # At once while a thread waits and nothing is left to finish
            # (its last results, or a round trip): no fetch is worth waiting
            # for. While tasks still run, the window coalesces the fetches.
            urgent = self._waiters > 0 and self._fetches == 0 and self._unfinished == 0
        if self._fetch_handle is not None:
            if not urgent:
                return                   # it comes at the end of the window
            self._fetch_handle.cancel()
            self._fetch_handle = None
        wait = 0.0 if urgent else self._last_fetch + self.fetch_window - time.monotonic()
        if wait > 0:
            self._fetch_handle = self.client.loop.call_later(wait, self._start_fetch)
        else:
            self._start_fetch()

    def _start_fetch(self):
        self._fetch_handle = None
        if self._fetch_paused or not self.running:
            return
        with self._lock:
            keys, self._ready = self._ready, {}
            parts = []
            for key in keys:
                part = self._inflight.get(key)
                if part is None or part.fetching or part.report is not None or \
                        part.verdict is not None:
                    continue
                future = part.future
                if future is None or future.status != "finished":
                    continue        # lost or cancelled meanwhile
                part.fetching = True
                parts.append(part)
            if not parts:
                return
            self._fetches += 1
            self.fetch_count += 1
        self._last_fetch = time.monotonic()
        fetch = asyncio.ensure_future(self._fetch(parts))
        self._watchers.add(fetch)
        fetch.add_done_callback(self._watchers.discard)

    async def _fetch(self, parts):
        """Fetch the reports of parts; a part whose report did not come (its
        worker died meanwhile, a part of the same fetch was cancelled, an
        overlapping fetch answered for it) is fetched again while its future
        is finished; its fate is decided otherwise (see _membership)."""
        error = None
        try:
            got = await self.client.gather([p.future for p in parts],
                                           asynchronous=True)
        except BaseException as e:   # the bookkeeping below, whatever ended it
            got, error = (), e
        with self._cond:
            self._fetches -= 1
            for i, part in enumerate(parts):
                part.fetching = False
                if part.verdict is not None or part.report is not None:
                    continue
                report = got[i] if i < len(got) else None
                if _wire.is_report(report):
                    part.report = report     # before the future goes (done())
                    part.future = None
                    continue
                future = part.future
                if future is None or future.status != "finished" or not self.running:
                    continue
                if error is not None and not isinstance(error, _CANCELLED):
                    part.fetch_failures += 1
                if part.fetch_failures >= 3:
                    err = MulticoreError(f"fetching the result of {part.name} from "
                                         f"the cluster failed: "
                                         f"{type(error).__name__}: {error}")
                    part.verdict = err
                else:
                    self._ready[part.key] = None
            del got, parts
            self._cond.notify_all()
        if error is not None and not isinstance(error, Exception):
            raise error              # the loop is cancelling this fetch
        self._schedule_fetch()

    # -- waiting -------------------------------------------------------------

    def _kick(self, parts, always):
        """Under self._lock: ask for the results of the parts Dask finished
        that are neither fetched nor in a fetch, at once (a thread waits)."""
        kick = always
        for part in parts:
            future = part.future
            if part.report is None and part.verdict is None and future is not None \
                    and future.status == "finished" and not part.fetching and \
                    part.key not in self._ready:
                self._ready[part.key] = None
                kick = True
        if kick:
            self.client.loop.add_callback(self._schedule_fetch)

    def wait_all(self, parts, timeout):
        """Until every part is done (its result fetched, or its fate
        decided); TimeoutExceededError past timeout (None: no limit). Every
        half second it looks again at the parts Dask finished that are
        neither fetched nor in a fetch (one finished again after its worker
        died)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            try:
                first = True
                while True:
                    pending = [p for p in parts if not p.done()]
                    if not pending:
                        return
                    if not self.running:
                        raise PoolNotRunningError("the multicore cluster session "
                                                  "is closed (shutdown() was called)")
                    self._kick(pending, first)
                    first = False
                    wait = 0.5
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise TimeoutExceededError("timed out")
                        wait = min(wait, left)
                    self._cond.wait(wait)
            finally:
                self._waiters -= 1

    def wait_first(self, tasks, timeout=None):
        if not self.running:
            raise PoolNotRunningError("wait_first(): the multicore cluster "
                                      "session is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._waiters += 1
            try:
                first = True
                while True:
                    found = [i for i, task in enumerate(tasks) if task.done()]
                    if found or (timeout is not None and timeout <= 0):
                        return found
                    if not self.running:
                        raise PoolNotRunningError("wait_first(): the multicore "
                                                  "cluster session is closed")
                    # read again at every wake-up: tasks are added meanwhile
                    self._kick([p for task in list(tasks) for p in task._parts], first)
                    first = False
                    # a cancel() wakes nobody: seen within the 50 ms slice
                    wait = 0.05
                    if deadline is not None:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            return []
                        wait = min(wait, left)
                    self._cond.wait(wait)
            finally:
                self._waiters -= 1

    # -- results -------------------------------------------------------------

    def collect(self, parts):
        """(values, first failure or None) of done parts, in order (their
        results are here: see wait_all)."""
        values, failure = [], None
        for part in parts:
            if failure is not None:
                continue
            try:
                values.append(self._value(part))
            except Exception as e:
                failure = e
        return values, failure

    def _value(self, part):
        if part.verdict is not None:
            raise part.verdict
        report = part.report
        if report is not None:
            return _wire.decode(report, part.name)
        future = part.future
        if future is None:
            raise MulticoreError(f"running {part.name}: its result was lost")
        status = future.status
        if status == "error":
            exc = part.future.exception()
            if type(exc).__name__ == "KilledWorker":
                raise WorkerDiedError(f"the Dask workers running {part.name} "
                                      f"kept dying: {exc}")
            err = MulticoreError(f"the cluster failed running {part.name}: "
                                 f"{type(exc).__name__}: {exc}")
            tb = part.future.traceback()
            if tb is not None:
                err.__cause__ = _wire.RemoteTraceback(
                    "".join(traceback.format_exception(type(exc), exc, tb)))
            raise err
        if status == "cancelled":
            raise MulticoreError(f"running {part.name} was cancelled on the cluster")
        raise MulticoreError(f"running {part.name}: its result was lost (Dask "
                             f"state {status!r})")

    def stop(self, parts):
        """Cancel the parts not done: queued ones never run; a worker running
        one ends its process (its nanny starts a new one)."""
        pending = [p for p in parts if not p.done() and p.future is not None]
        if not pending or self.client.status != "running":
            return
        keys = [p.key for p in pending]
        try:
            self.client.cancel([p.future for p in pending])
            self.client.run(_stop_tasks, keys, wait=False)
        except Exception:
            pass

    def forget(self, parts):
        with self._lock:
            for part in parts:
                self._inflight.pop(part.key, None)
                self._undecided.pop(part.key, None)
                self._ready.pop(part.key, None)

    # -- watching the cluster (in the client's event loop) -------------------

    def _on_event(self, event):
        previous = self._previous_handler
        result = previous(event) if previous is not None else None
        try:
            msg = event[1]
            action = msg.get("action") if isinstance(msg, dict) else None
        except Exception:
            action = None
        if action in ("add-worker", "remove-worker") and self.running:
            asyncio.ensure_future(self._membership(action, msg))
        return result

    async def _membership(self, action, msg):
        try:
            if action == "remove-worker":
                address = msg.get("worker")
                processing = msg.get("processing-tasks") or ()
                lost = msg.get("lost-computed-tasks") or ()
                with self._lock:
                    for key in itertools.chain(processing, lost):
                        part = self._inflight.get(key)
                        if part is not None and part.report is None:
                            self._undecided[key] = address
                lost_ours = [k for k in lost if k in self._undecided]
                if lost_ours:
                    await self._fail(lost_ours, "after running it, before its "
                                                "result was fetched")
            await self._refresh()
            if self._undecided:
                await self._decide()
        except Exception:       # a closing client: nothing left to decide
            if self.running and self.client.status == "running":
                raise

    async def _refresh(self):
        info = await self.client.scheduler.identity(n_workers=-1)
        workers = info.get("workers", {})
        new = [a for a in workers if a not in self._workers]
        pids = {}
        if new:
            pids = await self.client._run(os.getpid, workers=new, on_error="return")
        with self._lock:
            for address, w in workers.items():
                entry = self._workers.setdefault(address, {})
                entry.update(host=w.get("host"), nthreads=w.get("nthreads", 0),
                             nanny=w.get("nanny"), name=w.get("name"),
                             status=w.get("status"))
                if address in pids and isinstance(pids[address], int):
                    entry["pid"] = pids[address]
            keep = set(self._undecided.values())
            for address in [a for a in self._workers if a not in workers and a not in keep]:
                del self._workers[address]
            self._nthreads = sum(w.get("nthreads", 0) for w in workers.values()
                                 if w.get("status") in (None, "running"))

    async def _decide(self):
        """Which of the undecided tasks were running on a dead worker: those
        the scheduler cannot place (they were claimed)."""
        keys = list(self._undecided)
        status = await self.client.scheduler.get_task_status(keys=keys)
        if self._nthreads == 0:
            return                 # nowhere to run: decided when a worker joins
        died = []
        with self._lock:
            for key in keys:
                state = status.get(key)
                if state == "no-worker":
                    died.append(key)
                else:                 # placed again, finished, or forgotten
                    self._undecided.pop(key, None)
        if died:
            await self._fail(died, "")

    async def _fail(self, keys, when):
        futures = []
        with self._lock:
            for key in keys:
                address = self._undecided.pop(key, None)
                part = self._inflight.get(key)
                if part is None or part.verdict is not None or part.report is not None:
                    continue
                info = self._workers.get(address, {})
                pid = info.get("pid")
                where = ", ".join(x for x in (
                    f"host {info['host']}" if info.get("host") else "",
                    f"pid {pid}" if pid else "") if x)
                err = WorkerDiedError(
                    f"the Dask worker {address}{f' ({where})' if where else ''} "
                    f"running {part.name} died{(' ' + when) if when else ''}: "
                    f"the scheduler removed it", pid=pid)
                err.worker = address
                part.verdict = err
                if part.future is not None:
                    futures.append(part.future)
            self._cond.notify_all()
        if futures:
            await self.client.cancel(futures, asynchronous=True)


class DaskTask(ClusterTask):
    """multicore.Task on a Dask cluster (same methods, same errors)."""

    __slots__ = ("_session", "_parts", "_complete", "_busy", "__weakref__")

    def __init__(self, session):
        self._session = session
        self._parts = []
        self._complete = False
        self._busy = False

    def _enter(self, what):
        if self._busy:
            raise RuntimeError(f"Task.{what}(): this Task is in use by another "
                               f"call (a Task must not be shared between threads)")
        if self._complete:
            raise TaskCompleteError(f"Task.{what}(): this task is complete "
                                    f"(get() has finished); create a new Task")
        if not self._session.running:
            raise PoolNotRunningError(f"Task.{what}(): the multicore pool this "
                                      f"Task belongs to is not running "
                                      f"(shutdown() was called)")
        self._busy = True

    def run(self, fn, /, *args, serialization_format="pickle", use_dill=False,
            **kwargs):
        self._enter("run")
        try:
            if not callable(fn):
                raise TypeError(f"Task.run(): fn must be callable, not "
                                f"{type(fn).__name__}")
            if serialization_format not in _wire.FORMATS:
                raise ValueError(f"serialization_format must be one of 'pickle', "
                                 f"'json', 'string'; got {serialization_format!r}")
            self._parts.append(self._session.submit(fn, args, kwargs,
                                                    serialization_format,
                                                    bool(use_dill)))
        finally:
            self._busy = False

    def get(self, timeout=10.0):
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number or None, not "
                                f"{type(timeout).__name__}")
            if timeout != timeout or timeout < 0:
                raise ValueError(f"timeout must be a non-negative number or "
                                 f"None, got {timeout!r}")
        self._enter("get")
        session, parts = self._session, self._parts
        try:
            if not parts:
                return []
            try:
                session.wait_all(parts, timeout)
            except TimeoutExceededError:
                done = sum(1 for p in parts if p.done())
                session.stop(parts)
                raise TimeoutExceededError(
                    f"Task.get(): timeout of {timeout:g} seconds exceeded "
                    f"({done} of {len(parts)} parts finished)") from None
            except BaseException:       # Ctrl-C: give the task up
                session.stop(parts)
                raise
            values, failure = session.collect(parts)
            if failure is not None:
                raise failure
            return values
        finally:
            self._complete = True
            self._busy = False
            session.forget(parts)
            self._parts = []

    def done(self):
        if self._complete or not self._parts or not self._session.running:
            return True
        return all(p.done() for p in self._parts)

    def cancel(self):
        if self._busy:
            raise RuntimeError("Task.cancel(): this Task is in use by another call")
        if self._complete:
            return
        self._complete = True
        parts, self._parts = self._parts, []
        self._session.stop(parts)
        self._session.forget(parts)


# ---------------------------------------------------------------------------
# In the Dask workers
# ---------------------------------------------------------------------------

# How a task claims itself: "direct" over a blocking connection of this
# worker process to the scheduler (_SchedulerLine), falling back to the RPC
# through the worker's event loop on any failure; "rpc" always the RPC (the
# bench measures both: set with Client.run on the workers).
_claim_mode = "direct"
_lines = {}                       # scheduler address -> _SchedulerLine
_lines_lock = threading.Lock()
claim_counts = {"direct": 0, "rpc": 0, "fallbacks": 0, "connects": 0}


def _claim(worker, key):
    """Record on the scheduler that `key` starts here (see the module doc);
    False if the scheduler no longer has it (it was cancelled)."""
    restriction = {key: [_CLAIMED + worker.address]}
    if _claim_mode == "direct":
        line = _line(worker.scheduler.address)
        if line is not None:
            answer = line.set_restrictions(restriction)
            if answer is not None:
                claim_counts["direct"] += 1
                return answer
            claim_counts["fallbacks"] += 1
    claim_counts["rpc"] += 1
    try:
        distributed.utils.sync(worker.loop, worker.scheduler.set_restrictions,
                               worker=restriction)
    except KeyError:
        return False
    return True


def _close_lines():
    """Close this worker process's direct connections (the last session
    here has gone). A claim in flight on one meets a closed socket and goes
    through the RPC (set_restrictions' fallback)."""
    with _lines_lock:
        lines = list(_lines.values())
        _lines.clear()
    for line in lines:
        line._close()


def _line(address):
    line = _lines.get(address)
    if line is None or line.pid != os.getpid():
        with _lines_lock:
            line = _lines.get(address)
            if line is None or line.pid != os.getpid():
                line = _lines[address] = _SchedulerLine(address)
    return line if line.usable else None


class _SchedulerLine:
    """A plain blocking TCP connection from this worker process to the
    scheduler, speaking Dask's own wire format (the comm handshake, then
    set_restrictions requests, each answered), opened at the first claim.

    A claim through the worker's RPC costs two hops through the worker's
    event loop (the task thread hands the call to the loop, the loop hands
    the answer back) and the loop's own work; this one is a send and a
    receive in the task's thread. On any failure (refused, reset, closed by
    the scheduler, a scheduler restarted, a timeout) the connection is
    closed and set_restrictions returns None: that claim goes through the
    RPC, and the next one connects again (not before retry_after seconds
    after a failed connect). Only tcp:// schedulers (TLS and others: always
    the RPC)."""

    timeout = 10.0
    retry_after = 5.0

    def __init__(self, address):
        from distributed.comm.addressing import parse_address, parse_host_port
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.sock = None
        self.down_until = 0.0
        self.usable = False
        try:
            scheme, loc = parse_address(address)
            if scheme == "tcp":
                self.host, self.port = parse_host_port(loc)
                self.usable = True
        except Exception:
            pass

    def set_restrictions(self, restrictions):
        """True: done; False: the scheduler does not have the key (it was
        cancelled); None: failed, use the RPC."""
        with self.lock:
            if self.sock is None:
                if time.monotonic() < self.down_until:
                    return None
                try:
                    self._connect()
                except Exception:
                    self._close()
                    self.down_until = time.monotonic() + self.retry_after
                    return None
            try:
                self._write({"op": "set_restrictions", "worker": restrictions,
                             "reply": True})
                reply = self._read()
            except Exception:
                self._close()
                return None
        if reply is None:
            return True
        if isinstance(reply, dict) and reply.get("status") == "uncaught-error" and \
                str(reply.get("exception_text", "")).startswith("KeyError"):
            return False
        return None         # an answer not understood: the RPC decides

    def _connect(self):
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # Both ends send their handshake first (distributed.comm.core);
        # no compression asked, so the scheduler sends none.
        self._write({"compression": None, "python": tuple(sys.version_info)[:3],
                     "pickle-protocol": pickle.HIGHEST_PROTOCOL})
        if not isinstance(self._read(), dict):
            raise OSError("unexpected handshake from the scheduler")
        claim_counts["connects"] += 1

    def _close(self):
        sock, self.sock = self.sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _write(self, msg):
        from distributed.protocol import dumps
        from distributed.protocol.utils import pack_frames_prelude
        frames = [bytes(f) if not isinstance(f, bytes) else f for f in dumps(msg)]
        prelude = pack_frames_prelude(frames)
        # the 8-byte count of what the reader takes in one piece: here all
        head = struct.pack("Q", len(prelude) + sum(len(f) for f in frames))
        self.sock.sendall(b"".join([head, prelude, *frames]))

    def _read(self):
        from distributed.protocol import loads
        from distributed.protocol.utils import unpack_frames
        (n,) = struct.unpack("Q", self._recv(8))
        frames, missing = unpack_frames(self._recv(n), partial=True)
        for length in missing:
            frames.append(memoryview(self._recv(length)))
        return loads(frames, deserialize=True)

    def _recv(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            k = self.sock.recv_into(view[got:])
            if k == 0:
                raise ConnectionResetError("the scheduler closed the connection")
            got += k
        return buf


def _claim_stats(dask_worker=None):
    """This worker process's claim counters, and the local address of its
    direct connection (tests)."""
    line = _lines.get(dask_worker.scheduler.address) if dask_worker is not None else None
    sock = line.sock if line is not None else None
    local = None
    if sock is not None:
        try:
            local = "tcp://%s:%d" % sock.getsockname()[:2]
        except OSError:
            pass
    return dict(claim_counts, mode=_claim_mode, local=local)


def _set_claim_mode(mode, dask_worker=None):
    """Client.run on the workers: "direct" or "rpc" (the bench)."""
    global _claim_mode
    if mode not in ("direct", "rpc"):
        raise ValueError(f"claim mode must be 'direct' or 'rpc', not {mode!r}")
    _claim_mode = mode
    return mode


def _where(worker):
    return (f"host {socket.gethostname()}, pid {os.getpid()}, "
            f"Dask worker {worker.address}")


class _Plugin(WorkerPlugin):
    """A session's setup in each worker process: worker_init and
    worker_exit, the session's worker_state() and counters."""

    def __init__(self, session_id, init_bytes, exit_bytes):
        self.session_id = session_id
        self.init_bytes = init_bytes
        self.exit_bytes = exit_bytes

    async def _in_task_thread(self, worker, fn):
        executor = worker.executors.get("default") if hasattr(worker, "executors") else None
        if executor is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def setup(self, worker):
        ctx = _wire.WorkerContext(worker.name, functools.partial(_claim, worker))
        _wire._contexts[self.session_id] = ctx
        if self.init_bytes is None:
            return

        def init():
            try:
                fn = pickle.loads(self.init_bytes)
                _wire.run_in_context(ctx, fn)
            except BaseException:
                return f"worker_init failed on {_where(worker)}:\n{traceback.format_exc()}"
            return None

        error = await self._in_task_thread(worker, init)
        if error is not None:
            ctx.init_error = error
            raise WorkerInitError(error)

    async def teardown(self, worker):
        ctx = _wire._contexts.pop(self.session_id, None)
        if not _wire._contexts:
            _close_lines()       # no session left here: nothing will claim
        if ctx is None or self.exit_bytes is None or ctx.init_error is not None:
            return

        def leave():
            try:
                _wire.run_in_context(ctx, pickle.loads(self.exit_bytes))
            except BaseException:
                traceback.print_exc()    # as the local pool prints them

        await self._in_task_thread(worker, leave)


async def _stop_tasks(keys, dask_worker=None):
    """Runs in each worker's event loop: end this worker process if it runs
    one of `keys` and a nanny will start a new one. (A coroutine: Client.run
    only sends those without waiting for the answer.)"""
    if not any(key in _wire._running for key in keys):
        return False
    if dask_worker is None or not getattr(dask_worker, "nanny", None):
        return False
    os.kill(os.getpid(), signal.SIGKILL)
    return True        # not reached


def _worker_stats(session_id, dask_worker=None):
    ctx = _wire._contexts.get(session_id)
    if ctx is None:
        return {"tasks_done": 0, "busy_seconds": 0.0, "bytes_out": 0}
    with ctx.lock:
        return {"tasks_done": ctx.tasks_done, "busy_seconds": ctx.busy_seconds,
                "bytes_out": ctx.bytes_out}
