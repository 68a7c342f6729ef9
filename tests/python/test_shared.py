"""Shared arrays (multicore.shared) travel by reference, never copied.

An array made by multicore.shared is passed to a task of its pool as a
link to the same memory: the worker's writes are seen by the caller, and
the bytes counted into and out of shared memory stay tiny whatever the
array's size. An array a task makes with multicore.shared comes back the
same way. The memory is freed when nothing uses it any more.
"""

import gc
import time

import numpy as np
import pytest

import multicore
import multicore.shared as shared
from multicore import Task

from conftest import run1
from multicore.exceptions import PoolNotRunningError

MiB = 1 << 20


def shm_settles_at(value, timeout=5.0):
    deadline = time.monotonic() + timeout
    while multicore.stats()["shm_in_use"] != value and time.monotonic() < deadline:
        time.sleep(0.005)
    return multicore.stats()["shm_in_use"]


def moved():
    s = multicore.stats()
    return s["bytes_in"] + s["bytes_out"]


# ---- task functions ------------------------------------------------------

def fill(a, value):
    a[...] = value
    return float(a.sum())


def make_shared(n, value):
    return shared.full(n, value)


def keep_in_worker(a):
    multicore.worker_state()["kept"] = a
    return True


def read_kept(i):
    return float(multicore.worker_state()["kept"][i])


def drop_kept():
    multicore.worker_state().pop("kept", None)
    gc.collect()
    return True


def identity(x):
    return x


def count(*arrays):
    return len(arrays)


def write_through_memoryview(m):
    m[:4] = b"done"
    return len(m)


@pytest.fixture
def two():
    multicore.initialize(workers=2)
    yield
    multicore.shutdown()


def test_a_workers_writes_land_in_the_callers_array(two):
    for n in (10, 3 * MiB):               # small ones are linked too, not pickled
        a = shared.zeros(n)
        before = moved()
        assert run1(fill, a, 3.0) == 3.0 * n
        assert float(a.sum()) == 3.0 * n  # the same memory
        assert moved() - before < 4096    # a link, not n * 8 bytes


def test_slices_and_2d_views_are_linked_with_their_offset(two):
    a = shared.zeros((100, 1000))
    run1(fill, a[10:20], 1.0)
    run1(fill, a[:, 5], 2.0)              # strided: copied, like any strided view
    assert float(a[10:20].sum()) == 10 * 1000
    assert float(a[:10].sum()) == 0 and float(a[20:].sum()) == 0


def test_an_array_made_in_a_task_comes_back_as_the_same_memory(two):
    base = multicore.stats()["shm_in_use"]
    before = moved()
    b = run1(make_shared, 2 * MiB, 1.5)
    assert moved() - before < 4096        # nothing copied on the way back
    assert b.shape == (2 * MiB,) and float(b.sum()) == 1.5 * 2 * MiB
    assert b.flags.writeable
    # ...and can be sent on to another task by reference
    assert run1(fill, b, 2.0) == 2.0 * 2 * MiB and b[0] == 2.0
    del b
    gc.collect()
    assert shm_settles_at(base) == base


def test_caller_and_worker_see_each_others_later_writes():
    multicore.initialize(workers=1)
    a = shared.zeros(1000)
    assert run1(keep_in_worker, a)
    a[7] = 42.0                           # written after the task ended
    assert run1(read_kept, 7) == 42.0
    run1(drop_kept)
    multicore.shutdown()


def test_memory_is_freed_when_the_last_user_goes(two):
    base = multicore.stats()["shm_in_use"]
    a = shared.empty(4 * MiB // 8)
    assert multicore.stats()["shm_in_use"] >= base + 4 * MiB
    view = a[100:]
    task = Task()
    task.run(fill, a, 1.0)
    del a                                 # the task and the view still use it
    task.get(timeout=60)
    assert float(view[0]) == 1.0
    del view, task
    gc.collect()
    assert shm_settles_at(base) == base


def test_round_trips_leave_nothing_behind(two):
    base = multicore.stats()["shm_in_use"]
    for i in range(200):
        b = run1(make_shared, MiB // 8, float(i))
        assert run1(fill, b, 1.0) == MiB // 8
        del b
    gc.collect()
    assert shm_settles_at(base) == base


def test_shared_array_outlives_shutdown():
    multicore.initialize(workers=1)
    a = shared.ones(MiB)
    b = run1(make_shared, MiB, 2.0)
    multicore.shutdown()
    assert float(a.sum()) == MiB and float(b.sum()) == 2.0 * MiB
    del a, b
    gc.collect()
    with open("/proc/self/maps") as f:
        assert "memfd:" not in f.read()


def test_at_most_six_shared_buffers_per_task(two):
    arrays = [shared.zeros(10) for _ in range(7)]
    assert run1(count, *arrays[:6]) == 6
    assert run1(count, arrays[0], arrays[0][1:], arrays[0][:3]) == 3   # one buffer
    task = Task()
    with pytest.raises(ValueError, match="at most 6 shared buffers"):
        task.run(count, *arrays)
    assert task.get(timeout=10) == []     # nothing was queued


def test_buffer_and_memoryview_travel_by_reference(two):
    buf = shared.buffer(100)
    assert buf.nbytes == 100 and buf.shared
    m = memoryview(buf)
    m[:] = b"x" * 100
    assert run1(write_through_memoryview, buf) == 100
    assert bytes(m[:5]) == b"donex"
    assert run1(write_through_memoryview, m[50:]) == 50
    assert bytes(m[50:54]) == b"done"


def test_other_pools_get_a_copy():
    multicore.initialize(workers=1)
    a = shared.zeros(1000)
    with multicore.Pool(1) as pool:
        task = pool.Task()
        task.run(fill, a, 5.0)            # another region: copied, like any argument
        assert task.get(timeout=60) == [5000.0]
        assert float(a.sum()) == 0.0
        own = shared.zeros(1000, pool=pool)
        task = pool.Task()
        task.run(fill, own, 5.0)
        task.get(timeout=60)
        assert float(own.sum()) == 5000.0
    multicore.shutdown()


def test_plain_arrays_keep_their_copy_semantics(two):
    a = np.zeros(MiB)
    run1(fill, a, 1.0)
    assert float(a.sum()) == 0.0


def test_bad_input_is_a_clear_error():
    with pytest.raises(PoolNotRunningError, match="initialize"):
        shared.zeros(10)
    multicore.initialize(workers=1, shared_memory=64 * MiB)
    with pytest.raises(ValueError, match="negative"):
        shared.empty((2, -1))
    with pytest.raises(ValueError, match=">= 0"):
        shared.buffer(-1)
    with pytest.raises(TypeError, match="integer"):
        shared.buffer("10")
    with pytest.raises(MemoryError):
        shared.empty(128 * MiB, dtype=np.uint8)
    with pytest.raises(ValueError, match="order"):
        shared.empty(3, order="K")
    assert shared.empty(0).size == 0
    a = shared.array([[1, 2], [3, 4]], dtype=np.int32)
    assert a.dtype == np.int32 and a.tolist() == [[1, 2], [3, 4]]
    assert shared.zeros_like(a).tolist() == [[0, 0], [0, 0]]
    assert shared.full((2,), 7).tolist() == [7, 7]
    multicore.shutdown()


def make_many(n, *given):
    return [shared.zeros(1) for _ in range(n)] + list(given)


def make_new(n, *given):
    return [shared.zeros(1) for _ in range(n)]


def test_a_task_returning_too_many_shared_buffers_fails_clearly(two):
    task = Task()
    task.run(make_many, 7)
    with pytest.raises(ValueError, match="at most 6 shared buffers"):
        task.get(timeout=60)
    # the arguments' links count too: 4 given + 3 made is one too many...
    given = [shared.zeros(1) for _ in range(4)]
    task = Task()
    task.run(make_new, 3, *given)
    with pytest.raises(ValueError, match="arguments and result together"):
        task.get(timeout=60)
    # ...while returning the given ones again costs nothing
    assert len(run1(make_many, 2, *given)) == 6
