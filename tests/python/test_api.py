"""The Python API of the original multicore, sentence by sentence (issue 2).

Functions used as tasks are defined at module level, i.e. before any
initialize(): the workers are forked later and see them.
"""

import os
import pickle
import sys
import threading
import time

import numpy as np
import pytest

import multicore
from multicore import Task, initialize, shutdown
from multicore import _multicore
from multicore.exceptions import (
    ArgumentsUnpicklingError,
    CallableNotFoundError,
    InputBufferTooSmallError,
    MulticoreError,
    NoAvailableInputBufferError,
    PoolNotRunningError,
    RemoteTraceback,
    TaskCompleteError,
    TimeoutExceededError,
    WorkerDiedError,
    WorkerInitError,
)
from multicore.utils import ranges

# ---------------------------------------------------------------------------
# Task functions (module level, defined before initialize())
# ---------------------------------------------------------------------------

BIG_GLOBAL = list(range(10_000))
MUTABLE_GLOBAL = {"value": "at import"}


def square(x):
    return x * x


def combine(a, b, *, c=0, d=None):
    return (a, b, c, d)


def sleep_then(value, seconds):
    time.sleep(seconds)
    return value


def identity(x):
    return x


def pid():
    return os.getpid()


def global_sum():
    return sum(BIG_GLOBAL)


def read_mutable_global():
    return MUTABLE_GLOBAL["value"]


def fail_with(message, seconds=0.0):
    time.sleep(seconds)
    raise ValueError(message)


class UnpicklableError(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = threading.Lock()


def raise_unpicklable():
    raise UnpicklableError("cannot travel")


def call_sys_exit(code):
    sys.exit(code)


def raise_keyboard_interrupt():
    raise KeyboardInterrupt


def return_value(value):
    return value


def exit_worker(status):
    os._exit(status)


def kill_worker():
    import signal
    os.kill(os.getpid(), signal.SIGKILL)


def deep_recursion(n):
    return deep_recursion(n + 1)


_INIT_STATE = {"pid": None, "calls": 0}


def record_init():
    _INIT_STATE["pid"] = os.getpid()
    _INIT_STATE["calls"] += 1


def init_state():
    return (_INIT_STATE["pid"], _INIT_STATE["calls"], os.getpid())


def failing_init():
    raise RuntimeError("worker_init exploded on purpose")


# ---------------------------------------------------------------------------
# Imports and exceptions
# ---------------------------------------------------------------------------

def test_public_names():
    assert callable(initialize) and callable(shutdown)
    assert isinstance(Task, type)
    for cls in (TimeoutExceededError, NoAvailableInputBufferError,
                InputBufferTooSmallError, TaskCompleteError, WorkerDiedError,
                PoolNotRunningError, CallableNotFoundError, WorkerInitError):
        assert issubclass(cls, MulticoreError)
    assert issubclass(MulticoreError, Exception)
    assert str(RemoteTraceback("Traceback text")) == "Traceback text"
    err = WorkerDiedError("died", pid=12, signal=9, exit_status=None)
    assert (err.pid, err.signal, err.exit_status) == (12, 9, None)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.pid, copy.signal, str(copy)) == (12, 9, "died")


# ---------------------------------------------------------------------------
# initialize / shutdown
# ---------------------------------------------------------------------------

def test_task_is_none_when_not_initialized():
    assert Task() is None
    assert Task(max_load_average=1e9) is None


def test_initialize_twice_is_harmless():
    initialize(workers=2)
    pids = set(_multicore._worker_pids())
    initialize(workers=3)        # no-op: the running pool stays
    assert multicore.NUMBER_OF_WORKERS == 2
    assert set(_multicore._worker_pids()) == pids
    task = Task()
    task.run(square, 7)
    assert task.get() == [49]


def test_shutdown_twice_is_harmless():
    shutdown()                   # not running yet
    initialize(workers=2)
    shutdown()
    shutdown()
    assert Task() is None


def test_initialize_again_after_shutdown():
    for _ in range(3):
        initialize(workers=2)
        task = Task()
        task.run(square, 3)
        assert task.get() == [9]
        shutdown()
        assert Task() is None


def test_workers_n():
    initialize(workers=3)
    assert multicore.NUMBER_OF_WORKERS == 3
    assert len(_multicore._worker_pids()) == 3
    task = Task()
    for _ in range(30):
        task.run(sleep_then, None, 0.01)
    task.get()


def test_number_of_workers_follows_the_pool():
    cpus = os.cpu_count()
    assert multicore.NUMBER_OF_WORKERS == cpus
    initialize(workers=3)
    assert multicore.NUMBER_OF_WORKERS == 3
    from multicore import NUMBER_OF_WORKERS
    assert NUMBER_OF_WORKERS == 3
    shutdown()
    assert multicore.NUMBER_OF_WORKERS == cpus
    with pytest.raises(AttributeError):
        multicore.NO_SUCH_NAME


@pytest.mark.parametrize("workers, exc", [
    (0, ValueError), (-1, ValueError), ("2", TypeError), (2.0, TypeError),
])
def test_initialize_bad_workers(workers, exc):
    with pytest.raises(exc):
        initialize(workers=workers)
    assert Task() is None


def test_initialize_non_callable_worker_init():
    with pytest.raises(TypeError):
        initialize(worker_init=42)
    assert Task() is None


def test_worker_init_runs_once_in_every_worker(tmp_path):
    log = tmp_path / "init.log"

    def init():
        record_init()
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")

    initialize(workers=3, worker_init=init)
    worker_pids = set(_multicore._worker_pids())
    assert len(worker_pids) == 3
    logged = [int(line) for line in log.read_text().split()]
    assert sorted(logged) == sorted(worker_pids)   # once in every worker
    task = Task()
    for _ in range(30):
        task.run(init_state)
    for init_pid, calls, worker_pid in task.get():
        assert init_pid == worker_pid
        assert calls == 1
        assert worker_pid in worker_pids


def test_failing_worker_init_raises_with_traceback():
    with pytest.raises(WorkerInitError) as info:
        initialize(workers=2, worker_init=failing_init)
    text = str(info.value)
    assert "worker_init exploded on purpose" in text
    assert "Traceback" in text and "failing_init" in text
    assert Task() is None             # the pool was stopped
    initialize(workers=2)             # and a new one starts
    task = Task()
    task.run(square, 4)
    assert task.get() == [16]


# ---------------------------------------------------------------------------
# Task(max_load_average)
# ---------------------------------------------------------------------------

def test_max_load_average(pool):
    # A threshold no load average can exceed, and one that every load
    # average (always >= 0) exceeds: both branches, whatever the machine does.
    assert isinstance(Task(max_load_average=1e9), Task)
    assert Task(max_load_average=-1) is None
    with pytest.raises(TypeError):
        Task(max_load_average="high")


# ---------------------------------------------------------------------------
# run / get
# ---------------------------------------------------------------------------

def test_run_with_args_and_kwargs(pool):
    task = Task()
    assert task.run(combine, 1, 2) is None
    task.run(combine, "a", b="b", c=3)
    task.run(combine, 1, [2], d={"k": (1, 2)})
    assert task.get() == [(1, 2, 0, None), ("a", "b", 3, None),
                          (1, [2], 0, {"k": (1, 2)})]


def test_results_in_submission_order(pool):
    task = Task()
    n = 40
    for i in range(n):
        # earlier parts sleep longer, so they finish later
        task.run(sleep_then, i, (n - i) * 0.002)
    assert task.get() == list(range(n))


def test_get_without_runs_returns_empty_list(pool):
    task = Task()
    assert task.get() == []
    with pytest.raises(TaskCompleteError):
        task.get()


def test_pickle_format_bytes_and_numpy(pool):
    blob = bytes(range(256)) * 100
    array = np.arange(1000, dtype=np.float64).reshape(10, 100)
    task = Task()
    task.run(identity, blob)
    task.run(identity, array)
    task.run(identity, {"nested": [array, blob]}, serialization_format="pickle")
    r_blob, r_array, r_nested = task.get()
    assert r_blob == blob
    np.testing.assert_array_equal(r_array, array)
    assert r_array.dtype == array.dtype
    np.testing.assert_array_equal(r_nested["nested"][0], array)
    assert r_nested["nested"][1] == blob


def test_json_format(pool):
    task = Task()
    task.run(identity, {"a": [1, 2.5, None, True, "é"]}, serialization_format="json")
    task.run(identity, (1, 2), serialization_format="json")
    assert task.get() == [{"a": [1, 2.5, None, True, "é"]}, [1, 2]]


def test_json_format_unencodable_result(pool):
    task = Task()
    task.run(identity, {1, 2}, serialization_format="json")
    with pytest.raises(TypeError, match="JSON serializable"):
        task.get()


def test_string_format(pool):
    task = Task()
    task.run(identity, "héllo ✓ wörld", serialization_format="string")
    task.run(identity, "", serialization_format="string")
    task.run(str, 123, serialization_format="string")
    assert task.get() == ["héllo ✓ wörld", "", "123"]


def test_string_format_needs_str(pool):
    task = Task()
    task.run(identity, 42, serialization_format="string")
    with pytest.raises(TypeError,
                       match="serialization_format='string' needs a str result, got int"):
        task.get()


def test_unknown_format_is_value_error_at_run(pool):
    task = Task()
    with pytest.raises(ValueError) as info:
        task.run(identity, 1, serialization_format="yaml")
    for name in ("'pickle'", "'json'", "'string'"):
        assert name in str(info.value)
    task.run(identity, 1)      # the task is still usable
    assert task.get() == [1]


def test_use_dill_lambda_and_closure(pool):
    offset = 10

    def closure(x):
        return x + offset

    task = Task()
    task.run(lambda x: x * 3, 4, use_dill=True)
    task.run(closure, 5, use_dill=True)
    task.run(lambda **kw: sorted(kw), use_dill=True, b=1, a=2)
    assert task.get() == [12, 15, ["a", "b"]]


def test_lambda_without_dill_fails_at_run(pool):
    task = Task()
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        task.run(lambda x: x, 1)


def test_unpicklable_argument_fails_at_run(pool):
    task = Task()
    with pytest.raises(TypeError):
        task.run(identity, threading.Lock())
    task.run(identity, 2)
    assert task.get() == [2]


def test_use_dill_without_dill_installed(run_python):
    proc = run_python(
        "import sys\n"
        "sys.modules['dill'] = None   # dill is not installed\n"
        "from multicore import initialize, shutdown, Task\n"
        "initialize(workers=1)\n"
        "task = Task()\n"
        "try:\n"
        "    task.run(len, 'abc', use_dill=True)\n"
        "except ImportError as e:\n"
        "    print('ImportError:', e)\n"
        "task.run(len, 'abc')\n"
        "print(task.get())\n"
        "shutdown()\n")
    assert proc.returncode == 0, proc.stderr
    assert ("ImportError: use_dill=True needs the 'dill' package "
            "(pip install dill)") in proc.stdout
    assert "[3]" in proc.stdout


# ---------------------------------------------------------------------------
# Failures
# ---------------------------------------------------------------------------

def test_exception_reraised_with_remote_traceback(pool):
    task = Task()
    task.run(square, 2)
    task.run(fail_with, "bad input 3")
    with pytest.raises(ValueError, match="bad input 3") as info:
        task.get()
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    assert "Traceback (most recent call last)" in text
    assert "in fail_with" in text
    assert "raise ValueError(message)" in text
    assert "ValueError: bad input 3" in text


def test_first_failure_in_submission_order_is_raised(pool):
    task = Task()
    task.run(fail_with, "first", 0.2)   # finishes last
    task.run(fail_with, "second", 0.0)
    task.run(square, 3)
    with pytest.raises(ValueError, match="first"):
        task.get()


def test_unpicklable_exception(pool):
    task = Task()
    task.run(raise_unpicklable)
    with pytest.raises(MulticoreError) as info:
        task.get()
    message = str(info.value)
    assert message.startswith("RemoteError: ")
    assert "UnpicklableError" in message and "cannot travel" in message
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "raise_unpicklable" in str(info.value.__cause__)


def test_sys_exit_in_task_is_a_task_failure(pool):
    workers_before = set(_multicore._worker_pids())
    task = Task()
    task.run(call_sys_exit, 3)
    task.run(raise_keyboard_interrupt)
    with pytest.raises(MulticoreError, match="SystemExit") as info:
        task.get()
    assert "call_sys_exit" in str(info.value.__cause__)
    # the workers survived and the pool still works
    task = Task()
    task.run(raise_keyboard_interrupt)
    with pytest.raises(MulticoreError, match="KeyboardInterrupt"):
        task.get()
    task = Task()
    task.run(square, 5)
    assert task.get() == [25]
    assert set(_multicore._worker_pids()) == workers_before


def test_recursion_error_in_task(pool):
    task = Task()
    task.run(deep_recursion, 0)
    with pytest.raises(RecursionError):
        task.get()
    task = Task()
    task.run(square, 6)
    assert task.get() == [36]


TRACEBACK_PICKLING = r"""
import sys
from tblib import pickling_support
pickling_support.install()          # as importing Dask's distributed does
from multicore import Task, initialize, shutdown

def deep(n):
    return deep(n + 1)

def fails():
    try:
        raise KeyError("inner")
    except KeyError as e:
        raise ValueError("outer") from e

if __name__ == "__main__":
    initialize(workers=1)
    try:
        task = Task()
        task.run(deep, 0)
        try:
            task.get()
        except RecursionError as e:
            print("recursion:", type(e.__cause__).__name__)
        task = Task()
        task.run(fails)
        try:
            task.get()
        except ValueError as e:
            print("chained:", e, type(e.__cause__).__name__, "inner" in str(e.__cause__))
    finally:
        shutdown()
"""


def test_exceptions_travel_without_their_tracebacks(tmp_path):
    # A library that makes tracebacks picklable (tblib, installed by
    # importing distributed) must not change what reaches the caller: the
    # worker's frames travel as the RemoteTraceback's text, the exception
    # without them (a deep recursion's frames would not even pickle).
    pytest.importorskip("tblib")
    script = tmp_path / "tb_pickling.py"
    script.write_text(TRACEBACK_PICKLING)
    import subprocess
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "recursion: RemoteTraceback" in out.stdout, out.stdout + out.stderr
    assert "chained: outer RemoteTraceback True" in out.stdout, out.stdout + out.stderr


def test_timeout(pool):
    task = Task()
    task.run(sleep_then, 1, 1.0)
    start = time.monotonic()
    with pytest.raises(TimeoutExceededError):
        task.get(timeout=0.1)
    assert time.monotonic() - start < 0.9
    with pytest.raises(TaskCompleteError):
        task.get()
    with pytest.raises(TaskCompleteError):
        task.run(square, 1)


def test_task_complete_error_on_reuse(pool):
    task = Task()
    task.run(square, 2)
    assert task.get() == [4]
    with pytest.raises(TaskCompleteError):
        task.run(square, 2)
    with pytest.raises(TaskCompleteError):
        task.get()
    failed = Task()
    failed.run(fail_with, "x")
    with pytest.raises(ValueError):
        failed.get()
    with pytest.raises(TaskCompleteError):
        failed.get()


def test_callable_defined_after_initialize(pool):
    namespace = globals()
    exec("def defined_too_late(x):\n    return x\n", namespace)
    try:
        late = namespace["defined_too_late"]
        task = Task()
        task.run(late, 1)
        with pytest.raises(CallableNotFoundError) as info:
            task.get()
        message = str(info.value)
        assert f"{__name__}.defined_too_late" in message
        assert "initialize()" in message and "use_dill=True" in message
        # with use_dill=True a function defined after initialize() travels
        # by value
        def local_late(x):
            return x * 2
        task = Task()
        task.run(local_late, 21, use_dill=True)
        assert task.get() == [42]
    finally:
        namespace.pop("defined_too_late", None)


def test_argument_class_defined_after_initialize(pool):
    namespace = globals()
    exec("class DefinedTooLate:\n    pass\n", namespace)
    try:
        task = Task()
        task.run(identity, namespace["DefinedTooLate"]())
        with pytest.raises(ArgumentsUnpicklingError) as info:
            task.get()
        assert "DefinedTooLate" in str(info.value)
        assert f"{__name__}.identity" in str(info.value)
        task = Task()                 # the pool still works
        task.run(square, 8)
        assert task.get() == [64]
    finally:
        namespace.pop("DefinedTooLate", None)


def test_globals_defined_before_initialize_are_visible():
    MUTABLE_GLOBAL["value"] = "before initialize"
    try:
        initialize(workers=2)
        MUTABLE_GLOBAL["value"] = "after initialize"
        task = Task()
        task.run(global_sum)
        task.run(read_mutable_global)
        # the workers have the state of the moment they were forked
        assert task.get() == [sum(range(10_000)), "before initialize"]
    finally:
        MUTABLE_GLOBAL["value"] = "at import"


def test_worker_died_error(pool):
    task = Task()
    task.run(exit_worker, 7)
    with pytest.raises(WorkerDiedError) as info:
        task.get(timeout=30)
    assert info.value.exit_status == 7 and info.value.signal is None
    assert isinstance(info.value.pid, int) and str(info.value.pid) in str(info.value)
    task = Task()
    task.run(kill_worker)
    with pytest.raises(WorkerDiedError) as info:
        task.get(timeout=30)
    assert info.value.signal == 9
    assert "signal 9" in str(info.value)


def test_pool_not_running_after_shutdown():
    initialize(workers=2)
    task = Task()
    task.run(square, 2)
    shutdown()
    with pytest.raises(PoolNotRunningError):
        task.run(square, 3)
    with pytest.raises(PoolNotRunningError):
        task.get()
    assert Task() is None
    initialize(workers=2)       # a new pool does not revive old tasks
    with pytest.raises(PoolNotRunningError):
        task.get()
    fresh = Task()
    fresh.run(square, 3)
    assert fresh.get() == [9]


def test_bad_get_timeout(pool):
    task = Task()
    with pytest.raises(ValueError):
        task.get(timeout=-1)
    with pytest.raises(TypeError):
        task.get(timeout="soon")
    task.run(square, 2)
    assert task.get(timeout=None) == [4]


def test_run_needs_a_callable(pool):
    task = Task()
    with pytest.raises(TypeError):
        task.run()
    with pytest.raises(TypeError):
        task.run(42)


# ---------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------

def test_concurrent_tasks_from_four_threads(pool):
    errors = []
    barrier = threading.Barrier(4)

    def worker(tid):
        try:
            barrier.wait()
            for round_ in range(5):
                task = Task()
                for i in range(25):
                    task.run(identity, (tid, round_, i))
                assert task.get() == [(tid, round_, i) for i in range(25)]
        except BaseException as e:  # reported below
            errors.append((tid, repr(e)))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []


def test_task_used_from_two_threads_is_runtime_error(pool):
    task = Task()
    task.run(sleep_then, "slow", 1.0)
    entered = threading.Event()
    outcome = {}

    def waiter():
        entered.set()
        outcome["result"] = task.get()

    thread = threading.Thread(target=waiter)
    thread.start()
    entered.wait()
    time.sleep(0.3)          # the waiter is now inside get()
    with pytest.raises(RuntimeError):
        task.run(square, 2)
    with pytest.raises(RuntimeError):
        task.get()
    thread.join(30)
    assert outcome["result"] == ["slow"]


# ---------------------------------------------------------------------------
# Large payloads
# ---------------------------------------------------------------------------

def test_64_mib_both_ways(pool):
    payload = bytes(range(256)) * (64 * 1024 * 1024 // 256)
    assert len(payload) == 64 * 1024 * 1024
    task = Task()
    task.run(identity, payload)
    result, = task.get(timeout=120)
    assert len(result) == len(payload)
    assert result == payload


# ---------------------------------------------------------------------------
# ranges
# ---------------------------------------------------------------------------

def test_ranges_examples():
    assert list(ranges(range(80), number_of_workers=4)) == [
        (0, 20), (20, 40), (40, 60), (60, 80)]
    assert list(ranges(range(80), min_range_size=30, number_of_workers=4)) == [
        (0, 30), (30, 60), (60, 80)]
    assert list(ranges(range(80), min_range_size=100, number_of_workers=4)) == [
        (0, 80)]
    assert list(ranges([], number_of_workers=4)) == []
    assert list(ranges(range(5), number_of_workers=8)) == [
        (0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
    assert list(ranges("abcdefg", 0, 3)) == [(0, 3), (3, 6), (6, 7)]


def test_ranges_default_workers():
    n = multicore.NUMBER_OF_WORKERS
    pairs = list(ranges(range(1000)))
    assert len(pairs) == n
    assert pairs[0][0] == 0 and pairs[-1][1] == 1000
    initialize(workers=3)
    assert len(list(ranges(range(90)))) == 3


def test_ranges_queryset_uses_count():
    class QuerySet:
        def count(self):
            return 10

        def __len__(self):
            raise AssertionError("len() evaluates a QuerySet; use count()")

    assert list(ranges(QuerySet(), number_of_workers=2)) == [(0, 5), (5, 10)]


@pytest.mark.parametrize("args, kwargs, exc", [
    ((5,), {}, TypeError),
    ((iter([1, 2]),), {}, TypeError),
    ((range(10),), {"min_range_size": -1}, ValueError),
    ((range(10),), {"min_range_size": "3"}, TypeError),
    ((range(10),), {"number_of_workers": 0}, ValueError),
    ((range(10),), {"number_of_workers": 1.5}, TypeError),
])
def test_ranges_bad_arguments(args, kwargs, exc):
    with pytest.raises(exc):
        list(ranges(*args, **kwargs))
