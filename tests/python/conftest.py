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
from procfs import child_pids, exited  # noqa: F401 (the tests import them from here)


def shm_mappings(pid):
    """What process pid maps or holds open under /dev/shm: its maps lines
    and fd targets. The pool's memory is a memfd and must never be POSIX
    shared memory; only the process's own mappings and descriptors count,
    not what other programs on the machine keep in /dev/shm."""
    found = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            found += [line.strip() for line in f if "/dev/shm" in line]
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("/dev/shm"):
                found.append(target)
    except FileNotFoundError:
        pass
    return found


def assert_no_children(timeout=2.0):
    deadline = time.monotonic() + timeout
    while True:
        left = child_pids()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert left == [], f"child processes left after shutdown: {left}"


# Under CI=1 (tests/run_all.sh and .ci/run set it) nothing may be skipped:
# the README promises every test runs, so a skip (a missing module, a
# pytest.skip, a unittest skipTest in a peer's suite) is reported as a
# failure naming the test and the reason, in every stage that runs pytest.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=1, where nothing may be skipped: {reason}"


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
def one_worker():
    """A running pool of 1 worker, shut down after the test."""
    multicore.initialize(workers=1)
    yield
    multicore.shutdown()


def run1(fn, *args, **kwargs):
    """fn(*args, **kwargs) as one Task of one run: its one result."""
    task = multicore.Task()
    task.run(fn, *args, **kwargs)
    return task.get(timeout=60)[0]


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
