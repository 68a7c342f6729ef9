"""Task functions for tests/python/test_cluster*.py: this directory is on
the PYTHONPATH of the Dask workers those tests start (and on the caller's
sys.path), so these functions travel by reference."""

import os
import time
import uuid


def square(x):
    return x * x


def pid_after(seconds):
    """The worker's pid, after sleeping (later parts can finish first)."""
    time.sleep(seconds)
    return os.getpid()


def fail(message):
    raise ValueError(message)


class Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.handle = lambda: None       # a lambda does not pickle

    def __reduce__(self):
        raise TypeError("this exception does not travel")


def fail_unpicklable(message):
    raise Unpicklable(message)


def call_sys_exit():
    raise SystemExit(3)


def as_tuple(x):
    return (x, [x, x])


def not_a_str():
    return 42


def fresh_token(_same_argument):
    return uuid.uuid4().hex


def record(directory, tag):
    """Note that this call started (a file per start), then return where."""
    path = os.path.join(directory, f"{tag}.{os.getpid()}.{uuid.uuid4().hex}")
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    return tag, os.getpid()


def block(directory, tag, seconds=30.0):
    """Note the start (as record() does), then wait until the file
    `tag.release` appears in directory or `seconds` pass."""
    record(directory, tag)
    release = os.path.join(directory, f"{tag}.release")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not os.path.exists(release):
        time.sleep(0.01)
    with open(os.path.join(directory, f"{tag}.finished.{os.getpid()}"), "w"):
        pass
    return tag, os.getpid()


def identity(x):
    return x


def nbytes(array):
    return int(array.nbytes), float(array.sum())


def double(array):
    return array * 2


def make_adder(offset):
    """A closure: it travels by value (cloudpickle, or dill)."""
    return lambda x: x + offset


def state_and_id():
    import multicore
    return multicore.worker_state().get("token"), multicore.worker_id(), os.getpid()


def failing_init():
    raise RuntimeError("worker_init exploded on purpose")


# -- the start claim, from inside a worker (Client.run) ----------------------

async def claim_key(key, dask_worker=None):
    """Claim `key` as a starting task does, in a thread of the worker (the
    claim's RPC fallback needs the worker's event loop free)."""
    import asyncio
    from multicore.cluster import _dask
    return await asyncio.get_running_loop().run_in_executor(
        None, _dask._claim, dask_worker, key)


def claim_stats(dask_worker=None):
    from multicore.cluster import _dask
    return _dask._claim_stats(dask_worker)


async def claim_with_nobody_listening(key, dask_worker=None):
    """claim_key() with the direct connection pointed at a port nobody
    listens on (refused): the claim must still be made, through the RPC."""
    import asyncio
    import socket
    from multicore.cluster import _dask
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    line = _dask._line(dask_worker.scheduler.address)
    host, saved_port = line.host, line.port
    line._close()
    line.host, line.port, line.down_until = "127.0.0.1", port, 0.0
    try:
        return await asyncio.get_running_loop().run_in_executor(
            None, _dask._claim, dask_worker, key)
    finally:
        line.host, line.port, line.down_until = host, saved_port, 0.0
