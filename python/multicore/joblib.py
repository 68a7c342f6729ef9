"""multicore.joblib: a joblib backend named "multicore".

    import joblib
    import multicore.joblib            # registers the backend

    with joblib.parallel_config(backend="multicore", n_jobs=4):
        joblib.Parallel()(joblib.delayed(fn)(x) for x in items)
        GridSearchCV(..., n_jobs=4).fit(X, y)      # scikit-learn too

joblib hands the backend batches (BatchedCalls) made after the pool
started, often of lambdas or functions of __main__, so a batch cannot go by
reference as multicore's tasks do. It is pickled in the caller with the
cloudpickle that joblib depends on (what loky uses; older joblib
vendors it as joblib.externals.cloudpickle), protocol 5, every buffer
out of band: the pickle stream and the buffers are the task's arguments, so multicore sends numpy arrays through
shared memory (written once, received as views; a multicore.shared array is
not copied at all). Results come back on multicore's own path (pickle, large
arrays as shared memory).

Where the batches run: on the process-wide pool when one runs (the
workers multicore.initialize() started, with their worker_init state);
otherwise on a pool of this module's own, started at the first call with
n_jobs workers, kept for later calls (like loky's reusable executor),
replaced by a larger one when a call asks for more workers while it is
idle, and closed at exit. Inside a multicore worker a nested Parallel on
this backend runs sequentially (a worker waiting on its own pool could
deadlock it); nested calls otherwise get joblib's usual threading backend.

Glue over multicore.Executor (the C extension does the work).
"""

import atexit
import pickle
import threading
import warnings

import joblib
from joblib._parallel_backends import (AutoBatchingMixin, FallbackToBackend,
                                       ParallelBackendBase, SequentialBackend)
try:                            # joblib >= 1.5 depends on cloudpickle
    import cloudpickle
except ImportError:             # older joblib vendors it
    from joblib.externals import cloudpickle

from multicore import _multicore
from multicore.executor import Executor
from multicore.pool import Pool

__all__ = ["MulticoreBackend", "run_batch", "close"]

_IGNORED = {"max_nbytes", "mmap_mode", "temp_folder", "verbose", "context"}

_lock = threading.Lock()
_own = None        # (Pool, Executor) of this module, or None
_users = 0         # Parallel calls running on _own


_controller = None  # in a worker: threadpoolctl's view of its BLAS/OpenMP pools


def run_batch(payload, inner_threads, *buffers):
    """Runs in a worker: one joblib batch, pickled by the caller, with the
    BLAS/OpenMP thread pools limited to inner_threads meanwhile (as loky
    limits them: else n_jobs workers each run a pool of all the cores)."""
    global _controller
    batch = pickle.loads(payload, buffers=buffers)
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:                 # no threadpoolctl: no limit
            return batch()
        _controller = ThreadpoolController()
    with _controller.limit(limits=inner_threads):
        return batch()


def _in_worker():
    return _multicore.worker_id() is not None


def _acquire(n_jobs):
    """The executor a call runs on, and the workers it has."""
    global _own, _users
    if _multicore.is_running():                     # the process-wide pool
        return Executor(), _multicore.number_of_workers(), False
    with _lock:
        if _own is not None and _own[0].workers < n_jobs and _users == 0:
            _close_own_locked()
        if _own is None:
            pool = Pool(workers=n_jobs)
            _own = (pool, pool.Executor())
        _users += 1
        return _own[1], _own[0].workers, True


def _release():
    global _users
    with _lock:
        _users -= 1


def _close_own_locked():
    global _own
    if _own is not None:
        pool, executor = _own
        _own = None
        executor.shutdown(wait=True, cancel_futures=True)
        pool.close()


def close():
    """Close the pool this module started (harmless twice; at exit too)."""
    with _lock:
        _close_own_locked()


atexit.register(close)


class MulticoreBackend(AutoBatchingMixin, ParallelBackendBase):
    """Runs joblib batches on multicore's workers."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    supports_timeout = True
    supports_return_generator = True
    supports_sharedmem = False
    uses_threads = False
    default_n_jobs = 1

    _workers = None
    _shares = False

    def effective_n_jobs(self, n_jobs):
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if _in_worker():
            if n_jobs != 1:
                warnings.warn("Multicore-backed parallel loops cannot be nested "
                              "in a multicore worker, setting n_jobs=1",
                              stacklevel=3)
            return 1
        if n_jobs < 0:
            if _multicore.is_running():
                cpus = _multicore.number_of_workers()
            else:
                cpus = joblib.cpu_count()
            n_jobs = max(cpus + 1 + n_jobs, 1)
        if _multicore.is_running():
            n_jobs = min(n_jobs, _multicore.number_of_workers())
        return n_jobs

    def configure(self, n_jobs=1, parallel=None, prefer=None, require=None,
                  **backend_kwargs):
        n_jobs = self.effective_n_jobs(n_jobs)
        if n_jobs == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        # Parallel always passes its memmapping options: arrays travel
        # through shared memory here, so they do not apply.
        unknown = (set(backend_kwargs) | set(self.backend_kwargs)) - _IGNORED
        if unknown:
            raise TypeError(f"the multicore joblib backend takes no options "
                            f"{sorted(unknown)}")
        self.parallel = parallel
        self._n_jobs = n_jobs
        self._inner_threads = self.inner_max_num_threads or \
            max(joblib.cpu_count() // n_jobs, 1)
        if self._workers is None:
            self._workers, _, self._shares = _acquire(n_jobs)
        self._futures = set()
        self._futures_lock = threading.Lock()
        return n_jobs

    def submit(self, func, callback=None):
        buffers = []
        payload = cloudpickle.dumps(func, protocol=5,
                                    buffer_callback=buffers.append)
        future = self._workers.submit(run_batch, payload, self._inner_threads,
                                      *buffers)
        with self._futures_lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def _forget(self, future):
        with self._futures_lock:
            self._futures.discard(future)

    def retrieve_result_callback(self, future):
        return future.result()

    def abort_everything(self, ensure_ready=True):
        """Cancel the batches still queued or running (a running one's
        worker is stopped and replaced)."""
        with self._futures_lock:
            futures, self._futures = list(self._futures), set()
        for future in futures:
            future.cancel()
        if not ensure_ready:
            self.terminate()

    def terminate(self):
        if self._workers is not None:
            if self._shares:
                _release()
            else:
                self._workers.shutdown(wait=True)
            self._workers = None
        self.reset_batch_stats()


joblib.register_parallel_backend("multicore", MulticoreBackend)
