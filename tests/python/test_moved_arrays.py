"""A worker's large numpy arrays are moved to the caller, not copied.

In a worker, numpy arrays from 1 MiB up are allocated in the pool's shared
memory (python/multicore/_ext/npalloc.c). When a task returns one that
nothing else in the worker can reach, the result links it and the caller's
array is the very same memory: the region is mapped at the same address in
every process of the pool, so "moved" is seen as the worker's data address
coming back unchanged. An array the worker can still reach (kept in a
cache, still viewed) is copied, so that nothing the worker does later shows
in a result the caller holds.
"""

import gc
import os
import pickle
import weakref

import numpy as np
import pytest

import multicore
from multicore import Task

from conftest import run1
from test_zero_copy import backed_by_shared_memory, shm_settles_at

MiB = 1 << 20
SHARE_MAX = 6        # MC_SHARE_MAX: links per task, arguments and result
NP_BLOCKS = 16       # MCX_NP_BLOCKS: a worker's arrays in shared memory


def fresh(nbytes, value):
    a = np.full(nbytes // 8, value)
    return a, a.ctypes.data


def fresh_view(nbytes):
    a = np.arange(nbytes // 8, dtype=np.float64).reshape(-1, 4)[1:]
    return a, a.ctypes.data


def kept(nbytes, value):
    state = multicore.worker_state()
    if "kept" not in state:
        state["kept"] = np.full(nbytes // 8, value)
    a = state["kept"]
    return a, a.ctypes.data


def bump_kept():
    multicore.worker_state()["kept"] += 1.0
    return float(multicore.worker_state()["kept"][0])


def view_of_kept(nbytes):
    state = multicore.worker_state()
    state["base"] = np.ones(nbytes // 8)
    v = state["base"][8:]
    return v, v.ctypes.data


def drop_state():
    multicore.worker_state().clear()
    gc.collect()


def many(count, nbytes):
    arrays = [np.full(nbytes // 8, float(i)) for i in range(count)]
    return arrays, [a.ctypes.data for a in arrays]


def hoard(count, nbytes):
    """Keep count arrays alive in the worker; report which are shared."""
    arrays = [np.full(nbytes // 8, float(i)) for i in range(count)]
    multicore.worker_state()["hoard"] = arrays
    return [a.ctypes.data for a in arrays]


def zeros_after_ones(nbytes):
    a = np.ones(nbytes // 8)
    where = a.ctypes.data
    del a
    b = np.zeros(nbytes // 8)
    return b.ctypes.data == where, int(np.count_nonzero(b))


def resized(nbytes):
    a = np.arange(nbytes // 8, dtype=np.float64)
    a.resize(nbytes // 4, refcheck=False)
    return a


def fork_child_uses_arrays(nbytes):
    before = np.full(nbytes // 8, 2.0)
    pid = os.fork()
    if pid == 0:
        # The child allocates, frees, and frees what it inherited.
        code = 0
        try:
            x = np.ones(nbytes // 8)
            y = np.zeros(4 * nbytes // 8)
            del x, y
            code = 0 if before[0] == 2.0 else 3
            del before          # inherited from the worker: not the child's
            gc.collect()
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert before[0] == 2.0
    after = np.full(nbytes // 8, 5.0)
    return os.waitstatus_to_exitcode(status), float(before.sum()), after, after.ctypes.data


def keep_picklebuffer():
    a = np.zeros(MiB // 8)
    multicore.worker_state()["pb"] = pb = pickle.PickleBuffer(a)
    del a
    return pb


def write_through_kept_picklebuffer(value):
    view = memoryview(multicore.worker_state()["pb"]).cast("B").cast("d")
    view[0] = value
    return view[0]


def keep_weakref():
    a = np.full(MiB // 8, 1.0)
    multicore.worker_state()["weak"] = weakref.ref(a)
    return a, a.ctypes.data


def write_through_weakref(value):
    a = multicore.worker_state()["weak"]()
    if a is not None:
        a[0] = value
    return a is not None


class ReleasesOnDrop:
    """A result whose __del__ releases one of its own PickleBuffers."""

    def __init__(self):
        self.big = np.ones(MiB // 8)
        self.pb = pickle.PickleBuffer(bytearray(256 << 10))

    def __reduce_ex__(self, protocol):
        return (tuple, ((self.big, self.pb),))

    def __del__(self):
        self.pb.release()


def released_during_drop():
    return ReleasesOnDrop()


def fork_child_writes():
    a = np.zeros(2 * MiB // 8)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(write)
        os.read(read, 1)        # the parent has freed a and made b
        a[:] = 7.0              # the child's own copy
        os._exit(0)
    os.close(read)
    where = a.ctypes.data
    del a
    b = np.zeros(2 * MiB // 8)  # the same block, given out again
    os.write(write, b"x")
    os.close(write)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b.ctypes.data == where, float(b.max())


def test_a_fresh_array_comes_back_as_the_same_memory(one_worker):
    base = multicore.stats()["shm_in_use"]
    array, where = run1(fresh, 8 * MiB, 2.5)
    assert array.ctypes.data == where          # moved, not copied
    assert backed_by_shared_memory(array) and array.flags.writeable
    assert array.shape == (MiB,) and float(array.sum()) == 2.5 * MiB
    array[:] = 1.0
    del array
    gc.collect()
    assert shm_settles_at(base) == base


def test_a_view_of_a_fresh_array_is_moved_with_its_base(one_worker):
    array, where = run1(fresh_view, 4 * MiB)
    assert array.ctypes.data == where
    expected = np.arange(4 * MiB // 8, dtype=np.float64).reshape(-1, 4)[1:]
    assert np.array_equal(array, expected)


def test_an_array_the_worker_keeps_is_copied_and_never_changes_later(one_worker):
    base = multicore.stats()["shm_in_use"]
    array, where = run1(kept, 4 * MiB, 1.0)
    assert array.ctypes.data != where          # the worker can still reach it
    assert run1(bump_kept) == 2.0              # the worker changes its own
    assert float(array.max()) == 1.0           # ours did not change
    again, _ = run1(kept, 4 * MiB, 1.0)
    assert float(again[0]) == 2.0
    del array, again
    run1(drop_state)
    assert shm_settles_at(base) == base


def test_a_view_whose_base_the_worker_keeps_is_copied(one_worker):
    view, where = run1(view_of_kept, 2 * MiB)
    assert view.ctypes.data != where
    assert float(view.sum()) == 2 * MiB // 8 - 8
    run1(drop_state)


def test_small_arrays_stay_private_to_the_worker(one_worker):
    array, where = run1(fresh, 512 << 10, 1.0)     # below 1 MiB
    assert array.ctypes.data != where
    assert float(array.sum()) == (512 << 10) // 8


def test_links_beyond_the_per_task_limit_are_copied_not_lost(one_worker):
    base = multicore.stats()["shm_in_use"]
    arrays, where = run1(many, SHARE_MAX + 3, MiB)
    moved = [a.ctypes.data == w for a, w in zip(arrays, where)]
    assert moved == [True] * SHARE_MAX + [False] * 3
    assert [float(a[0]) for a in arrays] == [float(i) for i in range(SHARE_MAX + 3)]
    del arrays
    gc.collect()
    assert shm_settles_at(base) == base


def test_arrays_beyond_the_workers_blocks_are_private_and_kept(one_worker):
    base = multicore.stats()["shm_in_use"]
    where = run1(hoard, NP_BLOCKS + 4, MiB)
    in_use = multicore.stats()["shm_in_use"]
    assert in_use >= base + NP_BLOCKS * MiB   # the first ones are shared
    assert in_use < base + (NP_BLOCKS + 1) * MiB + MiB   # the rest are not
    assert len(set(where)) == NP_BLOCKS + 4
    run1(drop_state)
    assert shm_settles_at(base) == base
    # the blocks are free again: a fresh array is moved
    array, w = run1(fresh, MiB, 1.0)
    assert array.ctypes.data == w


def test_zeros_in_a_reused_block_are_zero(one_worker):
    # np.zeros takes the block np.ones just gave back, full of ones
    for _ in range(3):
        reused, nonzero = run1(zeros_after_ones, 2 * MiB)
        assert reused and nonzero == 0


def test_resize_keeps_the_contents(one_worker):
    array = run1(resized, 2 * MiB)
    assert array.shape == (4 * MiB // 8,)
    assert np.array_equal(array[:2 * MiB // 8], np.arange(2 * MiB // 8, dtype=np.float64))
    assert not array[2 * MiB // 8:].any()


def test_a_fork_child_of_a_worker_allocates_and_frees_safely(one_worker):
    code, before_sum, after, where = run1(fork_child_uses_arrays, 2 * MiB)
    assert code == 0
    assert before_sum == 2.0 * (2 * MiB // 8)
    assert after.ctypes.data == where and float(after[0]) == 5.0


def test_many_moved_results_leave_nothing_behind(pool):
    base = multicore.stats()["shm_in_use"]
    for round_ in range(20):
        task = Task()
        for i in range(8):
            task.run(fresh, 2 * MiB, float(i))
        results = task.get(timeout=60)
        assert all(a.ctypes.data == w for a, w in results)
        assert [float(a[-1]) for a, _ in results] == [float(i) for i in range(8)]
        del results
        gc.collect()
    assert shm_settles_at(base) == base


def test_results_read_after_shutdown_stay_valid():
    multicore.initialize(workers=1)
    array, where = run1(fresh, 4 * MiB, 3.0)
    assert array.ctypes.data == where
    multicore.shutdown()
    assert float(array.sum()) == 3.0 * (4 * MiB // 8)


def test_a_workers_arrays_take_at_most_a_quarter_of_a_small_region():
    # 64 MiB region, one worker: a quarter of what it holds may be shared.
    multicore.initialize(workers=1, shared_memory=64 * MiB)
    stats = multicore.stats()
    base, budget = stats["shm_in_use"], stats["shm_size"] // 4
    size = 3 * MiB
    where = run1(hoard, 8, size)
    assert len(where) == 8
    in_use = multicore.stats()["shm_in_use"] - base
    shared = budget // size                        # 5 of the 8
    assert 0 < shared < 8
    assert shared * size <= in_use < (shared + 1) * size
    run1(drop_state)
    assert shm_settles_at(base) == base
    # the region still takes a task of 32 MiB while the worker keeps 16
    run1(hoard, 2, 8 * MiB)
    big = np.ones(32 * MiB // 8)
    assert run1(float, 1.0) == 1.0 and float(run1(np.sum, big)) == 32 * MiB // 8
    run1(drop_state)
    multicore.shutdown()


def test_an_array_behind_a_kept_picklebuffer_is_copied(one_worker):
    got = run1(keep_picklebuffer)
    assert run1(write_through_kept_picklebuffer, 42.0) == 42.0
    assert memoryview(got).cast("B").cast("d")[0] == 0.0
    run1(drop_state)


def test_an_array_with_a_weak_reference_is_copied(one_worker):
    array, where = run1(keep_weakref)
    assert array.ctypes.data != where
    run1(write_through_weakref, 99.0)     # the worker may still reach its own
    assert float(array[0]) == 1.0
    run1(drop_state)


def test_a_buffer_released_while_the_result_is_dropped_is_an_error_not_a_crash(one_worker):
    with pytest.raises(ValueError, match="released"):
        run1(released_during_drop)
    assert run1(float, 2) == 2.0          # the same worker goes on
    assert multicore.stats()["workers"][0]["respawns"] == 0


def test_a_fork_child_of_a_worker_writes_its_own_copy(one_worker):
    # The parent frees its array and the block goes to a new one before the
    # child writes to its inherited array: the child's writes stay its own.
    code, reused, top = run1(fork_child_writes)
    assert code == 0 and reused
    assert top == 0.0
