"""multicore.shared: arrays that live in the pool's shared memory.

    import multicore, multicore.shared as shared
    multicore.initialize()
    a = shared.zeros((1000, 1000))       # a numpy array in shared memory
    task = multicore.Task()
    task.run(fill_row, a, 0)             # the worker gets the SAME memory:
    task.get()                           # nothing is copied, its writes are seen here

An array made here is passed to tasks of its pool by reference, whatever
its size: sending it costs a few microseconds, and a write on either side
is seen by the other. Inside a task the same functions allocate from the
worker's pool, and returning such an array hands the caller that memory
(no copy either). A slice or view of a shared array travels the same way.
Everything else (ordinary numpy arrays, bytes) is copied once, as before.

Limits: a task may link at most 6 distinct shared buffers (arguments and
result together; ValueError beyond); sent to a task of *another* pool, a
shared array is copied like any other. The memory is freed when no array,
view or task uses it any more. Concurrent writes to the same elements from
several processes need your own coordination, exactly as with threads.

Glue over the extension's SharedMemory buffers (no numpy needed for
buffer()); numpy is imported on first use of the array functions.
"""

import math as _math

from multicore import _multicore

__all__ = ["buffer", "empty", "zeros", "ones", "full", "empty_like", "zeros_like",
           "array"]


def buffer(nbytes, *, pool=None):
    """A writable buffer of nbytes in shared memory (a multicore.SharedMemory;
    memoryview(buffer(n)) to use it). pool: a multicore.Pool, else the
    process-wide pool (in a task: the worker's own)."""
    if pool is not None:
        return pool._handle._shared_buffer(nbytes)
    return _multicore._shared_buffer(nbytes)


def empty(shape, dtype=float, order="C", *, pool=None):
    """Like numpy.empty, in shared memory (contents undefined)."""
    import numpy as np
    dtype = np.dtype(dtype)
    if order not in ("C", "F"):
        raise ValueError(f"order must be 'C' or 'F', not {order!r}")
    shape = (shape,) if isinstance(shape, int) else tuple(int(n) for n in shape)
    if any(n < 0 for n in shape):
        raise ValueError(f"negative dimensions are not allowed: {shape}")
    count = _math.prod(shape)
    if dtype.itemsize == 0:
        raise TypeError(f"dtype {dtype} has no size")
    buf = buffer(count * dtype.itemsize, pool=pool)
    flat = np.frombuffer(buf, dtype=dtype, count=count)
    return flat.reshape(shape, order=order)


def zeros(shape, dtype=float, order="C", *, pool=None):
    """Like numpy.zeros, in shared memory."""
    a = empty(shape, dtype, order, pool=pool)
    a.fill(0)
    return a


def ones(shape, dtype=float, order="C", *, pool=None):
    """Like numpy.ones, in shared memory."""
    a = empty(shape, dtype, order, pool=pool)
    a.fill(1)
    return a


def full(shape, fill_value, dtype=None, order="C", *, pool=None):
    """Like numpy.full, in shared memory."""
    import numpy as np
    if dtype is None:
        dtype = np.array(fill_value).dtype
    a = empty(shape, dtype, order, pool=pool)
    a.fill(fill_value)
    return a


def empty_like(a, dtype=None, *, pool=None):
    """Like numpy.empty_like, in shared memory (C order)."""
    import numpy as np
    a = np.asarray(a)
    return empty(a.shape, a.dtype if dtype is None else dtype, pool=pool)


def zeros_like(a, dtype=None, *, pool=None):
    """Like numpy.zeros_like, in shared memory (C order)."""
    out = empty_like(a, dtype, pool=pool)
    out.fill(0)
    return out


def array(a, dtype=None, *, pool=None):
    """A copy of a (any array-like) in shared memory: copy once, then pass
    it to any number of tasks for free."""
    import numpy as np
    src = np.asarray(a, dtype=dtype)
    out = empty(src.shape, src.dtype, pool=pool)
    np.copyto(out, src)
    return out
