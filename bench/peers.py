"""One adapter per library, all with the same interface.

    peer = PEERS["mp_pool"]()
    peer.start(workers)        # start the pool (untimed unless the scenario times it)
    peer.call(fn, *args)       # one round trip: submit one task, wait for its result
    peer.submit_all(fn, items) # len(items) tasks submitted one by one, results in order
    peer.map(fn, items, c)     # the library's batched map with chunk size c
    peer.chunk_candidates(n, w)# the chunk sizes scenario (c) tries
    peer.worker_pids()         # pids the library names itself (besides descendants)
    peer.stop()                # shut the pool down and wait for its processes

A library that cannot be imported is still listed: probe() returns
(False, None, "ImportError: ..."), and the scenarios report it as missing.
"""

import importlib
import inspect
import itertools
import math
import os

from workloads import map_chunk


def default_chunks(n, workers):
    """Chunk sizes tried by scenario (c): small, medium, large, and the
    'one chunk per worker' split that multicore.utils.ranges() makes."""
    out = {16, 128, 1024, math.ceil(n / (4 * workers)), math.ceil(n / workers)}
    return sorted(c for c in out if 1 <= c <= n)


def chunks_of(items, c):
    return [items[i:i + c] for i in range(0, len(items), c)]


class Peer:
    name = "?"          # key in the JSON
    label = "?"         # column header
    module = None       # what must import for the peer to be available
    is_reference = False
    slow_start = False  # --quick shares one pool between scenarios (Ray: seconds to start)

    @classmethod
    def probe(cls):
        # MCBENCH_SIMULATE_MISSING=ray,mpire: test the "missing peer" path.
        if cls.name in os.environ.get("MCBENCH_SIMULATE_MISSING", "").split(","):
            return False, None, f"ImportError: No module named {cls.module!r} (simulated)"
        try:
            mod = importlib.import_module(cls.module)
        except Exception as exc:   # ImportError, or a broken install
            return False, None, f"{type(exc).__name__}: {exc}"
        return True, cls.version_of(mod), None

    @classmethod
    def version_of(cls, mod):
        v = getattr(mod, "__version__", None)
        if v is None:
            try:
                from importlib.metadata import version
                v = version(cls.module.split(".")[0])
            except Exception:
                v = "?"
        return str(v)

    def start(self, workers):
        raise NotImplementedError

    def stop(self):
        raise NotImplementedError

    def call(self, fn, *args):
        raise NotImplementedError

    def submit_all(self, fn, items):
        raise NotImplementedError

    def map(self, fn, items, chunksize):
        raise NotImplementedError

    def map_label(self, chunksize=None):
        return "map"

    def chunk_candidates(self, n, workers):
        return default_chunks(n, workers)

    def worker_pids(self):
        return []

    # (e): how the caller makes the array it sends, and the function the
    # worker runs to make the array it returns.
    def array_to_send(self, nbytes, shared=True):
        import numpy as np
        return np.ones(nbytes // 8)

    def array_maker(self, shared=True):
        from workloads import array_make
        return array_make


class InProcess(Peer):
    """The reference: the same calls made directly in the caller."""
    name, label, module, is_reference = "inprocess", "in-process", "builtins", True

    @classmethod
    def version_of(cls, mod):
        return "-"

    def start(self, workers):
        pass

    def stop(self):
        pass

    def call(self, fn, *args):
        return fn(*args)

    def submit_all(self, fn, items):
        return [fn(x) for x in items]

    def map(self, fn, items, chunksize):
        return [fn(x) for x in items]

    def map_label(self, chunksize=None):
        return "list comprehension"

    def chunk_candidates(self, n, workers):
        return [n]


class Multicore(Peer):
    """multicore.Task on the pool of multicore.initialize(). For (c) it tries
    both multicore.map (when the package has it; chunksize=c, and "auto" =
    chunksize=None, its adaptive chunking) and manual batching, one
    Task.run(map_chunk, fn, chunk) per chunk (keys "runs:c"), the way
    multicore.utils.ranges() is used."""
    name, label, module = "multicore", "multicore", "multicore"

    def start(self, workers):
        import multicore
        self.mc = multicore
        multicore.initialize(workers=workers)
        self.native_map = getattr(multicore, "map", None)
        self._map_kw = None
        if self.native_map is not None:
            try:
                params = inspect.signature(self.native_map).parameters
            except (TypeError, ValueError):
                params = {}
            for kw in ("chunksize", "chunk_size"):
                if kw in params:
                    self._map_kw = kw

    def stop(self):
        self.mc.shutdown()

    def call(self, fn, *args):
        t = self.mc.Task()
        t.run(fn, *args)
        return t.get(timeout=None)[0]

    def submit_all(self, fn, items):
        t = self.mc.Task()
        for x in items:
            t.run(fn, x)
        return t.get(timeout=None)

    def chunked_runs(self, fn, items, chunksize):
        t = self.mc.Task()
        for chunk in chunks_of(items, chunksize):
            t.run(map_chunk, fn, chunk)
        return list(itertools.chain.from_iterable(t.get(timeout=None)))

    def map(self, fn, items, chunksize):
        if isinstance(chunksize, str) and chunksize.startswith("runs:"):
            return self.chunked_runs(fn, items, int(chunksize[5:]))
        if chunksize == "auto" or not self._map_kw:
            return list(self.native_map(fn, items))
        return list(self.native_map(fn, items, **{self._map_kw: chunksize}))

    def map_label(self, chunksize=None):
        if isinstance(chunksize, str) and chunksize.startswith("runs:"):
            return "Task.run(map_chunk, fn, chunk) per chunk"
        if chunksize == "auto":
            return "multicore.map(chunksize=None: adaptive)"
        return f"multicore.map({self._map_kw}=c)"

    def chunk_candidates(self, n, workers):
        runs = [f"runs:{c}" for c in default_chunks(n, workers)]
        if self.native_map is None:
            return runs
        if not self._map_kw:
            return ["auto"] + runs
        return default_chunks(n, workers) + ["auto"] + runs

    # (e): arrays made in shared memory travel by reference (multicore.shared);
    # scenarios.arrays() also measures plain numpy arrays (one copy each way).
    def has_shared_arrays(self):
        try:
            import multicore.shared  # noqa: F401
        except ImportError:
            return False
        return True

    def array_to_send(self, nbytes, shared=True):
        if shared and self.has_shared_arrays():
            import multicore.shared
            return multicore.shared.ones(nbytes // 8)
        return super().array_to_send(nbytes)

    def array_maker(self, shared=True):
        from workloads import array_make_shared
        return array_make_shared if shared and self.has_shared_arrays() else super().array_maker()

    def worker_pids(self):
        from multicore import _multicore
        pids = list(_multicore._worker_pids())
        z = _multicore._zygote_pid()
        if z:
            pids.append(z)
        return pids


class MpPool(Peer):
    name, label, module = "mp_pool", "mp.Pool", "multiprocessing"

    @classmethod
    def version_of(cls, mod):
        import multiprocessing
        import sys
        return f"py{sys.version_info.major}.{sys.version_info.minor} ({multiprocessing.get_start_method()})"

    def start(self, workers):
        import multiprocessing
        self.pool = multiprocessing.Pool(workers)

    def stop(self):
        self.pool.close()
        self.pool.join()

    def call(self, fn, *args):
        return self.pool.apply_async(fn, args).get()

    def submit_all(self, fn, items):
        rs = [self.pool.apply_async(fn, (x,)) for x in items]
        return [r.get() for r in rs]

    def map(self, fn, items, chunksize):
        return self.pool.map(fn, items, chunksize=chunksize)

    def map_label(self, chunksize=None):
        return "Pool.map(chunksize=c)"

    def worker_pids(self):
        return [p.pid for p in getattr(self.pool, "_pool", [])]


class Futures(Peer):
    name, label, module = "futures", "futures", "concurrent.futures"

    @classmethod
    def version_of(cls, mod):
        import sys
        return f"py{sys.version_info.major}.{sys.version_info.minor}"

    def start(self, workers):
        from concurrent.futures import ProcessPoolExecutor
        self.ex = ProcessPoolExecutor(max_workers=workers)

    def stop(self):
        self.ex.shutdown(wait=True)

    def call(self, fn, *args):
        return self.ex.submit(fn, *args).result()

    def submit_all(self, fn, items):
        fs = [self.ex.submit(fn, x) for x in items]
        return [f.result() for f in fs]

    def map(self, fn, items, chunksize):
        return list(self.ex.map(fn, items, chunksize=chunksize))

    def map_label(self, chunksize=None):
        return "Executor.map(chunksize=c)"

    def worker_pids(self):
        return list((getattr(self.ex, "_processes", None) or {}).keys())


class Joblib(Peer):
    """joblib.Parallel on its default loky backend. Large arrays go through
    joblib's automatic memmapping (its default, max_nbytes='1M')."""
    name, label, module = "joblib", "joblib/loky", "joblib"

    def start(self, workers):
        import joblib
        self.joblib = joblib
        self.workers = workers
        # A managed Parallel keeps its backend between calls.
        self.par = joblib.Parallel(n_jobs=workers, backend="loky", batch_size=1)
        self.par.__enter__()

    def stop(self):
        self.par.__exit__(None, None, None)
        try:
            from joblib.externals.loky import reusable_executor
            ex = getattr(reusable_executor, "_executor", None)
        except ImportError:
            ex = None
        if ex is not None:
            ex.shutdown(wait=True, kill_workers=False)

    def call(self, fn, *args):
        return self.par([self.joblib.delayed(fn)(*args)])[0]

    def submit_all(self, fn, items):
        d = self.joblib.delayed(fn)
        return self.par(d(x) for x in items)

    def map(self, fn, items, chunksize):
        d = self.joblib.delayed(fn)
        with self.joblib.Parallel(n_jobs=self.workers, backend="loky",
                                  batch_size=chunksize) as par:
            return par(d(x) for x in items)

    def map_label(self, chunksize=None):
        return "Parallel(batch_size=c)" if chunksize != "auto" else "Parallel(batch_size='auto')"

    def chunk_candidates(self, n, workers):
        return default_chunks(n, workers) + ["auto"]

    def worker_pids(self):
        try:
            from joblib.externals.loky import reusable_executor
            ex = reusable_executor._executor
            return list((ex._processes or {}).keys()) if ex else []
        except Exception:
            return []


class Mpire(Peer):
    name, label, module = "mpire", "mpire", "mpire"

    def start(self, workers):
        from mpire import WorkerPool
        # keep_alive: the workers survive between map() calls, like a pool.
        self.pool = WorkerPool(n_jobs=workers, start_method="fork", keep_alive=True)

    def stop(self):
        self.pool.stop_and_join()

    def call(self, fn, *args):
        return self.pool.apply_async(fn, args=args).get()

    def submit_all(self, fn, items):
        rs = [self.pool.apply_async(fn, args=(x,)) for x in items]
        return [r.get() for r in rs]

    def map(self, fn, items, chunksize):
        return self.pool.map(fn, items, chunk_size=chunksize)

    def map_label(self, chunksize=None):
        return "WorkerPool.map(chunk_size=c)"


class Ray(Peer):
    """Ray tasks on a local Ray instance with num_cpus = workers. Ray has no
    chunked map over tasks: its batching is one task per chunk of items."""
    name, label, module = "ray", "Ray", "ray"
    slow_start = True

    def start(self, workers):
        import ray
        self.ray = ray
        self.remote = {}
        # Ray's workers are started by its raylet, which inherits this
        # environment: that is how they find workloads.py by reference.
        here = os.path.dirname(os.path.abspath(__file__))
        os.environ["PYTHONPATH"] = here + os.pathsep + os.environ.get("PYTHONPATH", "")
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")

    def stop(self):
        self.ray.shutdown()

    def _r(self, fn):
        r = self.remote.get(fn)
        if r is None:
            r = self.remote[fn] = self.ray.remote(fn)
        return r

    def call(self, fn, *args):
        return self.ray.get(self._r(fn).remote(*args))

    def submit_all(self, fn, items):
        r = self._r(fn)
        return self.ray.get([r.remote(x) for x in items])

    def map(self, fn, items, chunksize):
        r = self._r(map_chunk)
        parts = self.ray.get([r.remote(fn, chunk) for chunk in chunks_of(items, chunksize)])
        return [y for part in parts for y in part]

    def map_label(self, chunksize=None):
        return "one task per chunk (map_chunk.remote)"


# Order of the columns: multicore first, then the peers, then the reference.
PEERS = {cls.name: cls for cls in (Multicore, MpPool, Futures, Joblib, Mpire, Ray, InProcess)}
PEER_NAMES = [n for n in PEERS if n != "inprocess"]
