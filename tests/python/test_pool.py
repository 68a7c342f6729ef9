"""multicore.Pool: explicit pools beside the process-wide one (issue 5)."""

import gc
import os
import time

import numpy as np
import pytest

import multicore
from multicore.exceptions import PoolNotRunningError, WorkerInitError

from conftest import child_pids


def square(x):
    return x * x


def whoami():
    return os.getpid(), multicore.worker_state().get("name")


def name_a():
    multicore.worker_state()["name"] = "A"


def name_b():
    multicore.worker_state()["name"] = "B"


def failing_init():
    raise RuntimeError("no database here")


def make_array(n):
    return np.arange(n, dtype=np.float64)


def gone(pids, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(os.path.exists(f"/proc/{p}") for p in pids):
            return True
        time.sleep(0.01)
    return False


def run_all(pool_or_module, fn, n):
    task = pool_or_module.Task()
    for _ in range(n):
        task.run(fn)
    return task.get(timeout=30)


def test_pool_beside_the_process_wide_one():
    multicore.initialize(workers=2, worker_init=name_a)
    with multicore.Pool(workers=1, worker_init=name_b) as pool:
        assert pool.workers == 1
        mine = run_all(pool, whoami, 4)
        main = run_all(multicore, whoami, 4)
        assert {name for _, name in mine} == {"B"}
        assert {name for _, name in main} == {"A"}
        assert not {pid for pid, _ in mine} & {pid for pid, _ in main}
        assert pool.map(square, range(100)) == [x * x for x in range(100)]
        assert pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert sorted(pool.imap_unordered(square, range(10))) == \
            sorted(x * x for x in range(10))
        assert pool.stats()["worker_count"] == 1
        pool_pids = pool._handle._worker_pids()
    # closed: its processes are gone, the process-wide pool is untouched
    assert gone(pool_pids)
    assert pool.workers == 0
    assert multicore.map(square, range(3)) == [0, 1, 4]


def test_tasks_of_a_closed_pool_raise():
    pool = multicore.Pool(workers=1)
    task = pool.Task()
    pool.close()
    pool.close()                                     # harmless twice
    with pytest.raises(PoolNotRunningError):
        task.run(square, 2)
    with pytest.raises(PoolNotRunningError, match="closed"):
        pool.Task()
    with pytest.raises(PoolNotRunningError, match="closed"):
        pool.map(square, range(3))


def test_two_pools_and_no_process_wide_one():
    with multicore.Pool(workers=1) as p1, multicore.Pool(workers=2) as p2:
        assert p1.map(square, range(50)) == p2.map(square, range(50))
        assert multicore.Task() is None              # no initialize()
    assert child_pids() == [] or gone(child_pids())


def test_pool_closes_on_exception_and_when_collected():
    with pytest.raises(ZeroDivisionError):
        with multicore.Pool(workers=1) as pool:
            pids = pool._handle._worker_pids()
            1 / 0
    assert gone(pids)
    pool = multicore.Pool(workers=1)
    pids = pool._handle._worker_pids()
    del pool
    gc.collect()
    assert gone(pids)


def test_pool_worker_init_failure():
    with pytest.raises(WorkerInitError, match="no database here"):
        multicore.Pool(workers=1, worker_init=failing_init)


def test_arrays_from_a_pool_outlive_it():
    with multicore.Pool(workers=1) as pool:
        task = pool.Task()
        task.run(make_array, 1 << 17)
        array = task.get(timeout=30)[0]
    assert float(array.sum()) == float(np.arange(1 << 17).sum())


@pytest.mark.parametrize("bad, exc", [(0, ValueError), ("2", TypeError)])
def test_pool_bad_arguments(bad, exc):
    with pytest.raises(exc, match="workers"):
        multicore.Pool(workers=bad)


def test_executor_on_a_pool():
    import concurrent.futures as cf
    multicore.initialize(workers=1, worker_init=name_a)
    with multicore.Pool(workers=1, worker_init=name_b) as pool:
        with pool.Executor() as ex:
            futures = [ex.submit(whoami) for _ in range(10)]
            names = {f.result(timeout=30)[1] for f in cf.as_completed(futures)}
            assert names == {"B"}                # the Pool's workers, not A's
            assert list(ex.map(square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]
        assert pool.workers == 1                 # the executor did not stop it
    with pytest.raises(ValueError, match="not both"):
        multicore.Executor(2, pool=pool)
