"""The interfaces of issue 5 on the same pool as Task: map, imap,
imap_unordered, starmap, progress, and multicore.Executor.

Task functions are module level, defined before initialize().
"""

import asyncio
import concurrent.futures as cf
import io
import os
import time

import pytest

import multicore
from multicore import _multicore
from multicore.exceptions import PoolNotRunningError, RemoteTraceback

from conftest import child_pids

# ---------------------------------------------------------------------------
# Task functions
# ---------------------------------------------------------------------------


def square(x):
    return x * x


def add(a, b):
    return a + b


def fail_at_57(x):
    if x == 57:
        raise ValueError("item 57 is bad")
    time.sleep(0.001)
    return x


def sleep_then(x, seconds):
    time.sleep(seconds)
    return x


def slow_square(x):
    time.sleep(0.02)
    return x * x


# ---------------------------------------------------------------------------
# map and friends
# ---------------------------------------------------------------------------


def test_map_starmap_imap_results(pool):
    assert multicore.map(square, range(1000)) == [x * x for x in range(1000)]
    assert multicore.starmap(add, [(1, 2), (3, 4), (5, 6)]) == [3, 7, 11]
    assert list(multicore.imap(square, iter(range(500)))) == \
        [x * x for x in range(500)]
    assert sorted(multicore.imap_unordered(square, range(500))) == \
        sorted(x * x for x in range(500))
    assert multicore.map(square, []) == []


def test_imap_unordered_yields_in_finishing_order(pool):
    # chunk size 1: the 0.5 s item must come out after the quick ones
    items = [(0, 0.5), (1, 0.0), (2, 0.0), (3, 0.0)]
    out = list(multicore.imap_unordered(_sleep_item, items, chunksize=1))
    assert sorted(out) == [0, 1, 2, 3]
    assert out[-1] == 0


def _sleep_item(pair):
    return sleep_then(*pair)


def test_input_is_consumed_lazily_with_bounded_items_in_flight(pool):
    pulled = {"n": 0}

    def million():
        for i in range(1_000_000):
            pulled["n"] += 1
            yield i

    results = multicore.imap(square, million())
    first = [next(results) for _ in range(10)]
    assert first == [x * x for x in range(10)]
    # Only a few chunks were taken, not the million.
    assert pulled["n"] < 50_000, pulled["n"]
    results.close()                     # stopping early cancels the rest
    assert multicore.map(square, range(3)) == [0, 1, 4]


def test_chunk_size_adapts_to_fast_items(pool):
    before = sum(w["tasks_done"] for w in multicore.stats()["workers"])
    assert sum(multicore.imap(square, range(200_000))) == \
        sum(x * x for x in range(200_000))
    tasks = sum(w["tasks_done"] for w in multicore.stats()["workers"]) - before
    print(f"200,000 items in {tasks} chunks")
    assert tasks < 2_000                # chunks grew far beyond one item


def test_given_chunksize_is_used(pool):
    before = sum(w["tasks_done"] for w in multicore.stats()["workers"])
    multicore.map(square, range(100), chunksize=10)
    tasks = sum(w["tasks_done"] for w in multicore.stats()["workers"]) - before
    assert tasks == 10


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_chunksize(pool, bad):
    with pytest.raises(ValueError, match="chunksize"):
        multicore.map(square, range(10), chunksize=bad)


def test_first_exception_cancels_the_rest_and_keeps_the_traceback(pool):
    start = time.monotonic()
    with pytest.raises(ValueError, match="item 57 is bad") as info:
        multicore.map(fail_at_57, range(100_000), chunksize=1)
    assert time.monotonic() - start < 10     # did not run 100,000 items
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fail_at_57" in str(info.value.__cause__)
    deadline = time.monotonic() + 2     # idle workers drop cancelled entries
    while multicore.stats()["queued"] and time.monotonic() < deadline:
        time.sleep(0.005)
    assert multicore.stats()["queued"] == 0
    assert multicore.map(square, range(5)) == [0, 1, 4, 9, 16]


def test_map_timeout(pool):
    with pytest.raises(multicore.exceptions.TimeoutExceededError):
        multicore.map(_sleep_item, [(1, 5.0)], timeout=0.2)
    assert multicore.map(square, range(3)) == [0, 1, 4]


def test_map_needs_a_running_pool():
    with pytest.raises(PoolNotRunningError, match="initialize"):
        multicore.map(square, range(3))


def test_progress_line_on_stderr_when_asked(pool, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setitem(__import__("sys").modules, "tqdm", None)  # built-in
    assert multicore.map(square, range(100), progress="always") == \
        [x * x for x in range(100)]
    text = stream.getvalue()
    assert "100/100" in text and "it/s" in text and "ETA" in text


def test_progress_is_quiet_when_stderr_is_not_a_terminal(pool, monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    multicore.map(square, range(100), progress=True)
    assert stream.getvalue() == ""


# ---------------------------------------------------------------------------
# Executor
# ---------------------------------------------------------------------------


def test_executor_submit_as_completed_and_wait(pool):
    with multicore.Executor() as ex:
        futures = [ex.submit(square, i) for i in range(200)]
        assert sorted(f.result(timeout=30) for f in cf.as_completed(futures)) \
            == sorted(i * i for i in range(200))
        slow = ex.submit(sleep_then, "slow", 2.0)
        fast = ex.submit(sleep_then, "fast", 0.01)
        done, not_done = cf.wait([slow, fast], return_when=cf.FIRST_COMPLETED,
                                 timeout=10)
        assert fast in done and slow in not_done
        assert slow.result(timeout=10) == "slow"


def test_executor_map_with_chunksize_and_timeout(pool):
    with multicore.Executor() as ex:
        assert list(ex.map(square, range(100), chunksize=7)) == \
            [i * i for i in range(100)]
        assert list(ex.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]
        with pytest.raises(cf.TimeoutError):
            list(ex.map(sleep_then, ["x"], [5.0], timeout=0.2))


def test_executor_exception_is_the_tasks(pool):
    with multicore.Executor() as ex:
        future = ex.submit(fail_at_57, 57)
        error = future.exception(timeout=30)
        assert isinstance(error, ValueError)
        assert isinstance(error.__cause__, RemoteTraceback)


def test_executor_with_asyncio_run_in_executor(pool):
    async def main(ex):
        loop = asyncio.get_running_loop()
        return await asyncio.gather(
            *[loop.run_in_executor(ex, slow_square, i) for i in range(10)])

    with multicore.Executor() as ex:
        assert asyncio.run(main(ex)) == [i * i for i in range(10)]


def mark_then_sleep(path, seconds):
    open(path, "w").close()                     # the task has started
    time.sleep(seconds)


def test_cancelling_a_running_future_stops_its_worker(pool, tmp_path):
    started = tmp_path / "started"
    with multicore.Executor() as ex:
        future = ex.submit(mark_then_sleep, str(started), 3600)
        deadline = time.monotonic() + 30
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert started.exists()                 # now running in a worker
        assert future.cancel() and future.cancelled()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and \
                sum(w["cancel_kills"] for w in multicore.stats()["workers"]) < 1:
            time.sleep(0.01)
        assert sum(w["cancel_kills"] for w in multicore.stats()["workers"]) == 1
        assert ex.submit(square, 3).result(timeout=10) == 9


def test_shutdown_cancel_futures(pool):
    ex = multicore.Executor()
    futures = [ex.submit(sleep_then, i, 0.5) for i in range(20)]
    ex.shutdown(wait=True, cancel_futures=True)
    assert all(f.done() for f in futures)
    assert any(f.cancelled() for f in futures)
    with pytest.raises(RuntimeError, match="shutdown"):
        ex.submit(square, 1)


def test_executor_starts_and_stops_its_own_pool():
    assert _multicore._zygote_pid() is None
    with multicore.Executor(max_workers=2) as ex:
        assert multicore.NUMBER_OF_WORKERS == 2
        assert ex.submit(os.getpid).result(timeout=30) != os.getpid()
    assert _multicore._zygote_pid() is None
    deadline = time.monotonic() + 2
    while child_pids() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child_pids() == []
