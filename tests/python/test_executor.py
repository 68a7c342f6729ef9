"""multicore.Executor bugs of issue 11 (each failed before its fix)."""

import concurrent.futures as cf
import gc
import threading
import time

import pytest

import multicore
from multicore.exceptions import PoolNotRunningError


def sleep_then(value, seconds):
    time.sleep(seconds)
    return value


def square(x):
    return x * x


def test_cancelled_pending_future_is_reported_done(pool):
    with multicore.Executor() as ex:
        blockers = [ex.submit(sleep_then, i, 1.0) for i in range(5)]  # fill the pool
        last = ex.submit(square, 3)
        assert last.cancel()
        done, not_done = cf.wait([last], timeout=5)
        assert done == {last} and last.cancelled()
        assert all(f.running() or f.done() for f in blockers)
        ex.shutdown(cancel_futures=True)


def test_dropped_executors_leave_no_threads(pool):
    before = threading.active_count()
    for _ in range(5):
        ex = multicore.Executor()
        assert ex.submit(square, 2).result(timeout=30) == 4
        del ex
    gc.collect()
    deadline = time.monotonic() + 10
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before


def test_unpicklable_argument_gives_a_failing_future(pool):
    with multicore.Executor() as ex:
        future = ex.submit(square, threading.Lock())
        with pytest.raises(TypeError):
            future.result(timeout=30)


def test_messages_and_repr(pool):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        multicore.Executor(max_workers=0)
    with multicore.Executor() as ex:
        assert repr(ex.submit(square, 2)).startswith("<Future at ")


def test_pool_not_running_is_a_runtime_error():
    assert issubclass(PoolNotRunningError, RuntimeError)
