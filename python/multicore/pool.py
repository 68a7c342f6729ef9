"""multicore.Pool: a pool of its own, beside the process-wide one.

    with multicore.Pool(workers=4, worker_init=connect) as pool:
        squares = pool.map(square, range(1000))
        task = pool.Task()
        task.run(fn, x)
        task.get()

Both kinds coexist: initialize() still starts the process-wide pool that
multicore.Task(), multicore.map() and multicore.Executor use, and each Pool
runs its own zygote and workers. Leaving the with block (or close()) stops
the pool and reaps its processes. Glue over the C type PoolHandle.
"""

from multicore import _multicore
from multicore import mapping

__all__ = ["Pool"]


class Pool:
    def __init__(self, workers=None, *, worker_init=None, worker_exit=None,
                 shared_memory=None):
        self._handle = _multicore.PoolHandle(workers, worker_init, worker_exit,
                                             shared_memory)

    @property
    def workers(self):
        """Number of workers (0 once closed)."""
        return self._handle.workers

    def Task(self, max_load_average=None):
        """A Task of this pool (see multicore.Task)."""
        return self._handle.task(max_load_average)

    def map(self, fn, iterable, chunksize=None, **options):
        return mapping._map_list(fn, iterable, chunksize, False,
                                 *_options(options), handle=self._handle)

    def starmap(self, fn, iterable, chunksize=None, **options):
        return mapping._map_list(fn, iterable, chunksize, True,
                                 *_options(options), handle=self._handle)

    def imap(self, fn, iterable, chunksize=None, **options):
        return mapping._imap(fn, iterable, chunksize, False, True,
                             *_options(options), handle=self._handle)

    def imap_unordered(self, fn, iterable, chunksize=None, **options):
        return mapping._imap(fn, iterable, chunksize, False, False,
                             *_options(options), handle=self._handle)

    def Executor(self):
        """A concurrent.futures.Executor on this pool (see multicore.Executor)."""
        from multicore.executor import Executor
        return Executor(pool=self)

    def stats(self):
        """This pool's counters (see multicore.stats())."""
        return self._handle.stats()

    def close(self):
        """Stop the pool and reap its processes (harmless twice)."""
        self._handle.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def _options(options):
    unknown = set(options) - {"progress", "timeout", "use_dill"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {sorted(unknown)}")
    return (options.get("progress", False), options.get("timeout"),
            options.get("use_dill", False))
