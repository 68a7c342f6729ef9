"""Surviving failure from Python (issue 3): stuck tasks, timeouts, worker
deaths under load, forks, threads, and many start/stop cycles.

Functions used as tasks are module level, defined before initialize().
"""

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import multicore
from multicore import Task, initialize, shutdown
from multicore import _multicore
from multicore.exceptions import (
    TimeoutExceededError,
    WorkerDiedError,
    WorkerInitError,
)

from conftest import child_pids, exited, shm_mappings

# ---------------------------------------------------------------------------
# Task functions
# ---------------------------------------------------------------------------


def stuck():
    time.sleep(3600)


def pid():
    return os.getpid()


def square(x):
    return x * x


CHAOS = {"log": None, "ready": None}


def open_chaos_log():
    multicore.worker_state()["log"] = os.open(
        CHAOS["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)


def chaos_work(i):
    # Log the start (one small O_APPEND write is atomic), then work a while
    # so that kills land inside tasks. A worker's first task also marks it
    # as running tasks: the killer kills only those (a kill during the init
    # callback is a start failure, and five in a row in every slot is
    # WorkerInitError by design; that path has its own tests).
    state = multicore.worker_state()
    if "marked" not in state:
        os.close(os.open(os.path.join(CHAOS["ready"], str(os.getpid())), os.O_CREAT | os.O_WRONLY))
        state["marked"] = True
    os.write(state["log"], b"%d\n" % i)
    end = time.perf_counter() + 0.0002
    while time.perf_counter() < end:
        pass
    return i * 3


FLAKY = {"flag": None}


def flaky_init():
    if os.path.exists(FLAKY["flag"]):
        raise ConnectionError("database unreachable")


def chatty(i):
    print("task", i, flush=True)
    logging.getLogger("multicore.test").warning("task %d", i)
    return i


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def wait_for_fresh_workers(old, want, timeout=5.0):
    """Seconds until `want` live workers exist, none of them in `old`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        pids = _multicore._worker_pids()
        if len(pids) == want and not set(pids) & set(old) and \
                all(not os.path.exists(f"/proc/{p}") or
                    open(f"/proc/{p}/stat").read().split(") ")[1][0] != "Z"
                    for p in old):
            return time.monotonic() - start
        time.sleep(0.001)
    raise AssertionError(f"pool not back at {want} fresh workers: "
                         f"{_multicore._worker_pids()} (old {old})")


def proc_counts():
    with open("/proc/self/maps") as f:
        maps = f.readlines()
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "maps": len(maps),
        "memfd_maps": sum("memfd:" in line for line in maps),
        "children": len(child_pids()),
    }


# ---------------------------------------------------------------------------
# Timeouts and cancellation
# ---------------------------------------------------------------------------


def test_timeout_stops_the_workers_running_the_stuck_parts():
    initialize(workers=2)
    old = _multicore._worker_pids()
    other = Task()                       # another group, queued behind
    stuck_task = Task()
    stuck_task.run(stuck)
    stuck_task.run(stuck)
    for i in range(50):
        other.run(square, i)
    start = time.monotonic()
    with pytest.raises(TimeoutExceededError, match="0 of 2 parts finished"):
        stuck_task.get(timeout=0.3)
    assert time.monotonic() - start < 2
    # Both stuck workers were killed and replaced; the other group, which
    # could not run at all while they were stuck, completes.
    replaced_in = wait_for_fresh_workers(old, 2)
    print(f"replaced {replaced_in * 1e3:.1f} ms after the timeout")
    assert other.get(timeout=10) == [i * i for i in range(50)]
    again = Task()
    for _ in range(4):
        again.run(pid)
    assert not set(again.get()) & set(old)
    stats = multicore.stats()
    assert sum(w["cancel_kills"] for w in stats["workers"]) == 2


def test_ctrl_c_stops_the_stuck_worker_and_leaves_the_pool_usable(tmp_path):
    # One worker: the task after the interrupt can only run if the stuck
    # one was stopped and replaced.
    script = tmp_path / "interrupt.py"
    script.write_text(
        "import signal, time\n"
        "from multicore import initialize, shutdown, Task\n"
        # Python keeps SIGINT ignored if it started ignored (a background
        # job of a script does): this program stands for one in a terminal.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "def stuck():\n"
        "    time.sleep(3600)\n"
        "def square(x):\n"
        "    return x * x\n"
        "initialize(workers=1)\n"
        "task = Task()\n"
        "task.run(stuck)\n"
        "print('waiting', flush=True)\n"
        "try:\n"
        "    task.get(timeout=None)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted at %.6f' % time.monotonic(), flush=True)\n"
        "task = Task()\n"
        "task.run(square, 12)\n"
        "print('after', task.get(timeout=10), flush=True)\n"
        "shutdown()\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline() == "waiting\n"
        time.sleep(0.3)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)     # as a terminal's Ctrl-C does
        line = proc.stdout.readline()
        out = proc.stdout.read()
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert line.startswith("interrupted at"), (line, err)
    latency = float(line.split()[-1]) - sent   # CLOCK_MONOTONIC: one clock
    print(f"KeyboardInterrupt raised {latency * 1e3:.1f} ms after SIGINT")
    # The task sleeps an hour: the bound tells "raised at the signal" from
    # "raised when the task ended", with a margin for a loaded machine
    # (a few ms when idle; the figure is printed).
    assert latency < 2.0
    assert "after [144]" in out, (out, err)
    assert proc.returncode == 0, err
    assert "KeyboardInterrupt" not in err      # no worker printed one


def test_replacement_init_failure_is_retried_and_reported(tmp_path):
    FLAKY["flag"] = str(tmp_path / "db-down")
    initialize(workers=1, worker_init=flaky_init)
    old = _multicore._worker_pids()
    open(FLAKY["flag"], "w").close()           # from now on init fails
    task = Task()
    task.run(stuck)
    with pytest.raises(TimeoutExceededError):
        task.get(timeout=0.2)                  # kills the worker
    task = Task()
    task.run(square, 5)
    with pytest.raises(WorkerInitError, match="database unreachable"):
        task.get(timeout=30)                   # no worker can start
    assert multicore.stats()["workers"][0]["start_failures"] >= 5
    os.unlink(FLAKY["flag"])                   # the database is back
    wait_for_fresh_workers(old, 1, timeout=10)
    deadline = time.monotonic() + 10           # next retry is <= 2 s away
    while multicore.stats()["workers"][0]["start_failures"] and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    assert multicore.stats()["workers"][0]["start_failures"] == 0
    task = Task()
    task.run(square, 6)
    assert task.get(timeout=10) == [36]


# ---------------------------------------------------------------------------
# Worker death under load
# ---------------------------------------------------------------------------


def test_chaos_10000_tasks_with_random_kills(tmp_path):
    CHAOS["log"] = str(tmp_path / "started.log")
    CHAOS["ready"] = str(tmp_path / "ready")
    os.mkdir(CHAOS["ready"])
    initialize(workers=2, worker_init=open_chaos_log)
    total, kills_wanted = 10_000, 120
    killed = set()
    done = threading.Event()

    def killer():
        rng = random.Random(7)
        while len(killed) < kills_wanted and not done.is_set():
            time.sleep(rng.uniform(0.001, 0.008))
            ready = set(os.listdir(CHAOS["ready"]))
            pids = [p for p in _multicore._worker_pids() if str(p) in ready and p not in killed]
            if pids:
                victim = rng.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                    killed.add(victim)
                except ProcessLookupError:
                    pass

    thread = threading.Thread(target=killer)
    thread.start()
    results, failed = {}, {}
    try:
        next_i = 0
        while next_i < total:
            batch = []
            for i in range(next_i, min(next_i + 500, total)):
                task = Task()
                task.run(chaos_work, i)
                batch.append((i, task))
            next_i += len(batch)
            for i, task in batch:
                try:
                    results[i] = task.get(timeout=60)[0]
                except WorkerDiedError as e:
                    failed[i] = e
    finally:
        done.set()
        thread.join()

    with open(CHAOS["log"]) as f:
        started = [int(line) for line in f]
    print(f"{total} tasks, {len(killed)} kills, {len(failed)} tasks failed "
          f"with their worker")
    assert len(killed) >= 100
    assert len(results) + len(failed) == total
    assert all(results[i] == i * 3 for i in results)
    # Exactly the killed tasks failed: each failure names a worker we killed
    # with SIGKILL, and no kill failed more than one task.
    assert all(e.signal == signal.SIGKILL and e.pid in killed
               for e in failed.values())
    assert len({e.pid for e in failed.values()}) == len(failed)
    # Nothing ran twice; every success ran once; a failed task at most once.
    assert len(started) == len(set(started))
    assert set(results) <= set(started)
    assert 0 < len(failed) <= len(killed)
    # The pool ends at full size, with none of the killed workers.
    wait_for_fresh_workers(killed, 2)


# ---------------------------------------------------------------------------
# Lifecycle
# ---------------------------------------------------------------------------


def test_fork_child_that_calls_initialize_gets_its_own_pool():
    initialize(workers=2)
    parent_workers = _multicore._worker_pids()
    pid_ = os.fork()
    if pid_ == 0:
        code = 0
        try:
            initialize(workers=1)
            task = Task()
            task.run(pid)
            worker = task.get(timeout=30)[0]
            # The child's worker descends from the child (via its zygote),
            # not from the parent's pool.
            with open(f"/proc/{worker}/stat") as f:
                zygote = int(f.read().split(") ")[1].split()[1])
            with open(f"/proc/{zygote}/stat") as f:
                grand = int(f.read().split(") ")[1].split()[1])
            if worker in parent_workers or grand != os.getpid():
                code = 3
            shutdown()
            if child_pids():
                code = 4
        except BaseException:
            import traceback
            traceback.print_exc()
            code = 5
        os._exit(code)
    _, status = os.waitpid(pid_, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert _multicore._worker_pids() == parent_workers
    task = Task()
    task.run(square, 9)
    assert task.get() == [81]


def test_initialize_while_other_threads_print_and_log():
    stop = threading.Event()

    def noisy(n):
        log = logging.getLogger(f"noise{n}")
        while not stop.is_set():
            log.warning("noise %d", n)
            sys.stdout.write(f"noise {n}\n")
            sys.stdout.flush()
            _ = [object() for _ in range(100)]

    logging.basicConfig(stream=sys.stderr)
    threads = [threading.Thread(target=noisy, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for _ in range(20):
            initialize(workers=2)
            task = Task()
            for i in range(8):
                task.run(chatty, i)     # workers print and log too
            assert task.get(timeout=30) == list(range(8))
            shutdown()
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_1000_initialize_shutdown_cycles_leave_nothing():
    # 1,000 cycles; 200 under AddressSanitizer (the pyasan stage preloads its
    # runtime), where a cycle costs ~10x more: 1,000 ran past 300 s beside a
    # CPU hog. A leak of one descriptor or mapping per cycle shows either way.
    cycles = 200 if "libasan" in os.environ.get("LD_PRELOAD", "") else 1000
    # One warm-up cycle: the first one imports and allocates for good.
    initialize(workers=2)
    shutdown()
    before = proc_counts()
    for i in range(cycles):
        initialize(workers=2)
        if i % 100 == 0:
            task = Task()
            task.run(square, i)
            assert task.get(timeout=30) == [i * i]
            pool = [os.getpid(), _multicore._zygote_pid()] + _multicore._worker_pids()
            assert [shm_mappings(p) for p in pool] == [[]] * len(pool)
        shutdown()
    after = proc_counts()
    print(f"after {cycles} cycles: {before} -> {after}")
    assert after["fds"] == before["fds"]
    assert after["children"] == before["children"] == 0
    assert after["memfd_maps"] == before["memfd_maps"] == 0
    # Python's own allocator may map an arena or two meanwhile; a leak of
    # one mapping per cycle would be one per cycle.
    assert after["maps"] - before["maps"] <= 8
    assert shm_mappings(os.getpid()) == []


# ---------------------------------------------------------------------------
# Results and arguments larger than the shared memory
# ---------------------------------------------------------------------------


def big_result(nbytes):
    return b"x" * nbytes


def test_result_larger_than_shared_memory_is_memory_error():
    initialize(workers=1, shared_memory=64 << 20)
    task = Task()
    task.run(big_result, 100 << 20)
    with pytest.raises(MemoryError, match="did not fit in shared memory"):
        task.get(timeout=60)
    # an argument too large fails at run(), the call that caused it
    task = Task()
    with pytest.raises(MemoryError):
        task.run(len, b"y" * (100 << 20))
    # and the pool still works, with its memory back
    task = Task()
    task.run(big_result, 1 << 20)
    assert task.get(timeout=60) == [b"x" * (1 << 20)]
    # (at most the last 1 MiB result, held by the task and its worker)
    assert multicore.stats()["shm_in_use"] < (2 << 20)


@pytest.mark.parametrize("bad, exc", [(1 << 10, ValueError), ("1G", TypeError),
                                      (True, TypeError)])
def test_shared_memory_argument_is_checked(bad, exc):
    with pytest.raises(exc, match="shared_memory"):
        initialize(workers=1, shared_memory=bad)


def test_shared_memory_below_the_engine_floor_names_value_and_limit():
    # 2 MiB: the binding used to accept it (its own 1 MiB floor) and the
    # engine refused it with a bare "invalid argument". Now the binding
    # checks the engine's floor (MC_REGION_MIN, 64 MiB) and says so.
    with pytest.raises(ValueError) as info:
        initialize(workers=1, shared_memory=2 << 20)
    message = str(info.value)
    assert "shared_memory" in message
    assert str(2 << 20) in message      # the value given
    assert str(64 << 20) in message     # the limit it hit
    assert child_pids() == []           # refused before anything was forked
    # the floor itself is accepted
    initialize(workers=1, shared_memory=64 << 20)
    task = Task()
    task.run(len, b"abc")
    assert task.get(timeout=60) == [3]


# ---------------------------------------------------------------------------
# More ways to die
# ---------------------------------------------------------------------------


def segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


MARKS = {"path": None}


def mark(i):
    with open(MARKS["path"], "a") as f:
        f.write(f"{i}\n")
    return i


def test_segfaulting_task_fails_alone():
    initialize(workers=2)
    task = Task()
    task.run(segfault)
    task.run(square, 4)
    with pytest.raises(WorkerDiedError) as info:
        task.get(timeout=30)
    assert info.value.signal == signal.SIGSEGV
    again = Task()
    again.run(square, 5)
    assert again.get(timeout=30) == [25]


def test_queued_parts_of_a_cancelled_task_never_run(tmp_path):
    MARKS["path"] = str(tmp_path / "marks")
    initialize(workers=2)
    task = Task()
    task.run(stuck)
    task.run(stuck)
    for i in range(5):
        task.run(mark, i)                # queued behind the stuck parts
    with pytest.raises(TimeoutExceededError):
        task.get(timeout=0.3)
    # The replacements run other work; the cancelled parts never run.
    after = Task()
    for i in range(20):
        after.run(square, i)
    assert after.get(timeout=30) == [i * i for i in range(20)]
    time.sleep(0.2)
    assert not os.path.exists(MARKS["path"])


def test_zygote_killed_from_outside_is_a_clear_error_and_recoverable():
    initialize(workers=2)
    workers = _multicore._worker_pids()
    os.kill(_multicore._zygote_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 30     # the workers die with their zygote
    while not all(exited(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(exited(p) for p in workers)
    task = Task()
    task.run(square, 3)                  # queued: nobody will run it
    start = time.monotonic()
    with pytest.raises(multicore.exceptions.PoolNotRunningError, match="zygote"):
        task.get(timeout=30)
    # Seen within a wait slice (ms), not at the 30 s timeout; the margin
    # is for a loaded machine.
    assert time.monotonic() - start < 10
    shutdown()                           # reaps the dead zygote
    assert child_pids() == []
    initialize(workers=2)
    task = Task()
    task.run(square, 6)
    assert task.get(timeout=30) == [36]
