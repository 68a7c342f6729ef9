"""The Dask distributed backend: a Session (the pool handle of a cluster),
its Task, and what runs in the Dask workers (a WorkerPlugin, the claim,
stopping a stuck task, counters).

Each run() is one Dask task, submitted with pure=False (identical calls are
not merged) under a key of its own; the scheduler sees
pickle.loads(payload) and bytes only (see _wire.py).

At most once. Dask re-runs a task whose worker died, the one that was
running as well as those only queued there. Here a task, when it starts,
claims itself before the callable runs: an RPC that sets, on the
scheduler, a worker restriction that no worker can satisfy (the scheduler
only reads restrictions when it places a task). If its worker then dies,
the scheduler cannot place it again (it stays "no-worker"), while tasks
that were only queued there, never claimed, are placed on other workers as
usual. The session subscribes to the scheduler's events: a "remove-worker"
event lists the tasks that were processing on the worker; those of ours
that the scheduler then reports "no-worker" were running, and fail with
WorkerDiedError naming the worker; the others run elsewhere. Results are
fetched in the background every sweep_seconds while tasks are in flight
(their futures then dropped, so that the workers free them); a task that
finished on a worker that died before its result was fetched fails the
same way (Dask would run it again). A claim that finds its task cancelled
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
    verdict if the session decided it failed (its worker died)."""

    __slots__ = ("key", "future", "name", "verdict", "report", "watched", "__weakref__")

    def __init__(self, key, future, name):
        self.key = key
        self.future = future
        self.name = name
        self.verdict = None
        self.report = None
        self.watched = False

    def done(self):
        future = self.future
        return self.verdict is not None or future is None or future.done()


class DaskSession:
    """A connection to a Dask cluster, with the pool handle's interface
    (see multicore.cluster)."""

    kind = "dask"
    # What multicore.map aims at per chunk: a task costs a few milliseconds
    # of scheduling here (tens of microseconds locally).
    target_chunk_seconds = 0.1
    # While tasks are in flight, finished results are fetched from the
    # workers this often (and at get()): a result left on a worker is lost
    # if that worker dies, and Dask would run the task again.
    sweep_seconds = 0.2

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
        self._sweeping = False    # a sweep is scheduled in the event loop
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
            arm, self._sweeping = not self._sweeping, True
        if arm:       # add_callback: the one IOLoop method safe from other threads
            self.client.loop.add_callback(self._arm_sweep)
        return part

    # -- fetching results as they finish (in the client's event loop) --------

    def _arm_sweep(self):
        self.client.loop.call_later(self.sweep_seconds, self._start_sweep)

    def _start_sweep(self):
        asyncio.ensure_future(self._sweep())

    async def _sweep(self):
        """Fetch the finished results of the tasks in flight, then come
        back in sweep_seconds while any is in flight."""
        try:
            with self._lock:
                parts = [p for p in self._inflight.values()
                         if p.report is None and p.verdict is None and
                         p.future is not None and p.future.status == "finished"]
            if parts and self.running:
                try:
                    got = await self.client.gather([p.future for p in parts],
                                                   asynchronous=True)
                except Exception:
                    got = None      # a worker died meanwhile: get() fetches
                if got is not None:
                    for part, report in zip(parts, got):
                        if part.verdict is None:
                            part.report = report
                            part.future = None
                del got
        finally:
            with self._lock:
                again = self.running and any(
                    p.verdict is None and p.future is not None and
                    p.future.status in ("pending", "finished")
                    for p in self._inflight.values())
                self._sweeping = again
            if again:
                self.client.loop.call_later(self.sweep_seconds, self._start_sweep)

    # -- waiting -------------------------------------------------------------

    def _notify(self, _future=None):
        with self._cond:
            self._cond.notify_all()

    def _watch(self, parts):
        for part in parts:
            future = part.future
            if not part.watched and future is not None:
                part.watched = True
                future.add_done_callback(self._notify)

    def wait_all(self, parts, timeout):
        """Until every part is done; TimeoutExceededError past timeout (None:
        no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            futures = [f for f in (p.future for p in parts if not p.done())
                       if f is not None]
            if not futures:
                return
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                self.client.sync(distributed.client._wait, futures, timeout=left)
            except (TimeoutError, asyncio.TimeoutError) as e:
                raise TimeoutExceededError(str(e)) from None
            except _CANCELLED:
                pass          # a part cancelled (its worker died): done too

    def wait_first(self, tasks, timeout=None):
        if not self.running:
            raise PoolNotRunningError("wait_first(): the multicore cluster "
                                      "session is closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                found = [i for i, task in enumerate(tasks) if task.done()]
                if found or (timeout is not None and timeout <= 0):
                    return found
                if not self.running:
                    raise PoolNotRunningError("wait_first(): the multicore "
                                              "cluster session is closed")
                for task in list(tasks):
                    self._watch(task._parts)
                found = [i for i, task in enumerate(tasks) if task.done()]
                if found:
                    return found
                if deadline is None:
                    self._cond.wait()
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    self._cond.wait(left)

    # -- results -------------------------------------------------------------

    def collect(self, parts):
        """(values, first failure or None) of done parts, in order."""
        reports = {}
        finished = []
        for p in parts:
            future = p.future
            if p.verdict is not None:
                continue
            if future is None:
                reports[p.key] = p.report
            elif future.status == "finished":
                finished.append((p.key, future))
        if finished:
            try:
                got = self.client.gather([f for _, f in finished])
            except Exception as e:          # lost meanwhile, or the connection failed
                raise MulticoreError(f"fetching results from the cluster "
                                     f"failed: {type(e).__name__}: {e}") from e
            reports.update(zip([k for k, _ in finished], got))
        values, failure = [], None
        for part in parts:
            if failure is not None:
                continue
            try:
                values.append(self._value(part, reports))
            except Exception as e:
                failure = e
        return values, failure

    def _value(self, part, reports):
        if part.verdict is not None:
            raise part.verdict
        if part.key in reports:
            return _wire.decode(reports[part.key], part.name)
        status = part.future.status
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

def _claim(worker, key):
    """Record on the scheduler that `key` starts here (see the module doc);
    False if the scheduler no longer has it (it was cancelled)."""
    try:
        distributed.utils.sync(worker.loop, worker.scheduler.set_restrictions,
                               worker={key: [_CLAIMED + worker.address]})
    except KeyError:
        return False
    return True


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
