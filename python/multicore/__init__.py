"""multicore: a persistent pool of worker processes fed through shared memory.

    from multicore import initialize, shutdown, Task
    from multicore.utils import ranges

initialize() forks the workers once; what the program defined before it
(functions, module globals) is visible to them. Task() groups calls, run()
queues one, get() returns the results in order. initialize(cluster=...) or
the environment variable MULTICORE_CLUSTER runs the same API on a Dask
cluster instead (multicore.cluster, docs/cluster.md).
"""

import atexit as _atexit

from multicore import _multicore
# The local engine's (C), or a cluster's while the process-wide pool is one.
from multicore.cluster import (Task, initialize, shutdown, stats, worker_id,
                               worker_state)
from multicore import cluster as _cluster
from multicore import exceptions  # noqa: F401  (multicore.exceptions)
# Imported before any initialize(), so that their worker-side helpers exist
# in the workers.
from multicore.mapping import imap, imap_unordered, map, starmap
from multicore.executor import Executor
from multicore.pool import Pool
from multicore import shared  # noqa: F401  (multicore.shared: arrays in shared memory)

__all__ = ["initialize", "shutdown", "Task", "stats", "worker_id", "worker_state",
           "map", "imap", "imap_unordered", "starmap", "Executor", "Pool",
           "NUMBER_OF_WORKERS"]
__version__ = "0.2.0"


def __getattr__(name):
    # NUMBER_OF_WORKERS follows the pool: its worker count while it runs
    # (a cluster's worker threads), else the number of online CPUs.
    if name == "NUMBER_OF_WORKERS":
        return _cluster.number_of_workers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + ["NUMBER_OF_WORKERS"])


_atexit.register(shutdown)
