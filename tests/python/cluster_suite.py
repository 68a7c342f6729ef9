"""multicore on a real Dask cluster (issue 14): a `dask scheduler` and two
`dask worker --nthreads 1` processes with nannies on 127.0.0.1, started
once for this module (tests/python/dask_cluster.py), tests/python/
cluster_modules on the workers' PYTHONPATH. Every test has a hard timeout;
at the end every process of the cluster is ended, reaped and checked gone.

Between tests the cluster is what the last test left: a test that kills a
worker waits until the nanny's new worker has joined (2 workers again).

This module runs in a pytest process of its own (test_cluster.py starts
it; test_cluster_netns.py in another network namespace): importing
distributed installs tblib's pickling of tracebacks for every exception
type (copyreg), which changes how the local pool's tests see deep
tracebacks, so the main test process never imports it."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

distributed = pytest.importorskip("distributed")

import multicore  # noqa: E402
from multicore import Task  # noqa: E402
from multicore.exceptions import (CallableNotFoundError, MulticoreError,  # noqa: E402
                                  PoolNotRunningError, RemoteTraceback,
                                  TaskCompleteError, TimeoutExceededError,
                                  WorkerDiedError, WorkerInitError)

from conftest import child_pids  # noqa: E402
from dask_cluster import TASK_MODULES, ExternalCluster, LocalDaskCluster  # noqa: E402

sys.path.insert(0, TASK_MODULES)
import cluster_tasks  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
pytestmark = pytest.mark.timeout(90)


# The netns suite (test_cluster_netns.py) runs this module in the caller's
# network namespace against a cluster in three others.
EXTERNAL = os.environ.get("MULTICORE_TEST_CLUSTER")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if EXTERNAL:
        yield ExternalCluster(EXTERNAL)
        multicore.shutdown()
        return
    workdir = os.environ.get("MULTICORE_TEST_CLUSTER_WORKDIR") or \
        tmp_path_factory.mktemp("dask")
    c = LocalDaskCluster(workdir, n_workers=2)
    try:
        c.start()
        yield c
    finally:
        multicore.shutdown()
        left = c.stop()
        assert left == [], f"cluster processes left: {left}"
        # every process this module started is reaped
        assert child_pids() == []


@pytest.fixture(autouse=True)
def _shutdown_and_check_children(cluster):
    """conftest's check, with the cluster's own processes allowed."""
    yield
    multicore.shutdown()
    deadline = time.monotonic() + 2.0
    while True:
        extra = sorted(set(child_pids()) - set(cluster.children))
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert extra == [], f"child processes left after shutdown: {extra}"


@pytest.fixture
def on_cluster(cluster):
    """The process-wide pool on the cluster."""
    multicore.initialize(cluster=cluster.address)
    yield cluster
    multicore.shutdown()


def wait_for_files(directory, prefix, n, timeout=30.0):
    """The names of the files starting with prefix in directory, once there
    are at least n (a gate: the tasks write them)."""
    deadline = time.monotonic() + timeout
    while True:
        names = sorted(f for f in os.listdir(directory) if f.startswith(prefix))
        if len(names) >= n:
            return names
        assert time.monotonic() < deadline, f"only {names} in {directory}"
        time.sleep(0.01)


def started(directory, tag):
    """Starts recorded by cluster_tasks.record()/block() for tag."""
    return [f for f in os.listdir(directory)
            if f.startswith(tag + ".") and f.split(".")[1].isdigit()]


def address_of(cluster, pid):
    """The address of the worker process pid (ask before killing it)."""
    return {p: a for a, p in cluster.worker_pids().items()}[pid]


def pid_exited(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def end_stopped_worker(pid):
    """SIGCONT then SIGKILL a worker process a test stopped (its nanny
    reaps it); a process already gone is fine."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


# -- defined here: importable by the caller (pytest), not by the workers ----

def only_in_the_caller(x):
    return x


# ---------------------------------------------------------------------------

def test_results_in_submission_order(on_cluster):
    assert multicore.NUMBER_OF_WORKERS == 2
    task = Task()
    assert isinstance(task, Task)
    # earlier parts sleep longer, so later ones finish first
    for i in range(8):
        task.run(cluster_tasks.pid_after, 0.05 * (8 - i))
    for i in range(8):
        task.run(cluster_tasks.square, i)
    results = task.get(timeout=30)
    pids = set(on_cluster.worker_pids().values())
    assert set(results[:8]) <= pids
    assert results[8:] == [i * i for i in range(8)]
    with pytest.raises(TaskCompleteError):
        task.run(cluster_tasks.square, 1)
    with pytest.raises(TaskCompleteError):
        task.get()


def test_exception_type_and_remote_traceback(on_cluster):
    task = Task()
    task.run(cluster_tasks.square, 2)
    task.run(cluster_tasks.fail, "first failure")
    task.run(cluster_tasks.fail, "second failure")
    with pytest.raises(ValueError, match="first failure") as info:
        task.get(timeout=30)
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    text = str(cause)
    pids = set(on_cluster.worker_pids().values())
    assert any(f"pid {pid}," in text for pid in pids), text
    assert f"host {socket.gethostname()}" in text
    assert any(f"Dask worker {a}" in text for a in on_cluster.worker_pids()), text
    assert "in fail" in text and "raise ValueError(message)" in text

    # what cannot travel still arrives, as text
    task = Task()
    task.run(cluster_tasks.fail_unpicklable, "no pickle")
    with pytest.raises(MulticoreError, match="RemoteError: cluster_tasks.Unpicklable: "
                                             "no pickle") as info:
        task.get(timeout=30)
    assert "fail_unpicklable" in str(info.value.__cause__)
    # a task's SystemExit is its failure, not the worker's end
    task = Task()
    task.run(cluster_tasks.call_sys_exit)
    with pytest.raises(MulticoreError, match="SystemExit") as info:
        task.get(timeout=30)
    assert "call_sys_exit" in str(info.value.__cause__)


def test_serialization_formats_and_dill(on_cluster):
    task = Task()
    task.run(cluster_tasks.as_tuple, 3)
    task.run(cluster_tasks.as_tuple, 3, serialization_format="json")
    task.run(str, 12, serialization_format="string")
    task.run(cluster_tasks.identity, b"\x00bytes", serialization_format="pickle")
    assert task.get(timeout=30) == [(3, [3, 3]), [3, [3, 3]], "12", b"\x00bytes"]

    task = Task()
    task.run(cluster_tasks.not_a_str, serialization_format="string")
    with pytest.raises(TypeError, match="needs a str result, got int"):
        task.get(timeout=30)
    task = Task()
    task.run(cluster_tasks.identity, {1, 2}, serialization_format="json")
    with pytest.raises(TypeError, match="not JSON serializable"):
        task.get(timeout=30)
    task = Task()
    with pytest.raises(ValueError, match="serialization_format"):
        task.run(cluster_tasks.square, 2, serialization_format="yaml")

    task = Task()
    task.run(cluster_tasks.make_adder(5), 1)            # a closure, by value
    assert task.get(timeout=30) == [6]
    pytest.importorskip("dill")
    task = Task()
    task.run(cluster_tasks.make_adder(5), 1, use_dill=True)
    task.run(cluster_tasks.square, 4, use_dill=True)
    assert task.get(timeout=30) == [6, 16]


def test_numpy_arrays_round_trip(on_cluster):
    np = pytest.importorskip("numpy")
    big = np.arange(2_000_000, dtype=np.float64)      # 16 MB, out of band
    task = Task()
    task.run(cluster_tasks.nbytes, big)
    task.run(cluster_tasks.double, big)
    (size, total), doubled = task.get(timeout=60)
    assert (size, total) == (big.nbytes, float(big.sum()))
    assert doubled.dtype == big.dtype and np.array_equal(doubled, big * 2)


def test_identical_calls_are_not_merged(on_cluster, tmp_path):
    task = Task()
    for _ in range(6):
        task.run(cluster_tasks.fresh_token, "same argument")
    for _ in range(4):
        task.run(cluster_tasks.record, str(tmp_path), "same")
    results = task.get(timeout=30)
    assert len(set(results[:6])) == 6
    assert len(started(tmp_path, "same")) == 4


def test_unimportable_callable_is_named(on_cluster):
    task = Task()
    task.run(only_in_the_caller, 1)
    start = time.monotonic()
    with pytest.raises(CallableNotFoundError) as info:
        task.get(timeout=30)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "cluster_suite.only_in_the_caller" in message
    assert "No module named 'cluster_suite'" in message
    assert "PYTHONPATH" in message and "main script" in message


def test_worker_killed_mid_task(on_cluster, tmp_path):
    session = multicore.cluster.active()
    victim = Task()
    victim.run(cluster_tasks.block, str(tmp_path), "victim", 60.0)
    (name,) = wait_for_files(tmp_path, "victim.", 1)
    victim_pid = int(name.split(".")[1])
    addresses = {pid: a for a, pid in on_cluster.worker_pids().items()}
    victim_worker = addresses[victim_pid]

    # The other worker is kept busy too: left idle, it took each quick
    # task as it came and finished it before the next arrived, so none
    # ever queued behind the victim (seen once in CI). With both busy the
    # scheduler spreads the others over both.
    holder = Task()
    holder.run(cluster_tasks.block, str(tmp_path), "holder", 60.0)
    (held,) = wait_for_files(tmp_path, "holder.", 1)
    assert int(held.split(".")[1]) != victim_pid

    others = Task()
    for i in range(6):
        others.run(cluster_tasks.record, str(tmp_path), f"other{i}")
    keys = [p.key for p in others._parts]
    # Gate: one of the others is queued on the victim's worker (behind the
    # blocked task) before the kill.
    deadline = time.monotonic() + 30
    while True:
        processing = session.client.processing()
        queued_there = [k for k in processing.get(victim_worker, ()) if k in keys]
        if queued_there:
            break
        assert time.monotonic() < deadline, processing
        time.sleep(0.02)

    os.kill(victim_pid, signal.SIGKILL)
    killed_at = time.monotonic()
    open(os.path.join(str(tmp_path), "holder.release"), "w").close()
    with pytest.raises(WorkerDiedError) as info:
        victim.get(timeout=30)
    assert time.monotonic() - killed_at < 10            # within seconds
    assert victim_worker in str(info.value)
    assert f"pid {victim_pid}" in str(info.value)
    assert info.value.pid == victim_pid
    assert "cluster_tasks.block" in str(info.value)

    results = others.get(timeout=60)
    assert [tag for tag, _ in results] == [f"other{i}" for i in range(6)]
    queued_index = keys.index(queued_there[0])
    assert results[queued_index][1] != victim_pid      # ran elsewhere, after the kill
    on_cluster.wait_for_workers(2, gone=[victim_worker])
    # a round trip through both workers, then: nothing ran twice
    again = Task()
    for i in range(4):
        again.run(cluster_tasks.square, i)
    assert again.get(timeout=30) == [0, 1, 4, 9]
    assert len(started(tmp_path, "victim")) == 1
    assert holder.get(timeout=30)[0] == ("holder", int(held.split(".")[1]))
    for i in range(6):
        assert len(started(tmp_path, f"other{i}")) == 1


def test_a_finished_result_outlives_its_worker(on_cluster, tmp_path):
    task = Task()
    task.run(cluster_tasks.record, str(tmp_path), "done")
    (name,) = wait_for_files(tmp_path, "done.", 1)
    pid = int(name.split(".")[1])
    # Gate: the session has fetched the result in the background (it does
    # every sweep_seconds while tasks are in flight).
    part = task._parts[0]
    deadline = time.monotonic() + 30
    while part.report is None:
        assert time.monotonic() < deadline, "the result was never fetched"
        time.sleep(0.01)
    address = address_of(on_cluster, pid)
    os.kill(pid, signal.SIGKILL)
    on_cluster.wait_for_workers(2, gone=[address])     # the death has been handled
    assert task.get(timeout=30) == [("done", pid)]
    assert len(started(tmp_path, "done")) == 1


def test_results_are_fetched_as_they_finish(on_cluster, tmp_path):
    """A result is fetched when its part finishes, while the Task's other
    part still runs and nobody is in get(); once here it outlives its
    worker (Dask would otherwise run it again, or lose it)."""
    task = Task()
    task.run(cluster_tasks.block, str(tmp_path), "held", 60.0)
    (name,) = wait_for_files(tmp_path, "held.", 1)
    held_pid = int(name.split(".")[1])
    task.run(cluster_tasks.record, str(tmp_path), "quick")   # on the other worker
    quick = task._parts[1]
    deadline = time.monotonic() + 30
    while quick.report is None:
        assert time.monotonic() < deadline, "the finished part was never fetched"
        time.sleep(0.01)
    assert quick.future is None                   # released: the worker frees it
    assert not task._parts[0].done()              # its sibling still blocks
    (name,) = wait_for_files(tmp_path, "quick.", 1)
    quick_pid = int(name.split(".")[1])
    assert quick_pid != held_pid
    address = address_of(on_cluster, quick_pid)
    os.kill(quick_pid, signal.SIGKILL)
    on_cluster.wait_for_workers(2, gone=[address])     # the death has been handled
    (tmp_path / "held.release").write_text("")
    assert task.get(timeout=30) == [("held", held_pid), ("quick", quick_pid)]
    assert len(started(tmp_path, "held")) == 1
    assert len(started(tmp_path, "quick")) == 1


def test_get_stops_waiting_for_a_fetch_once_the_worker_is_gone(on_cluster, tmp_path):
    """A fetch stuck on a worker that stopped answering (SIGSTOP) does not
    hold get() once that worker is gone: the part fails with
    WorkerDiedError (its result was never fetched), and it never runs
    again."""
    session = multicore.cluster.active()
    session._fetch_paused = True          # the order: finished, stopped, then fetched
    pid = address = None
    killed = []
    try:
        task = Task()
        task.run(cluster_tasks.record, str(tmp_path), "unfetched")
        part = task._parts[0]
        deadline = time.monotonic() + 30
        while part.future.status != "finished":
            assert time.monotonic() < deadline, part.future.status
            time.sleep(0.01)
        (name,) = wait_for_files(tmp_path, "unfetched.", 1)
        pid = int(name.split(".")[1])
        address = address_of(on_cluster, pid)
        os.kill(pid, signal.SIGSTOP)
        session._fetch_paused = False

        def kill_once_fetching():
            # Gate: the fetch of that result is in flight (and cannot end:
            # its worker is stopped), then the worker dies.
            deadline = time.monotonic() + 30
            while not part.fetching and time.monotonic() < deadline:
                time.sleep(0.005)
            killed.append((part.fetching, time.monotonic()))
            os.kill(pid, signal.SIGKILL)

        killer = threading.Thread(target=kill_once_fetching)
        killer.start()
        try:
            with pytest.raises(WorkerDiedError, match="before its result was fetched") as info:
                task.get(timeout=60)
        finally:
            killer.join()
        assert killed[0][0], "the fetch was never in flight"
        assert time.monotonic() - killed[0][1] < 10
        assert f"pid {pid}" in str(info.value)
        on_cluster.wait_for_workers(2, gone=[address])
        assert len(started(tmp_path, "unfetched")) == 1
    finally:
        session._fetch_paused = False
        if pid is not None:
            end_stopped_worker(pid)
            deadline = time.monotonic() + 30
            while not pid_exited(pid):
                assert time.monotonic() < deadline, "the stopped worker still runs"
                time.sleep(0.02)
            on_cluster.wait_for_workers(2, gone=[address])


def test_a_fetch_that_brings_no_result_is_not_a_result(on_cluster):
    """What a fetch answers for a part is delivered only if it is a report:
    a gather that left a key unanswered (as an overlapping one does: the
    key itself) or answered None is fetched again."""
    session = multicore.cluster.active()
    real = session.client.gather
    answers = []

    def gather(futures, *args, **kwargs):
        answers.append(len(futures))
        if len(answers) <= 2:
            fake = [f.key for f in futures] if len(answers) == 1 else [None] * len(futures)

            async def unanswered():
                return fake
            return unanswered()
        return real(futures, *args, **kwargs)

    session.client.gather = gather
    try:
        task = Task()
        for i in range(3):
            task.run(cluster_tasks.square, i)
        assert task.get(timeout=30) == [0, 1, 4]
    finally:
        del session.client.gather
    assert len(answers) >= 3


def test_a_stopped_worker_is_removed_by_the_ttl(cluster, tmp_path_factory):
    """A worker that stops answering mid-task (SIGSTOP) is removed by the
    scheduler after its worker-ttl (a cluster of its own with a short one):
    the task fails with WorkerDiedError, the others complete, nothing runs
    twice."""
    workdir = tmp_path_factory.mktemp("dask-ttl")
    env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__WORKER_TTL="1s")
    ttl_cluster = LocalDaskCluster(workdir, n_workers=2, env=env)
    out = tmp_path_factory.mktemp("ttl-out")
    pid = None
    pool = None
    try:
        ttl_cluster.start()
        pool = multicore.Pool(cluster=ttl_cluster.address)
        victim = pool.Task()
        victim.run(cluster_tasks.block, str(out), "frozen", 120.0)
        (name,) = wait_for_files(out, "frozen.", 1)
        pid = int(name.split(".")[1])
        os.kill(pid, signal.SIGSTOP)
        stopped_at = time.monotonic()
        others = pool.Task()
        for i in range(4):
            others.run(cluster_tasks.record, str(out), f"live{i}")
        with pytest.raises(WorkerDiedError, match="cluster_tasks.block") as info:
            victim.get(timeout=60)
        assert time.monotonic() - stopped_at < 45     # ttl: max(1 s, 10 heartbeats)
        assert f"pid {pid}" in str(info.value)
        assert [tag for tag, _ in others.get(timeout=60)] == [f"live{i}" for i in range(4)]
        assert len(started(out, "frozen")) == 1
    finally:
        if pool is not None:
            pool.close()
            pool.join()
        if pid is not None:
            end_stopped_worker(pid)
        left = ttl_cluster.stop()
        assert left == [], f"cluster processes left: {left}"
        if pid is not None:
            assert pid_exited(pid)


def test_shutdown_closes_the_claim_connections(cluster):
    """The workers' direct connections to the scheduler, opened by the
    session's claims, are closed when the session ends (the worker
    processes are the user's and live on)."""
    multicore.initialize(cluster=cluster.address)
    try:
        task = Task()
        for i in range(4):
            task.run(cluster_tasks.square, i)
        assert task.get(timeout=30) == [0, 1, 4, 9]
        with cluster.client() as c:
            opened = c.run(cluster_tasks.claim_stats)
            assert any(s["local"] is not None for s in opened.values()), opened
            multicore.shutdown()
            deadline = time.monotonic() + 10
            while True:
                left = {a: s["local"] for a, s in c.run(cluster_tasks.claim_stats).items()
                        if s["local"] is not None}
                if not left:
                    break
                assert time.monotonic() < deadline, f"still connected: {left}"
                time.sleep(0.05)
    finally:
        multicore.shutdown()


def test_claims_go_straight_to_the_scheduler(on_cluster):
    """A task's start claim goes over the worker's own connection to the
    scheduler (not the RPC through its event loop); a cancelled key is
    False; a connection the scheduler drops, or a scheduler nobody answers
    for, falls back to the RPC for that claim and reconnects for the next."""
    from multicore.cluster import _dask
    with on_cluster.client() as c:
        before = c.run(cluster_tasks.claim_stats)
        task = Task()
        for i in range(4):
            task.run(cluster_tasks.square, i)
        assert task.get(timeout=30) == [0, 1, 4, 9]
        after = c.run(cluster_tasks.claim_stats)
        assert sum(after[a]["direct"] - before[a]["direct"] for a in after) == 4
        assert sum(after[a]["rpc"] - before[a]["rpc"] for a in after) == 0

        # a key the scheduler has (a builtin: the scheduler has no task module)
        probe = c.submit(abs, -9, pure=False)
        assert probe.result(timeout=30) == 9
        worker = sorted(after)[0]

        def claim(key, fn=cluster_tasks.claim_key):
            return c.run(fn, key, workers=[worker])[worker]

        def stats():
            return c.run(cluster_tasks.claim_stats, workers=[worker])[worker]

        assert claim(probe.key) is True
        s1 = stats()
        assert s1["local"] is not None
        assert claim("multicore-no-such-key") is False           # cancelled
        s2 = stats()
        assert (s2["direct"], s2["rpc"]) == (s1["direct"] + 1, s1["rpc"])

        # the scheduler drops the connection: that claim through the RPC,
        # the next one over a new connection
        def drop(address, dask_scheduler=None):
            comms = [comm for comm in list(dask_scheduler._comms)
                     if comm.peer_address == address]
            for comm in comms:
                comm.abort()
            return len(comms)
        assert c.run_on_scheduler(drop, s2["local"]) == 1
        assert claim(probe.key) is True
        s3 = stats()
        assert (s3["fallbacks"], s3["rpc"]) == (s2["fallbacks"] + 1, s2["rpc"] + 1)
        assert claim(probe.key) is True
        s4 = stats()
        assert (s4["direct"], s4["connects"]) == (s3["direct"] + 1, s3["connects"] + 1)
        assert s4["local"] not in (None, s2["local"])

        # refused: through the RPC, cancelled keys still False
        assert claim(probe.key, cluster_tasks.claim_with_nobody_listening) is True
        assert claim("multicore-no-such-key",
                     cluster_tasks.claim_with_nobody_listening) is False
        s5 = stats()
        assert (s5["fallbacks"], s5["rpc"]) == (s4["fallbacks"] + 2, s4["rpc"] + 2)

        # the RPC alone (what the bench compares with)
        c.run(_dask._set_claim_mode, "rpc", workers=[worker])
        try:
            assert claim(probe.key) is True
            assert claim("multicore-no-such-key") is False
            s6 = stats()
            assert (s6["direct"], s6["rpc"]) == (s5["direct"], s5["rpc"] + 2)
        finally:
            c.run(_dask._set_claim_mode, "direct", workers=[worker])
        assert claim(probe.key) is True
        assert stats()["direct"] == s6["direct"] + 1
        del probe


def test_timeout_ends_the_stuck_worker(on_cluster, tmp_path):
    stuck = Task()
    stuck.run(cluster_tasks.block, str(tmp_path), "stuck", 60.0)
    (name,) = wait_for_files(tmp_path, "stuck.", 1)
    stuck_pid = int(name.split(".")[1])
    stuck_address = address_of(on_cluster, stuck_pid)
    start = time.monotonic()
    with pytest.raises(TimeoutExceededError, match=r"0 of 1 parts finished"):
        stuck.get(timeout=0.5)
    assert time.monotonic() - start < 5
    # its worker process is ended; the nanny starts a new one
    deadline = time.monotonic() + 30
    while not pid_exited(stuck_pid):
        assert time.monotonic() < deadline, "the stuck worker still runs"
        time.sleep(0.02)
    on_cluster.wait_for_workers(2, gone=[stuck_address])
    assert stuck_pid not in on_cluster.worker_pids().values()
    other = Task()
    for i in range(10):
        other.run(cluster_tasks.square, i)
    assert other.get(timeout=30) == [i * i for i in range(10)]
    assert not any(f.startswith("stuck.finished") for f in os.listdir(tmp_path))
    assert len(started(tmp_path, "stuck")) == 1
    with pytest.raises(TaskCompleteError):
        stuck.get()


# worker_init / worker_exit run in the worker processes, which write one
# file each (the directory is on the same machine).

def test_worker_init_once_per_worker(cluster, tmp_path):
    init_dir = str(tmp_path)
    before = set(cluster.worker_pids().values())
    pool = multicore.Pool(cluster=cluster.address,
                          worker_init=_make_init(init_dir),
                          worker_exit=_make_exit(init_dir))
    try:
        assert pool.workers == 2, pool._handle._workers
        inits = wait_for_files(init_dir, "init.", 2)
        assert {int(n.split(".")[1]) for n in inits} == before
        task = pool.Task()
        for _ in range(8):
            task.run(cluster_tasks.state_and_id)
        seen = task.get(timeout=30)
        assert {wid for _, wid, _ in seen} <= {"w0", "w1"}
        for token, _, pid in seen:
            assert token == f"token-{pid}"              # that worker's own dict
        assert len(os.listdir(init_dir)) == 2           # once per worker, not per task
        # a replacement worker runs worker_init again
        victim = sorted(before)[0]
        address = address_of(cluster, victim)
        os.kill(victim, signal.SIGKILL)
        cluster.wait_for_workers(2, gone=[address])
        inits = wait_for_files(init_dir, "init.", 3)
        assert len(inits) == 3
    finally:
        pool.close()
        pool.join()
    # worker_exit ran in each live worker
    exits = wait_for_files(init_dir, "exit.", 2)
    assert {int(n.split(".")[1]) for n in exits} == set(cluster.worker_pids().values())


def _make_init(directory):
    def init():
        pid = os.getpid()
        multicore.worker_state()["token"] = f"token-{pid}"
        with open(os.path.join(directory, f"init.{pid}"), "w"):
            pass
    return init


def _make_exit(directory):
    def leave():
        with open(os.path.join(directory, f"exit.{os.getpid()}"), "w"):
            pass
    return leave


def test_failing_worker_init(cluster):
    with pytest.raises(WorkerInitError, match="exploded on purpose"):
        multicore.initialize(cluster=cluster.address, worker_init=cluster_tasks.failing_init)
    assert multicore.cluster.active() is None


def test_the_rest_of_the_api(on_cluster):
    from multicore.utils import ranges
    assert multicore.map(cluster_tasks.square, range(50)) == [i * i for i in range(50)]
    assert multicore.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
    assert list(multicore.imap(cluster_tasks.square, iter(range(10)))) == \
        [i * i for i in range(10)]
    assert sorted(multicore.imap_unordered(cluster_tasks.square, range(10))) == \
        [i * i for i in range(10)]
    with multicore.Executor() as ex:
        assert ex.submit(cluster_tasks.square, 7).result(timeout=30) == 49
        assert list(ex.map(cluster_tasks.square, range(5), chunksize=2)) == [0, 1, 4, 9, 16]
    with multicore.Pool() as pool:      # the process-wide pool's cluster
        assert pool.map(cluster_tasks.square, range(10)) == [i * i for i in range(10)]
        assert pool.apply_async(cluster_tasks.square, (5,)).get(timeout=30) == 25
    assert list(ranges(range(100))) == list(multicore._multicore.ranges(range(100), 0, 2))
    assert len(list(ranges(range(100)))) == 2           # one range per worker thread
    assert multicore.worker_id() is None                 # in the caller
    stats = multicore.stats()
    assert stats["cluster"] == on_cluster.address
    assert len(stats["workers"]) == 2
    assert sum(w["tasks_done"] for w in stats["workers"]) >= 1
    assert isinstance(Task(max_load_average=1e9), Task)
    assert Task(max_load_average=-1) is None
    with pytest.raises(TypeError):
        Task(max_load_average="high")
    with pytest.raises(ValueError, match="maxtasksperchild"):
        multicore.Pool(maxtasksperchild=3)


def test_scheduler_never_loads_user_code(on_cluster):
    task = Task()
    task.run(cluster_tasks.square, 3)
    assert task.get(timeout=30) == [9]
    with on_cluster.client() as c:
        loaded = c.run_on_scheduler(lambda: sorted(
            m for m in __import__("sys").modules
            if m.split(".")[0] in ("multicore", "cluster_tasks")))
    assert loaded == []


def test_shutdown_leaves_the_cluster_running(cluster):
    multicore.initialize(cluster=cluster.address)
    session = multicore.cluster.active()
    task = Task()
    task.run(cluster_tasks.square, 2)
    assert task.get(timeout=30) == [4]
    multicore.shutdown()
    assert session.client.status == "closed"
    assert Task() is None
    with pytest.raises(PoolNotRunningError):
        multicore.map(cluster_tasks.square, range(3))
    assert len(cluster.wait_for_workers(2)) == 2


def test_original_example_under_the_environment_variable(cluster):
    env = dict(os.environ, MULTICORE_CLUSTER=cluster.address)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, os.path.join(HERE, "seed_example.py")],
                          capture_output=True, text=True, timeout=120, cwd=HERE, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    assert lines[0] == ", ".join(str(i) for i in range(20))
    parts = lines[1].split(", ")
    assert len(parts) == 2                    # ranges(): one per worker thread
    assert ",".join(parts).split(",") == [str(i) for i in range(100)]
