"""multicore.Pool as multiprocessing.Pool: the behaviours issue 11 lists
(beyond CPython's own tests in conformance/test_mp_pool.py), each forced by
files the workers write and wait for, never by sleeps."""

import multiprocessing
import multiprocessing.pool
import os
import time

import pytest

import multicore
from multicore.exceptions import PoolClosedError, PoolNotRunningError, TimeoutExceededError


def wait_for(path, timeout=30.0):
    """Runs in a worker (or the test): until `path` exists."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)


def touch(path):
    with open(path, "w"):
        pass


def fail_first_then_finish(i, tmp):
    """Item 0 fails at once (saying so); item 1 runs on until `go`."""
    if i == 0:
        touch(os.path.join(tmp, "failed"))
        raise ValueError("item 0")
    touch(os.path.join(tmp, "started"))
    wait_for(os.path.join(tmp, "failed"))
    wait_for(os.path.join(tmp, "go"))
    touch(os.path.join(tmp, "done"))
    return i


def square(x):
    return x * x


def block(path):
    wait_for(path, timeout=60)
    return os.getpid()


def raise_runtime():
    raise RuntimeError("in the worker")


def numbers_then_error(n):
    yield from range(n)
    raise KeyError("the input")


def test_close_then_join_waits_for_a_failed_maps_siblings(tmp_path):
    tmp = str(tmp_path)
    pool = multicore.Pool(2)
    result = pool.starmap_async(fail_first_then_finish, [(0, tmp), (1, tmp)],
                                chunksize=1)
    wait_for(os.path.join(tmp, "started"))
    wait_for(os.path.join(tmp, "failed"))   # item 0 has failed, item 1 runs
    pool.close()
    assert not result.ready()               # the sibling was not cancelled
    touch(os.path.join(tmp, "go"))
    pool.join()
    assert os.path.exists(os.path.join(tmp, "done"))
    assert result.ready() and not result.successful()
    with pytest.raises(ValueError, match="item 0"):
        result.get(timeout=0)
    assert pool.workers == 0                # join() stopped the pool


def test_imap_input_error_after_the_results_before_it():
    with multicore.Pool(2) as pool:
        it = pool.imap(square, numbers_then_error(5))
        assert [next(it) for _ in range(5)] == [0, 1, 4, 9, 16]
        with pytest.raises(KeyError, match="the input"):
            next(it)
    # and multicore.imap on the process-wide pool alike
    multicore.initialize(workers=2)
    got = []
    with pytest.raises(KeyError, match="the input"):
        for value in multicore.imap(square, numbers_then_error(7), chunksize=2):
            got.append(value)
    assert got == [0, 1, 4, 9, 16, 25]       # the chunk [6] was cut: dropped


def test_a_closed_pool_raises_value_error():
    pool = multicore.Pool(1)
    pool.close()
    calls = [lambda: pool.apply(square, (1,)), lambda: pool.apply_async(square, (1,)),
             lambda: pool.map(square, [1]), lambda: pool.map_async(square, [1]),
             lambda: pool.imap(square, [1]), lambda: pool.imap_unordered(square, [1]),
             lambda: pool.starmap(pow, [(2, 2)]), lambda: pool.__enter__()]
    for call in calls:
        with pytest.raises(ValueError, match="Pool not running") as info:
            call()
        assert isinstance(info.value, PoolNotRunningError)   # multicore's too
        assert isinstance(info.value, PoolClosedError)
    pool.join()
    running = multicore.Pool(1)
    with pytest.raises(ValueError, match="still running"):
        running.join()
    running.terminate()


def test_timeouts_are_multiprocessing_timeout_errors(tmp_path):
    go = str(tmp_path / "go")
    assert issubclass(TimeoutExceededError, multiprocessing.TimeoutError)
    with multicore.Pool(1) as pool:
        result = pool.apply_async(block, (go,))
        with pytest.raises(multiprocessing.TimeoutError):
            result.get(timeout=0.05)
        with pytest.raises(ValueError, match="not ready"):
            result.successful()
        task = pool.Task()
        task.run(block, go)
        with pytest.raises(multiprocessing.TimeoutError):
            task.get(timeout=0.05)
        touch(go)
        assert result.get(timeout=30) > 0 and result.successful()


def test_the_remote_traceback_is_multiprocessings():
    with multicore.Pool(1) as pool:
        with pytest.raises(RuntimeError) as info:
            pool.apply(raise_runtime)
        assert type(info.value.__cause__) is multiprocessing.pool.RemoteTraceback
        assert 'raise RuntimeError("in the worker")' in info.value.__cause__.tb
        task = pool.Task()
        task.run(raise_runtime)
        with pytest.raises(RuntimeError) as info:
            task.get(timeout=30)
        assert type(info.value.__cause__) is multiprocessing.pool.RemoteTraceback


def test_maxtasksperchild_recycles_workers():
    with multicore.Pool(2, maxtasksperchild=2) as pool:
        pids = [pool.apply(os.getpid) for _ in range(8)]
        for pid in set(pids):
            assert pids.count(pid) <= 2
        assert len(set(pids)) >= 4
        # Every process that ran its 2 tasks retires (the two left live ran
        # at most one each, so at least 3 did); a retirement is counted as
        # its worker leaves, which can be after its last result arrived.
        retiring = sum(1 for pid in set(pids) if pids.count(pid) == 2)
        assert retiring >= 3
        deadline = time.monotonic() + 10
        while True:                   # every retirement, and its replacement
            stats = pool.stats()
            retired = sum(w["retirements"] for w in stats["workers"])
            if (stats["live_workers"] == 2 and retired == retiring and
                    sum(w["respawns"] for w in stats["workers"]) == retired):
                break
            assert time.monotonic() < deadline, stats
            time.sleep(0.01)
        assert all(w["start_failures"] == 0 for w in stats["workers"])
    for bad in (0, -1, 0.5, "12", True):
        with pytest.raises(ValueError, match="max_tasks_per_worker"):
            multicore.Pool(1, maxtasksperchild=bad)


def test_terminate_stops_running_tasks_and_fails_pending_results(tmp_path):
    never = str(tmp_path / "never")
    pool = multicore.Pool(2)
    pids = pool._handle._worker_pids()
    results = [pool.apply_async(block, (never,)) for _ in range(6)]
    started = time.monotonic()
    pool.terminate()
    assert time.monotonic() - started < 8      # not the 60 s the tasks wait
    for result in results:
        with pytest.raises(PoolClosedError, match="terminated"):
            result.get(timeout=0)
    pool.join()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_callbacks_run_before_the_result_is_ready():
    seen = []
    with multicore.Pool(2) as pool:
        r = pool.apply_async(square, (3,), callback=seen.append)
        assert r.get(timeout=30) == 9 and seen == [9]
        r = pool.map_async(int, ["1", "x"], chunksize=1, callback=seen.append,
                           error_callback=seen.append)
        r.wait(30)
        assert r.ready() and isinstance(seen[-1], ValueError)
        assert sorted(pool.imap_unordered(square, range(20), chunksize=3)) == \
            [x * x for x in range(20)]


def test_initializer_and_initargs():
    def init(path, text):
        with open(path, "a") as f:
            f.write(text)
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "log")
        pool = multicore.Pool(2, init, (path, "x"))
        pool.close()
        pool.join()
        with open(path) as f:
            assert f.read() == "xx"
    with pytest.raises(TypeError, match="initializer"):
        multicore.Pool(1, initializer=1)
