"""multicore.Executor as concurrent.futures specifies (issue 11, part 1):
each test failed before its fix. CPython's own suite runs in
conformance/concurrent_futures/; these cover what it cannot reach (its
tests of private attributes, the "fork"-only branches) and multicore's
deliberate differences."""

import concurrent.futures as cf
import gc
import os
import pickle
import sys
import textwrap
import threading
import time
import weakref
from concurrent.futures.process import BrokenProcessPool

import pytest

import multicore
from multicore import executor as executor_module
from multicore.exceptions import (ArgumentsUnpicklingError,
                                  CallableNotFoundError, MulticoreError,
                                  PoolNotRunningError, RemoteTraceback,
                                  ResultUnpicklingError, WorkerDiedError,
                                  WorkerInitError)

from conftest import child_pids, exited


# -- what the workers run (defined before any pool starts) -------------------

def square(x):
    return x * x


def mul(x, y):
    return x * y


def gated(started, go, value):
    """Say it runs (creates `started`), then wait for the file `go`."""
    if started:
        open(started, "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the test never created {go}")
        time.sleep(0.005)
    return value


class Payload:
    pass


def make_payload():
    return Payload()


def raise_123():
    raise RuntimeError(123)  # the line the remote traceback shows


def exit_worker(status):
    os._exit(status)


def _raise_unpickling():
    raise pickle.UnpicklingError("no such result here")


class UnpicklesBadly:
    def __reduce__(self):
        return _raise_unpickling, ()


def return_unpickles_badly():
    return UnpicklesBadly()


LAMBDA = lambda: 1  # noqa: E731 (pickled by reference: its name does not resolve)


def failing_init():
    raise ValueError("no database here")


INIT_STATE = "unset"


def set_state(value):
    global INIT_STATE
    INIT_STATE = value


def get_state():
    return INIT_STATE, os.getpid()


# -- helpers ----------------------------------------------------------------

def wait_until(predicate, timeout=30.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def thread_errors(monkeypatch):
    """Exceptions that escaped a thread (the collector's, above all)."""
    errors = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args))
    return errors


# -- states: PENDING, RUNNING, CANCELLED_AND_NOTIFIED ------------------------

def test_cancelled_pending_future_is_reported_done(pool, tmp_path):
    go = tmp_path / "go"
    with multicore.Executor() as ex:
        # 2 workers: 2 * 2 + 1 = 5 calls handed over, the 6th waits
        blockers = [ex.submit(gated, None, str(go), i) for i in range(5)]
        last = ex.submit(square, 3)
        assert not last.running() and not last.done()
        assert last.cancel()
        done, not_done = cf.wait([last], timeout=5)
        assert done == {last} and last.cancelled()
        assert list(cf.as_completed([last], timeout=5)) == [last]
        assert all(f.running() for f in blockers)
        go.touch()
        assert [f.result(timeout=30) for f in blockers] == list(range(5))


def test_future_is_running_while_its_task_runs(pool, tmp_path):
    started, go = tmp_path / "started", tmp_path / "go"
    with multicore.Executor() as ex:
        future = ex.submit(gated, str(started), str(go), "value")
        wait_until(started.exists, what="the task to start")
        assert future.running() and not future.done()
        go.touch()
        assert future.result(timeout=30) == "value"
        assert not future.running() and future.done()


# -- cancel() racing a completion --------------------------------------------

def test_cancel_racing_a_completion(pool, monkeypatch, thread_errors):
    """The collector has read the result and is about to settle the future
    when cancel() comes: cancel() wins, and the collector goes on."""
    paused, resume = threading.Event(), threading.Event()
    real_settle = executor_module._settle

    def settle_paused(future, ok, value):
        if ok and value == 9 and not paused.is_set():
            paused.set()
            assert resume.wait(30)
        real_settle(future, ok, value)

    monkeypatch.setattr(executor_module, "_settle", settle_paused)
    with multicore.Executor() as ex:
        future = ex.submit(square, 3)
        assert paused.wait(30)               # the collector holds the result
        assert future.running()
        assert future.cancel()               # the result is not wanted now
        resume.set()
        assert future.cancelled()
        assert cf.wait([future], timeout=5).done == {future}
        # The collector survived the lost race: later calls are settled.
        assert ex.submit(square, 4).result(timeout=30) == 16
        # The other order: settled first, then cancel() is refused.
        settled = ex.submit(square, 5)
        assert settled.result(timeout=30) == 25
        assert not settled.cancel()
    assert thread_errors == []


# -- what the collector keeps ------------------------------------------------

def test_settled_results_are_not_kept_alive(pool):
    with multicore.Executor() as ex:
        future = ex.submit(make_payload)
        payload = future.result(timeout=30)
        assert isinstance(payload, Payload)
        ref = weakref.ref(payload)
        del future, payload
        # no further work, no shutdown: only the collector going back to sleep
        wait_until(lambda: gc.collect() is not None and ref() is None,
                   timeout=10, what="the result to be freed")


def test_dropped_executors_leave_no_threads(pool):
    before = threading.active_count()
    for _ in range(5):
        ex = multicore.Executor()
        assert ex.submit(square, 2).result(timeout=30) == 4
        del ex
    gc.collect()
    wait_until(lambda: threading.active_count() == before, timeout=10,
               what="the collector threads to end")


def test_dropped_executor_finishes_its_calls(pool):
    """ProcessPoolShutdownTest.test_del_shutdown, on multicore's thread."""
    ex = multicore.Executor()
    results = ex.map(abs, range(-5, 5))
    thread = ex._executor_manager_thread
    del ex
    gc.collect()
    thread.join(30)
    assert not thread.is_alive()
    assert list(results) == [abs(v) for v in range(-5, 5)]


# -- the collector sleeps until a task finishes ---------------------------------

def test_the_collector_waits_without_polling(pool, tmp_path, monkeypatch):
    waits = []
    real_wait_first = executor_module.wait_first

    def counting_wait_first(tasks, timeout=None):
        waits.append(timeout)
        return real_wait_first(tasks, timeout)

    monkeypatch.setattr(executor_module, "wait_first", counting_wait_first)
    started, go = tmp_path / "started", tmp_path / "go"
    with multicore.Executor() as ex:
        slow = ex.submit(gated, str(started), str(go), "slow")
        wait_until(started.exists, what="the task to start")
        time.sleep(0.5)                      # time for a poll to show itself
        assert waits == [None]               # one wait, no timeout of its own
        # A call handed over while the collector waits is seen when it ends.
        assert ex.submit(square, 5).result(timeout=30) == 25
        assert not slow.done()
        go.touch()
        assert slow.result(timeout=30) == "slow"


def test_shutdown_after_cancelling_every_running_call(pool, tmp_path):
    """The collector, asleep on tasks that are all cancelled, still ends."""
    go = tmp_path / "never"
    ex = multicore.Executor()
    futures = [ex.submit(gated, None, str(go), i) for i in range(5)]
    assert all(f.running() for f in futures)
    assert all(f.cancel() for f in futures)
    closer = threading.Thread(target=ex.shutdown)
    closer.start()
    closer.join(30)
    assert not closer.is_alive()
    assert all(f.cancelled() for f in futures)


def voluntary_switches(thread):
    with open(f"/proc/self/task/{thread.native_id}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc")


def test_an_idle_collector_does_not_wake(pool):
    with multicore.Executor() as ex:
        assert ex.submit(square, 2).result(timeout=30) == 4
        thread = ex._executor_manager_thread
        wait_until(lambda: sys._current_frames()[thread.ident].f_code.co_name == "wait",
                   what="the collector to go back to sleep")
        before = voluntary_switches(thread)
        time.sleep(0.5)                      # a 50 ms poll would wake it 10 times
        assert voluntary_switches(thread) - before <= 1
        assert thread.is_alive()


# -- shutdown and interpreter exit run what is pending ----------------------

def test_shutdown_without_wait_runs_pending_calls(pool, tmp_path):
    go = tmp_path / "go"
    ex = multicore.Executor()
    futures = [ex.submit(gated, None, str(go), i) for i in range(12)]
    assert sum(not f.running() and not f.done() for f in futures) == 7
    thread = ex._executor_manager_thread
    ex.shutdown(wait=False)
    go.touch()
    assert [f.result(timeout=30) for f in futures] == list(range(12))
    thread.join(30)
    assert not thread.is_alive()


def test_interpreter_exit_runs_pending_calls(run_python, tmp_path):
    go = tmp_path / "go"
    script = textwrap.dedent(f"""
        import os, threading, time
        import multicore

        def work(i):
            while not os.path.exists({str(go)!r}):
                time.sleep(0.005)
            print("ran", i, flush=True)

        ex = multicore.Executor(max_workers=2)
        futures = [ex.submit(work, i) for i in range(12)]

        def at_exit():   # runs before multicore's own hook (LIFO)
            pending = sum(not f.running() and not f.done() for f in futures)
            print("pending at exit", pending, flush=True)
            open({str(go)!r}, "w").close()

        threading._register_atexit(at_exit)
        """)
    proc = run_python(script)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "pending at exit 7", proc.stdout
    assert sorted(lines[1:]) == sorted(f"ran {i}" for i in range(12)), proc.stdout
    assert proc.stderr == ""


def test_context_manager_reaps_the_workers():
    """ProcessPoolShutdownTest.test_context_manager_shutdown, with the pids
    of multicore's workers."""
    with multicore.Executor(max_workers=3) as ex:
        pids = set(multicore._multicore._worker_pids())
        assert len(pids) == 3
        assert list(ex.map(abs, range(-5, 5))) == [5, 4, 3, 2, 1, 0, 1, 2, 3, 4]
    assert all(exited(pid) for pid in pids)
    assert child_pids() == []


# -- failures -----------------------------------------------------------------

def test_unpicklable_argument_gives_a_failing_future(pool):
    with multicore.Executor() as ex:
        future = ex.submit(square, threading.Lock())
        with pytest.raises(TypeError):
            future.result(timeout=30)


def test_unpicklable_callable_gives_a_failing_future(pool, monkeypatch):
    with multicore.Executor() as ex:
        future = ex.submit(LAMBDA)
        with pytest.raises(pickle.PicklingError):
            future.result(timeout=30)

        def late():
            return 2

        # a module-level function the workers, forked before, do not have
        late.__name__ = late.__qualname__ = "defined_after_the_pool_started"
        monkeypatch.setattr(sys.modules[__name__], late.__name__, late,
                            raising=False)
        future = ex.submit(late)
        with pytest.raises(CallableNotFoundError):
            future.result(timeout=30)
        assert isinstance(future.exception(), BrokenProcessPool)
        assert ex.submit(square, 2).result(timeout=30) == 4


def test_the_remote_traceback(pool, capsys):
    """ProcessPoolExecutorTest.test_traceback, but for the type of the cause,
    multiprocessing's public RemoteTraceback."""
    with multicore.Executor() as ex:
        error = ex.submit(raise_123).exception(timeout=30)
    assert type(error) is RuntimeError and error.args == (123,)
    assert type(error.__cause__) is RemoteTraceback
    assert "raise RuntimeError(123)  # the line the remote traceback shows" \
        in error.__cause__.tb
    try:
        raise error
    except RuntimeError:
        sys.excepthook(*sys.exc_info())
    assert "# the line the remote traceback shows" in capsys.readouterr().err


def test_a_dead_worker_fails_only_its_future(pool):
    with multicore.Executor() as ex:
        error = ex.submit(exit_worker, 3).exception(timeout=30)
        assert isinstance(error, WorkerDiedError) and error.exit_status == 3
        assert isinstance(error, BrokenProcessPool)
        assert ex.submit(square, 6).result(timeout=30) == 36   # not broken


def test_a_result_that_does_not_unpickle(pool):
    with multicore.Executor() as ex:
        error = ex.submit(return_unpickles_badly).exception(timeout=30)
        assert isinstance(error, ResultUnpicklingError)
        assert isinstance(error, BrokenProcessPool)
        assert isinstance(error.__cause__, pickle.UnpicklingError)
        assert "return_unpickles_badly" in str(error)
        assert ex.submit(square, 7).result(timeout=30) == 49   # not broken


def test_machinery_errors_are_broken_process_pool():
    for cls in (WorkerDiedError, ArgumentsUnpicklingError, CallableNotFoundError,
                WorkerInitError, ResultUnpicklingError):
        assert issubclass(cls, MulticoreError) and issubclass(cls, BrokenProcessPool)
    assert issubclass(PoolNotRunningError, RuntimeError)


def test_messages_and_repr(pool):
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        multicore.Executor(max_workers=0)
    with multicore.Executor() as ex:
        assert repr(ex.submit(square, 2)).startswith("<Future at ")


# -- initializer= and max_tasks_per_child= -----------------------------------

def test_initializer_runs_in_the_executors_own_workers():
    multicore.initialize(workers=1)              # the process-wide pool, without it
    with multicore.Executor(max_workers=2, initializer=set_state,
                            initargs=("ready",)) as ex:
        assert ex._executor_manager_thread is None   # forked at the first submit
        states = [f.result(timeout=30) for f in [ex.submit(get_state)
                                                  for _ in range(8)]]
        pids = {pid for _, pid in states}
    assert {state for state, _ in states} == {"ready"}
    assert not pids & set(multicore._multicore._worker_pids())
    assert all(exited(pid) for pid in pids)      # its pool stopped at shutdown()
    task = multicore.Task()
    task.run(get_state)
    assert task.get(timeout=30)[0][0] == "unset"


def test_failing_initializer_breaks_the_executor(caplog):
    """As ProcessPoolExecutor: work submitted fails with BrokenProcessPool,
    and the initializer's traceback is logged on "concurrent.futures"."""
    ex = multicore.Executor(max_workers=2, initializer=failing_init)
    assert not ex._broken
    with caplog.at_level("CRITICAL", logger="concurrent.futures"):
        with pytest.raises(BrokenProcessPool) as info:
            ex.submit(square, 2)
    assert isinstance(info.value.__cause__, WorkerInitError)
    assert "ValueError: no database here" in str(info.value.__cause__)
    assert any("ValueError: no database here" in r.getMessage()
               for r in caplog.records if r.name == "concurrent.futures")
    assert ex._broken
    with pytest.raises(BrokenProcessPool) as info:
        ex.submit(square, 2)
    assert isinstance(info.value.__cause__, WorkerInitError)
    with pytest.raises(BrokenProcessPool):
        list(ex.map(square, range(3)))
    ex.shutdown()
    assert child_pids() == []


def test_max_tasks_per_child_recycles_the_workers():
    with multicore.Executor(max_workers=1, max_tasks_per_child=2) as ex:
        pids = [ex.submit(os.getpid).result(timeout=30) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5], pids
    assert len(set(pids)) == 3, pids
    assert all(exited(pid) for pid in pids)


def test_max_tasks_per_child_early_shutdown():
    """ProcessPoolExecutorTest.test_max_tasks_early_shutdown (which CPython
    skips under "fork", multicore's only start method)."""
    ex = multicore.Executor(3, max_tasks_per_child=1)
    futures = [ex.submit(mul, i, i) for i in range(6)]
    ex.shutdown()
    assert [f.result() for f in futures] == [i * i for i in range(6)]


def test_max_tasks_per_child_is_checked():
    with pytest.raises(TypeError, match="max_tasks_per_child must be an integer"):
        multicore.Executor(max_tasks_per_child=1.5)
    with pytest.raises(ValueError, match="max_tasks_per_child must be >= 1"):
        multicore.Executor(max_tasks_per_child=0)
    with multicore.Pool(1) as pool:
        with pytest.raises(ValueError, match="not both"):
            multicore.Executor(pool=pool, max_tasks_per_child=2)
