"""Worker state (issue 5): worker_init/worker_exit, worker_id(), worker_state().

A task finds in worker_state() what worker_init of the same worker put
there, so a connection opened once per worker is reused by every task the
worker runs.
"""

import os

import pytest

import multicore
from multicore.exceptions import WorkerInitError


def open_resource():
    state = multicore.worker_state()
    state["pid"] = os.getpid()
    state["index"] = multicore.worker_id()
    state["uses"] = 0


def use_resource(_):
    state = multicore.worker_state()
    state["uses"] += 1
    return (state["pid"], os.getpid(), state["index"], multicore.worker_id(),
            state["uses"])


def read_state():
    return dict(multicore.worker_state())


def write_exit_marker(directory):
    path = os.path.join(directory, f"exit-{multicore.worker_id()}-{os.getpid()}")
    with open(path, "w") as f:
        f.write(str(multicore.worker_state().get("uses", -1)))


EXIT_DIR = {"path": None}


def exit_hook():
    write_exit_marker(EXIT_DIR["path"])


def failing_exit():
    raise RuntimeError("worker_exit failed on purpose")


def test_worker_id_is_none_in_caller():
    assert multicore.worker_id() is None


def test_state_set_by_worker_init_is_reused_by_every_task():
    multicore.initialize(workers=2, worker_init=open_resource)
    task = multicore.Task()
    for i in range(200):
        task.run(use_resource, i)
    results = task.get()
    seen = {}
    for state_pid, pid, state_index, index, uses in results:
        assert state_pid == pid            # the worker's own state
        assert state_index == index        # worker_id() stable
        assert index in (0, 1)
        seen.setdefault(pid, []).append(uses)
    # Every worker counted its own tasks 1, 2, 3, ... with no gap: the same
    # dict served all of them.
    assert sum(len(v) for v in seen.values()) == 200
    for uses in seen.values():
        assert sorted(uses) == list(range(1, len(uses) + 1))


def test_each_worker_starts_with_empty_state():
    multicore.worker_state()["caller-only"] = 1
    try:
        multicore.initialize(workers=2)
        task = multicore.Task()
        for _ in range(4):
            task.run(read_state)
        assert task.get() == [{}] * 4
    finally:
        multicore.worker_state().pop("caller-only", None)


def test_worker_exit_runs_in_every_worker_at_shutdown(tmp_path):
    EXIT_DIR["path"] = str(tmp_path)
    multicore.initialize(workers=2, worker_init=open_resource,
                         worker_exit=exit_hook)
    task = multicore.Task()
    for i in range(10):
        task.run(use_resource, i)
    pids = {r[1] for r in task.get()}
    multicore.shutdown()
    markers = sorted(os.listdir(tmp_path))
    assert len(markers) == 2
    assert {int(m.split("-")[2]) for m in markers} >= pids
    assert sum(int((tmp_path / m).read_text()) for m in markers) == 10


def test_failing_worker_exit_is_printed_and_shutdown_completes(run_python):
    source = (
        "import multicore\n"
        "def bad():\n"
        "    raise RuntimeError('worker_exit failed on purpose')\n"
        "def one():\n"
        "    return 1\n"
        "multicore.initialize(workers=1, worker_exit=bad)\n"
        "t = multicore.Task(); t.run(one); assert t.get() == [1]\n"
        "multicore.shutdown()\n"
        "print('shut down')\n"
    )
    proc = run_python(source)
    assert proc.returncode == 0, proc.stderr
    assert "shut down" in proc.stdout
    assert "worker_exit failed on purpose" in proc.stderr


@pytest.mark.parametrize("bad", [1, "text"])
def test_worker_exit_must_be_callable(bad):
    with pytest.raises(TypeError, match="worker_exit must be callable"):
        multicore.initialize(workers=1, worker_exit=bad)


def test_worker_init_failure_still_reported():
    def boom():
        raise ValueError("no database")
    with pytest.raises(WorkerInitError, match="no database"):
        multicore.initialize(workers=1, worker_init=boom)
