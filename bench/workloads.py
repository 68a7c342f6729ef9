"""The functions every library runs in its workers.

They live in their own module, imported before any pool starts, because
multicore forks its workers at initialize() and finds a task's function by
module and qualified name; multiprocessing, mpire (fork), loky and Ray find
them the same way (by reference), so every library runs exactly the same
code.
"""

import numpy as np


def inc(x):
    """The trivial task: one addition."""
    return x + 1


def map_chunk(fn, chunk):
    """Manual batching: apply fn to a chunk of items in one task."""
    return [fn(x) for x in chunk]


def spin(n):
    """CPU-bound pure Python: n iterations of integer arithmetic."""
    acc = 0
    for i in range(n):
        acc = (acc + i * i) % 1000003
    return acc


def array_sum(a):
    """Scenario (e), sending: the worker reduces the array it received."""
    return float(a.sum())


def array_make(nbytes):
    """Scenario (e), returning: the worker creates an array of nbytes."""
    return np.ones(nbytes // 8, dtype=np.float64)


def warm_malloc(nbytes):
    """Scenario (e)'s warm-up: build and drop an array of nbytes twice, so
    that this process's malloc serves the next one from memory it has
    touched, then hold the worker 50 ms (so that every worker takes one
    such task); returns the pid that ran it."""
    import os
    import time
    for _ in range(2):
        a = np.ones(nbytes // 8, dtype=np.float64)
        del a
    time.sleep(0.05)
    return os.getpid()


def array_make_shared(nbytes):
    """Scenario (e), returning, multicore's way: the same array made in the
    pool's shared memory (multicore.shared), so it comes back by reference."""
    import multicore.shared
    return multicore.shared.ones(nbytes // 8, dtype=np.float64)


def payload_len(a):
    """Scenario (l), sending: the worker takes the payload and returns its size."""
    return a.nbytes


def payload_make(nbytes):
    """Scenario (l), returning: the worker builds a payload of nbytes bytes."""
    return np.ones(nbytes, dtype=np.uint8)


def nap_pid(seconds):
    """Scenario (m)'s warm-up: hold a worker long enough that every worker
    takes one such task; returns the pid that ran it."""
    import os
    import time
    time.sleep(seconds)
    return os.getpid()
