"""Shared fixtures of the Python tests.

Every test ends with the pool shut down, and then checks that the test
process has no child process left (live or zombie): after shutdown() the
zygote and every worker must have been reaped.
"""

import os
import sys
import time

import pytest

import multicore


def child_pids(pid=None):
    """Pids of the processes whose parent is `pid` (default: this process),
    zombies included, read from /proc/*/stat."""
    pid = os.getpid() if pid is None else pid
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 2 and int(fields[1]) == pid:
            found.append(int(entry))
    return found


def assert_no_children(timeout=2.0):
    deadline = time.monotonic() + timeout
    while True:
        left = child_pids()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert left == [], f"child processes left after shutdown: {left}"


@pytest.fixture(autouse=True)
def _shutdown_and_check_children():
    yield
    multicore.shutdown()
    assert_no_children()


@pytest.fixture
def pool():
    """A running pool of 2 workers, shut down after the test."""
    multicore.initialize(workers=2)
    yield 2
    multicore.shutdown()


@pytest.fixture
def run_python(tmp_path):
    """Run a Python script (source text) in a fresh interpreter."""
    import subprocess

    def run(source, *args, timeout=120, **kwargs):
        script = tmp_path / "script.py"
        script.write_text(source)
        return subprocess.run([sys.executable, str(script), *args],
                              capture_output=True, text=True, timeout=timeout,
                              **kwargs)

    return run
