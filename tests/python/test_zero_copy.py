"""Large buffers travel out of band through shared memory (issue 4).

A numpy array sent to a worker is written once into shared memory and the
worker's argument is a view of it; an array a worker returns is written
once and the caller receives a view of it. The shared block lives as long
as the array that uses it and is freed when it goes.
"""

import gc
import os
import time

import numpy as np

import multicore
from multicore import Task
from multicore import _multicore

from conftest import run1

MiB = 1 << 20


def backed_by_shared_memory(array):
    """True if `array` is a view of a multicore.SharedMemory block."""
    obj = array
    for _ in range(16):
        if isinstance(obj, _multicore.SharedMemory):
            return True
        if isinstance(obj, memoryview):
            obj = obj.obj
        elif isinstance(obj, np.ndarray) and obj.base is not None:
            obj = obj.base
        else:
            return False
    return False


def make(nbytes, value):
    return np.full(nbytes // 8, value, dtype=np.float64)


def describe(array):
    result = (backed_by_shared_memory(array), float(array.sum()),
              array.flags.writeable)
    array[0] = -1.0                 # the caller's copy must not change
    return result


def echo(array):
    return array


def keep(array):
    multicore.worker_state().setdefault("kept", []).append(array)
    return len(multicore.worker_state()["kept"])


def kept_sums():
    return [float(a.sum()) for a in multicore.worker_state().get("kept", [])]


def drop_kept():
    multicore.worker_state().pop("kept", None)
    gc.collect()


def kinds(*args, **kwargs):
    return ([type(a).__name__ for a in args],
            {k: type(v).__name__ for k, v in kwargs.items()},
            [bytes(a[:2]) for a in args], sum(len(a) for a in args))


def make_bytes(n):
    return b"x" * n


def make_view(n):
    return memoryview(bytearray(b"v" * n))


def shm_settles_at(value, timeout=5.0):
    deadline = time.monotonic() + timeout
    while multicore.stats()["shm_in_use"] != value and time.monotonic() < deadline:
        time.sleep(0.005)
    return multicore.stats()["shm_in_use"]


def test_returned_array_is_a_writable_view_of_shared_memory(one_worker):
    base = multicore.stats()["shm_in_use"]
    array = run1(make, 8 * MiB, 2.5)
    assert backed_by_shared_memory(array)
    assert array.flags.writeable
    assert array.shape == (MiB,) and float(array.sum()) == 2.5 * MiB
    assert multicore.stats()["shm_in_use"] >= base + 8 * MiB
    array[:] = 1.0                  # ours to write
    del array
    gc.collect()
    assert shm_settles_at(base) == base


def test_argument_is_a_view_in_the_worker_and_the_callers_array_is_untouched(one_worker):
    array = np.arange(MiB, dtype=np.float64)
    in_shm, total, writeable = run1(describe, array)
    assert in_shm and writeable
    assert total == float(np.arange(MiB, dtype=np.float64).sum())
    assert array[0] == 0.0          # the worker wrote to its own view


def test_bytes_bytearray_and_memoryview_travel_out_of_band(one_worker):
    big = b"b" * (4 * MiB)
    task = Task()
    task.run(kinds, big, bytearray(b"a" * MiB), memoryview(big), y=b"k" * MiB)
    names, kw, heads, total = task.get(timeout=60)[0]
    assert names == ["bytes", "bytearray", "memoryview"]
    assert kw == {"y": "bytes"}
    assert heads == [b"bb", b"aa", b"bb"] and total == 9 * MiB
    # returned: bytes and bytearray are rebuilt (they own their memory);
    # a memoryview is a view of the shared memory itself
    assert run1(make_bytes, 2 * MiB) == b"x" * (2 * MiB)
    assert run1(echo, bytearray(big)) == bytearray(big)
    view = run1(make_view, MiB)
    assert isinstance(view, memoryview) and backed_by_shared_memory(view)
    assert bytes(view[:2]) == b"vv" and len(view) == MiB
    assert run1(make_bytes, 10) == b"x" * 10     # small: in the stream


def test_small_buffers_stay_in_band(one_worker):
    small = np.arange(100, dtype=np.float64)
    in_shm, total, _ = run1(describe, small)
    assert not in_shm and total == float(small.sum())
    back = run1(echo, small)
    assert not backed_by_shared_memory(back)
    assert np.array_equal(back, small)


def test_arrays_kept_by_a_worker_stay_valid_and_are_freed_when_dropped(one_worker):
    base = multicore.stats()["shm_in_use"]
    arrays = [np.full(MiB // 8, float(i)) for i in range(3)]
    for a in arrays:
        run1(keep, a)
    # The tasks are over; the worker still uses their arguments in place.
    time.sleep(0.05)
    assert run1(kept_sums) == [float(a.sum()) for a in arrays]
    assert multicore.stats()["shm_in_use"] >= base + 3 * MiB
    run1(drop_kept)
    assert shm_settles_at(base) == base


def test_more_kept_arrays_than_holds_are_copied_not_lost(one_worker):
    base = multicore.stats()["shm_in_use"]
    arrays = [np.full(64 << 10 >> 3, float(i)) for i in range(80)]   # > 64 holds
    for a in arrays:
        run1(keep, a)
    assert run1(kept_sums) == [float(a.sum()) for a in arrays]
    run1(drop_kept)
    assert shm_settles_at(base) == base


def test_returned_array_outlives_shutdown():
    multicore.initialize(workers=1)
    array = run1(make, 4 * MiB, 3.0)
    multicore.shutdown()
    assert float(array.sum()) == 3.0 * (4 * MiB // 8)   # still mapped
    del array
    gc.collect()
    with open("/proc/self/maps") as f:
        assert "memfd:" not in f.read()                 # and now unmapped


def test_round_trips_leave_no_shared_memory_behind():
    # 1,000 round trips of an 8 MiB array (the 64 MiB variant is the same
    # code path; set MULTICORE_ZERO_COPY_MIB=64 to run it). The region is
    # 32 arrays large, so the arena keeps at most an eighth of it (4
    # arrays) of freed pages committed for reuse: resident memory may grow
    # by that after warm-up, never by one array per round trip.
    size = int(os.environ.get("MULTICORE_ZERO_COPY_MIB", "8")) * MiB
    multicore.initialize(workers=1, shared_memory=32 * size)
    array = np.full(size // 8, 1.5)
    base = multicore.stats()["shm_in_use"]

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    for i in range(1000):
        if i == 100:
            rss_warm = rss()
        back = run1(echo, array)
        assert back[-1] == 1.5
        del back
    gc.collect()
    assert shm_settles_at(base) == base
    grown = rss() - rss_warm
    print(f"resident memory after warm-up grew by {grown / MiB:.0f} MiB")
    assert grown < 6 * size
    multicore.shutdown()
