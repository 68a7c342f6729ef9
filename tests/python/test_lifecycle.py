"""Processes, memory and signals around the pool's lifecycle, and the demo."""

import os
import subprocess
import sys
import time

import pytest

import multicore
from multicore import Task, initialize, shutdown
from multicore import _multicore

from conftest import assert_no_children, child_pids, exited, shm_mappings


def square(x):
    return x * x


def sleep_then(value, seconds):
    time.sleep(seconds)
    return value


def test_no_leftover_processes_after_shutdown():
    for _ in range(5):
        initialize(workers=3)
        zygote = _multicore._zygote_pid()
        workers = _multicore._worker_pids()
        assert zygote in child_pids()
        assert len(workers) == 3
        task = Task()
        for i in range(10):
            task.run(square, i)
        assert task.get() == [i * i for i in range(10)]
        shutdown()
        assert_no_children()
        for p in [zygote, *workers]:
            assert not os.path.exists(f"/proc/{p}"), f"process {p} still exists"


def test_no_files_in_dev_shm():
    before = set(os.listdir("/dev/shm"))
    initialize(workers=2)
    procs = [os.getpid(), _multicore._zygote_pid(), *_multicore._worker_pids()]
    task = Task()
    for i in range(20):
        task.run(square, i)
    task.get()
    during = set(os.listdir("/dev/shm"))
    for p in procs:
        assert shm_mappings(p) == [], p
    shutdown()
    after = set(os.listdir("/dev/shm"))
    assert during - before == set()
    assert after - before == set()


def test_fork_child_does_not_stop_the_parents_pool():
    initialize(workers=2)
    pid = os.fork()
    if pid == 0:   # the child: the parent's pool is not its own
        code = 0
        try:
            if Task() is not None:
                code = 3
            shutdown()          # what atexit would do: must not stop the pool
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    task = Task()
    task.run(square, 9)
    assert task.get() == [81]


def is_running_here():
    return _multicore.is_running()


def test_is_running_follows_the_process_wide_pool():
    assert _multicore.is_running() is False
    with multicore.Pool(1) as pool:        # a pool of its own is not the one
        assert pool.apply(square, (3,)) == 9
        assert _multicore.is_running() is False
    initialize(workers=2)
    assert _multicore.is_running() is True
    task = Task()
    task.run(is_running_here)
    assert task.get() == [False]           # a worker runs no pool itself
    pid = os.fork()
    if pid == 0:   # the child: the parent's pool is not its own
        os._exit(0 if _multicore.is_running() is False else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    shutdown()
    assert _multicore.is_running() is False


def test_initialize_from_a_thread():
    import threading
    outcome = {}

    def start():
        initialize(workers=2)
        outcome["ok"] = True

    t = threading.Thread(target=start)
    t.start()
    t.join(60)
    assert outcome.get("ok")
    task = Task()
    task.run(square, 11)
    assert task.get() == [121]


def test_output_is_not_duplicated_and_worker_prints_are_kept(run_python):
    proc = run_python(
        "from multicore import initialize, shutdown, Task\n"
        "def shout(i):\n"
        "    print('from worker', i)\n"
        "    return i\n"
        "print('before initialize')   # buffered: stdout is a pipe\n"
        "initialize(workers=2)\n"
        "task = Task()\n"
        "for i in range(4):\n"
        "    task.run(shout, i)\n"
        "print(task.get())\n"
        "shutdown()\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("before initialize") == 1
    # each worker flushed what its tasks printed when it left (two workers
    # share the pipe, so their lines may interleave)
    assert proc.stdout.count("from worker") == 4, proc.stdout
    assert "[0, 1, 2, 3]" in proc.stdout


def test_at_fork_callbacks_run_as_for_one_fork_per_worker(run_python, tmp_path):
    """os.register_at_fork: `before` and `after_in_parent` once in the caller
    per initialize(), `after_in_child` once in each worker, a replacement
    too; nothing in the zygote, which runs no Python (lifecycle.c). So a
    callback that starts a thread in the child (as telemetry exporters do)
    leaves the zygote single-threaded, and the workers forked from it are
    not forked from a process with threads."""
    log = tmp_path / "forks.log"
    proc = run_python(
        "import os, signal, sys, threading, time\n"
        "from multicore import initialize, shutdown, Task, _multicore\n"
        "LOG = sys.argv[1]\n"
        "def note(what):\n"
        "    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)\n"
        "    os.write(fd, f'{what} {os.getpid()}\\n'.encode())\n"
        "    os.close(fd)\n"
        "def child():\n"
        "    note('child')\n"
        "    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()\n"
        "os.register_at_fork(before=lambda: note('before'),\n"
        "                    after_in_parent=lambda: note('parent'),\n"
        "                    after_in_child=child)\n"
        "def threads(pid):\n"
        "    return len(os.listdir(f'/proc/{pid}/task'))\n"
        "def pid():\n"
        "    return os.getpid()\n"
        "initialize(workers=2)\n"
        "zygote, first = _multicore._zygote_pid(), _multicore._worker_pids()\n"
        "os.kill(first[0], signal.SIGKILL)\n"
        "deadline = time.monotonic() + 30\n"
        "while True:\n"
        "    now = _multicore._worker_pids()\n"
        "    if len(now) == 2 and first[0] not in now:\n"
        "        break\n"
        "    assert time.monotonic() < deadline, now\n"
        "    time.sleep(0.001)\n"
        "task = Task()\n"
        "for _ in range(50):\n"
        "    task.run(pid)\n"
        "ran = sorted(set(task.get(timeout=30)))\n"
        "print(os.getpid(), zygote, *first, *now)\n"
        "print(*ran)\n"
        "while any(threads(p) < 2 for p in now):   # the replacement's callback\n"
        "    assert time.monotonic() < deadline, now\n"
        "    time.sleep(0.001)\n"
        "print(threads(zygote), *[threads(p) for p in now])\n"
        "shutdown()\n",
        str(log))
    assert proc.returncode == 0, proc.stderr
    caller, zygote, w0, w1, *now = map(int, proc.stdout.split("\n")[0].split())
    replacement = (set(now) - {w0, w1}).pop()
    events = sorted(tuple(line.split()) for line in log.read_text().splitlines())
    assert events == sorted([("before", str(caller)), ("parent", str(caller)),
                             ("child", str(w0)), ("child", str(w1)),
                             ("child", str(replacement))]), (events, zygote)
    # the tasks ran in the two live workers: the replacement is one
    assert set(map(int, proc.stdout.split("\n")[1].split())) <= {w1, replacement}
    # the zygote has its one thread; each worker has the callback's too
    assert proc.stdout.split("\n")[2].split() == ["1", "2", "2"], proc.stdout


def test_workers_write_to_fresh_stream_objects(run_python):
    """A worker's sys.stdout/sys.stderr and logging handlers' streams are
    fresh objects on the same descriptors (forksafe.c): the ones the caller
    prepared before its fork, or, for a stream replaced after that (here by
    an at-fork `before` callback, which runs after the preparation), one the
    worker opens itself."""
    proc = run_python(
        "import io, logging, os, sys\n"
        "from multicore import initialize, shutdown, Task\n"
        "handler = logging.StreamHandler(sys.stderr)\n"
        "logging.getLogger('t').addHandler(handler)\n"
        "original = {'stderr': id(sys.stderr), 'handler': id(handler.stream)}\n"
        "late = []\n"
        "def replace_stdout():\n"
        "    sys.stdout = io.TextIOWrapper(io.FileIO(1, 'w', closefd=False),\n"
        "                                  encoding='utf-8', line_buffering=True)\n"
        "    late.append(id(sys.stdout))\n"
        "os.register_at_fork(before=replace_stdout)\n"
        "def streams():\n"
        "    print('printed by a worker')\n"
        "    return (id(sys.stdout) != late[0], sys.stdout.fileno(),\n"
        "            sys.stdout.line_buffering, id(sys.stderr) != original['stderr'],\n"
        "            sys.stderr.fileno(), handler.stream is sys.stderr,\n"
        "            id(handler.stream) != original['handler'])\n"
        "initialize(workers=2)\n"
        "task = Task()\n"
        "for _ in range(4):\n"
        "    task.run(streams)\n"
        "print(set(task.get(timeout=30)))\n"
        "shutdown()\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("printed by a worker") == 4, proc.stdout
    assert "{(True, 1, True, True, 2, True, True)}" in proc.stdout, proc.stdout


def test_demo():
    proc = subprocess.run([sys.executable, "-m", "multicore", "demo"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("sequential:", "parallel:", "speedup:", "workers:", "outputs match"):
        assert word in out, out
    workers = int(out.split("workers:")[1].split()[0])
    assert workers == os.cpu_count()


def test_main_usage():
    proc = subprocess.run([sys.executable, "-m", "multicore"],
                          capture_output=True, text=True, timeout=60)
    assert "usage: python -m multicore demo" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "multicore", "bogus"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "usage: python -m multicore demo" in proc.stdout


def task_inside_worker():
    # a worker is not the pool's owner: no nested pool use
    return Task() is None


def initialize_inside_worker():
    try:
        initialize()
    except RuntimeError as e:
        return "refused: " + str(e)
    return "accepted"


def test_no_pool_use_inside_a_worker():
    initialize(workers=2)
    task = Task()
    task.run(task_inside_worker)
    task.run(initialize_inside_worker)
    nested, init = task.get()
    assert nested is True
    assert init.startswith("refused")


def test_many_tasks_apply_backpressure():
    # more parts than the queue holds: run() waits for room, nothing fails
    initialize(workers=2)
    task = Task()
    n = 5000
    for i in range(n):
        task.run(square, i)
    assert task.get(timeout=120) == [i * i for i in range(n)]


def test_shutdown_from_another_thread_while_get_waits():
    import threading
    initialize(workers=2)
    task = Task()
    task.run(sleep_then, "late", 1.0)
    outcome = {}
    entered = threading.Event()

    def waiter():
        entered.set()
        try:
            outcome["result"] = task.get(timeout=30)
        except BaseException as e:
            outcome["error"] = e

    thread = threading.Thread(target=waiter)
    thread.start()
    entered.wait()
    time.sleep(0.2)
    shutdown()
    thread.join(30)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), multicore.exceptions.PoolNotRunningError), outcome
    del task   # destroying a group of a stopped pool is safe
    assert Task() is None


def _shutdown_while_unpickling():
    try:
        shutdown()
    except RuntimeError:
        return "refused"
    return "stopped"


class ShutdownWhenUnpickled:
    def __reduce__(self):
        return (_shutdown_while_unpickling, ())


def make_shutdown_bomb():
    return ShutdownWhenUnpickled()


def test_shutdown_from_inside_result_decoding_is_refused():
    # the caller reads the result from shared memory while unpickling it:
    # a shutdown() at that moment must neither deadlock nor unmap it
    initialize(workers=2)
    task = Task()
    task.run(make_shutdown_bomb)
    assert task.get(timeout=30) == ["refused"]
    task = Task()
    task.run(square, 4)
    assert task.get() == [16]


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_caller_killed_by_sigkill_takes_the_pool_along(busy):
    # busy: both workers are inside tasks (one spinning, one sleeping) when
    # the caller dies
    script = (
        "import sys, time\n"
        "from multicore import initialize, Task, _multicore\n"
        "def spin():\n"
        "    while True:\n"
        "        pass\n"
        "def nap():\n"
        "    time.sleep(3600)\n"
        "initialize(workers=2)\n"
        f"if {busy}:\n"
        "    t = Task(); t.run(spin); t.run(nap)\n"
        "    time.sleep(0.3)\n"
        "pids = [_multicore._zygote_pid()] + _multicore._worker_pids()\n"
        "print(' '.join(map(str, pids)), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 3
        assert not any(exited(p) for p in pids)
        proc.kill()                    # SIGKILL: no atexit, no shutdown()
        proc.wait(timeout=10)
        t0 = time.monotonic()
        while not all(exited(p) for p in pids) and time.monotonic() - t0 < 30:
            time.sleep(0.005)
        took = time.monotonic() - t0
        assert all(exited(p) for p in pids), "zygote or a worker outlived its caller"
        # Tens of ms when idle; the margin is for a loaded machine.
        assert took < 10.0, f"pool processes took {took:.3f} s to exit"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
