"""multicore beyond one machine: the backend interface, and the entry points
that send work to the local engine or to a cluster.

    multicore.initialize(cluster="tcp://scheduler:8786")   # or a distributed.Client
    multicore.Pool(cluster=...)
    MULTICORE_CLUSTER=tcp://scheduler:8786 python script.py  # initialize() uses it

The interface. The Python layer (mapping.py, pool.py, executor.py) is
written against three things, which the local engine provides in C and a
cluster backend provides here:

- a pool handle: ``workers`` (how many tasks run at once), ``running``,
  ``task(max_load_average=None)`` (a Task, or None), ``close()``,
  ``stats()``, ``_worker_pids()``: the C PoolHandle, or a Session;
- Task objects: ``run()``, ``get(timeout=10.0)``, ``done()``, ``cancel()``
  with the same meaning and errors;
- ``wait_first(tasks, timeout)``: the indices of the tasks that are done,
  reading a list again after every completion (see pool.py).

A backend is a class whose instances are Sessions: Session(target,
worker_init, worker_exit) connects to a cluster, and the Session is the
pool handle. Only Dask distributed exists (multicore.cluster._dask); Ray
would be a second class chosen by connect() from the target.

The entry points below (initialize, shutdown, Task, stats, worker_id,
worker_state, number_of_workers) are what ``multicore`` exports: each goes to
the C extension unless the process-wide pool is a cluster (initialize() with
cluster=, or MULTICORE_CLUSTER), or, for worker_id()/worker_state(), unless
it runs inside a cluster worker. Nothing here imports distributed until a
cluster is used.

This is glue: the work is done by the C engine or by Dask.
"""

import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from multicore import _multicore
from multicore.exceptions import MulticoreError

__all__ = ["initialize", "shutdown", "Task", "stats", "worker_id", "worker_state",
           "number_of_workers", "connect", "wait_first", "active", "default_target",
           "ClusterTask", "ENV_VAR"]

ENV_VAR = "MULTICORE_CLUSTER"

_lock = threading.Lock()
_session = None           # the process-wide pool when it is a cluster


class ClusterTask:
    """Base class of a cluster backend's Task (isinstance(t, multicore.Task)
    holds for it)."""

    __slots__ = ()


# -- worker side: set by a backend while a task (or worker_init) runs -------

_here = threading.local()   # .worker_id, .state: inside a cluster worker


def _in_cluster_worker():
    return getattr(_here, "state", None)


# -- choosing a backend --------------------------------------------------------

def default_target():
    """The cluster named by MULTICORE_CLUSTER, or None."""
    value = os.environ.get(ENV_VAR, "").strip()
    return value or None


def connect(target, worker_init=None, worker_exit=None):
    """A Session on the cluster `target`: a scheduler address such as
    "tcp://host:8786", or a distributed.Client."""
    if worker_init is not None and not callable(worker_init):
        raise TypeError(f"worker_init must be callable or None, not "
                        f"{type(worker_init).__name__}")
    if worker_exit is not None and not callable(worker_exit):
        raise TypeError(f"worker_exit must be callable or None, not "
                        f"{type(worker_exit).__name__}")
    if isinstance(target, str) and not target.strip():
        raise ValueError("cluster must be a scheduler address such as "
                         "'tcp://host:8786', got an empty string")
    try:
        from multicore.cluster._dask import DaskSession, is_client
    except ImportError as e:
        raise ImportError(f"multicore on a cluster needs Dask distributed "
                          f"(pip install 'multicore[dask]'): {e}") from e
    if not isinstance(target, str) and not is_client(target):
        raise TypeError(f"cluster must be a scheduler address (str) or a "
                        f"distributed.Client, not {type(target).__name__}")
    return DaskSession(target, worker_init, worker_exit)


def active():
    """The process-wide cluster Session, or None (local engine)."""
    session = _session
    if session is not None and session.running:
        return session
    return None


def default_pool_target():
    """The cluster a multicore.Pool() without cluster= runs on: the
    process-wide pool's cluster while it is one, else MULTICORE_CLUSTER."""
    session = active()
    if session is not None:
        return session.target
    return default_target()


def pool_session(target, processes, worker_init, worker_exit, shared_memory,
                 maxtasksperchild):
    """A Session of its own for multicore.Pool(cluster=target)."""
    _check_local_args(processes, shared_memory)
    if maxtasksperchild is not None:
        raise ValueError(f"maxtasksperchild={maxtasksperchild!r}: multicore does "
                         f"not recycle a cluster's workers (start them with "
                         f"'dask worker --lifetime ...' instead)")
    return connect(target, worker_init, worker_exit)


def executor_pool():
    """The pool a multicore.Executor() without pool= uses when the program
    runs on a cluster (the process-wide Session, connected now if only
    MULTICORE_CLUSTER names it), else None."""
    session = active()
    if session is None and default_target() is not None and \
            _multicore._zygote_pid() is None:
        initialize()
        session = active()
    return session


def wait_first(tasks, timeout=None):
    """wait_first() of the engine that runs `tasks` (see the module doc)."""
    if tasks and isinstance(tasks[0], ClusterTask):
        return tasks[0]._session.wait_first(tasks, timeout)
    return _multicore.wait_first(tasks, timeout)


# -- the public entry points ---------------------------------------------------

def initialize(workers: Optional[int] = None,
               worker_init: Optional[Callable[[], object]] = None,
               worker_exit: Optional[Callable[[], object]] = None,
               shared_memory: Optional[int] = None, *,
               cluster: Any = None) -> None:
    """initialize(workers=None, worker_init=None, worker_exit=None,
    shared_memory=None, *, cluster=None)

    Start the process-wide pool: local worker processes, or, with cluster=
    (a scheduler address or a distributed.Client) or the environment
    variable MULTICORE_CLUSTER, a connection to a Dask cluster. On a
    cluster, workers and shared_memory do not apply (the cluster's workers
    run the tasks); worker_init/worker_exit run once in every worker process
    of the cluster. See docs/cluster.md."""
    global _session
    if cluster is None:
        cluster = default_target()
    if cluster is None:
        if active() is not None:
            raise MulticoreError("multicore.initialize(): the process-wide pool "
                                 "is a cluster; call shutdown() first")
        _multicore.initialize(workers, worker_init, worker_exit, shared_memory)
        return
    with _lock:
        if active() is not None:
            raise MulticoreError("multicore.initialize(): already connected to "
                                 "a cluster; call shutdown() first")
        if _multicore._zygote_pid() is not None:
            raise MulticoreError("multicore.initialize(cluster=...): the local "
                                 "pool is running; call shutdown() first")
        _check_local_args(workers, shared_memory)
        _session = connect(cluster, worker_init, worker_exit)


def _check_local_args(workers, shared_memory):
    # The same checks as the local pool's, so that a script is right or
    # wrong in the same way on both; the values themselves do not apply.
    if workers is not None:
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError(f"workers must be a positive int or None, not "
                            f"{type(workers).__name__}")
        if workers < 1:
            raise ValueError(f"workers must be a positive int or None, got {workers!r}")
    if shared_memory is not None and (isinstance(shared_memory, bool) or
                                      not isinstance(shared_memory, int)):
        raise TypeError(f"shared_memory must be an int (bytes) or None, not "
                        f"{type(shared_memory).__name__}")


def shutdown() -> None:
    """shutdown()

    Stop the process-wide pool: the local workers, or the connection to a
    cluster (the cluster itself keeps running; worker_exit runs in its
    workers). Harmless when nothing runs."""
    global _session
    with _lock:
        session, _session = _session, None
    if session is not None:
        session.close()
    _multicore.shutdown()


def number_of_workers() -> int:
    """Tasks the process-wide pool runs at once: the cluster's worker
    threads, the local pool's workers, or the number of online CPUs."""
    session = active()
    if session is not None:
        return session.workers
    return _multicore.number_of_workers()


def stats() -> dict:
    """stats(): the process-wide pool's counters (see docs/worker-state.md,
    and docs/cluster.md for a cluster's)."""
    session = active()
    if session is not None:
        return session.stats()
    return _multicore.stats()


def worker_id() -> Any:
    """worker_id(): the index of the local worker running this code; in a
    cluster worker, the Dask worker's name; None in the caller."""
    here = getattr(_here, "worker_id", None)
    if here is not None:
        return here
    return _multicore.worker_id()


def worker_state() -> dict:
    """worker_state(): this worker process's dict (for worker_init to fill);
    in a cluster worker, the dict of the session whose task runs."""
    state = _in_cluster_worker()
    if state is not None:
        return state
    return _multicore.worker_state()


if TYPE_CHECKING:
    from multicore._multicore import Task as Task
else:
    class _TaskType(type):
        """multicore.Task's type: Task(...) makes a Task of the process-wide
        pool, local (the C type) or on a cluster."""

        def __call__(cls, max_load_average=None):
            # active(), inlined: this is on every round trip's path
            session = _session
            if session is not None and session.running:
                return session.task(max_load_average)
            return _multicore.Task(max_load_average)

        def __instancecheck__(cls, obj):
            return isinstance(obj, (_multicore.Task, ClusterTask))

        def __subclasscheck__(cls, sub):
            return issubclass(sub, (_multicore.Task, ClusterTask))

    class Task(metaclass=_TaskType):
        __doc__ = _multicore.Task.__doc__
        __module__ = "multicore"
        run = _multicore.Task.run
        get = _multicore.Task.get
        done = _multicore.Task.done
        cancel = _multicore.Task.cancel
