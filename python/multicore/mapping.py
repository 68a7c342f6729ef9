"""map, imap, imap_unordered and starmap over the pool.

The input is consumed lazily: at most a bounded number of chunks (two per
worker, plus one) are in flight, so a generator of a million items never
becomes a list. Items travel in chunks; unless chunksize is given, the
chunk size adapts to the measured time per item (each worker reports how
long its chunk took) so that a chunk lasts about TARGET_CHUNK_SECONDS. The
first failure cancels the chunks in flight (their workers are stopped if
they run) and is raised with its remote traceback. An error raised by the
input iterable itself is raised after the results of the items read before
it (a chunk it interrupted is dropped).

This is glue over Task and wait_first (the C extension does the work).
"""

import itertools
import time
from collections import deque
from typing import Any, Callable, Iterable, Iterator, List, Optional, TypeVar, Union

T = TypeVar("T")
R = TypeVar("R")
Progress = Union[bool, str, Any]

from multicore import _multicore
from multicore._multicore import Task
from multicore.cluster import active as _active_cluster, wait_first
from multicore.exceptions import PoolNotRunningError, TimeoutExceededError
from multicore.progress import make_progress

__all__ = ["map", "imap", "imap_unordered", "starmap"]

TARGET_CHUNK_SECONDS = 0.01


def _run_chunk(fn, items, star):
    """Runs in a worker: fn over a chunk, and how long that took."""
    start = time.perf_counter()
    if star:
        results = [fn(*item) for item in items]
    else:
        results = [fn(item) for item in items]
    return results, time.perf_counter() - start


class _Chunker:
    """Cuts the input into chunks, sized from measured time per item.

    Until a first chunk's time is known, sizes grow 1, 2, 4, ... (a slow
    function never waits behind a large first chunk); then each chunk aims
    at TARGET_CHUNK_SECONDS of work. With a known length, a chunk never
    exceeds len / (4 x workers), so every worker gets several (balance)."""

    def __init__(self, iterable, chunksize, workers):
        if chunksize is not None:
            if isinstance(chunksize, bool) or not isinstance(chunksize, int) \
                    or chunksize < 1:
                raise ValueError(f"chunksize must be a positive int or None, "
                                 f"not {chunksize!r}")
        try:
            self.total = len(iterable)
        except TypeError:
            self.total = None
        self.items = iter(iterable)
        self.fixed = chunksize
        self.workers = workers
        self.size = chunksize or 1
        self.cap = 100_000
        if self.total is not None:
            self.cap = max(1, min(self.cap, -(-self.total // (4 * workers))))
        self.per_item = None
        self.taken = 0
        self.target = TARGET_CHUNK_SECONDS

    def next_chunk(self):
        chunk = list(itertools.islice(self.items, self.size))
        self.taken += len(chunk)
        if not self.fixed and self.per_item is None:
            self.size = min(2 * self.size, self.cap)     # slow start
        return chunk

    def measured(self, n_items, seconds):
        if self.fixed or n_items == 0:
            return
        per_item = seconds / n_items
        self.per_item = per_item if self.per_item is None else \
            0.7 * self.per_item + 0.3 * per_item
        size = int(self.target / max(self.per_item, 1e-9))
        self.size = max(1, min(size, self.cap))


def _in_flight_limit(workers):
    """Tasks a map (or an Executor) keeps queued or running at once: two
    per worker, plus one, so that no worker waits for its next task."""
    return 2 * workers + 1


def _pool_workers(handle):
    """Workers of the pool a map runs on (the process-wide one when handle
    is None), or PoolNotRunningError."""
    if handle is not None:
        if not handle.running:
            raise PoolNotRunningError("this multicore.Pool is closed")
        return handle.workers
    if not _multicore.is_running():
        raise PoolNotRunningError(
            "the multicore pool is not running: call multicore.initialize() "
            "first")
    return _multicore.number_of_workers()


def _submit(handle, fn, chunk, star, use_dill):
    task = Task() if handle is None else handle.task()
    if task is None:
        raise PoolNotRunningError("the multicore pool is not running")
    task.run(_run_chunk, fn, chunk, star, use_dill=use_dill)
    return task


def _imap(fn, iterable, chunksize, star, ordered, progress, timeout, use_dill,
          handle=None):
    """The results one by one (imap, imap_unordered): a generator, whose
    close() (or collection) cancels the chunks still in flight."""
    chunks = _result_chunks(fn, iterable, chunksize, star, ordered, progress, timeout,
                            use_dill, handle)
    try:
        for results in chunks:
            yield from results
    finally:
        chunks.close()


def _map_list(fn, iterable, chunksize, star, progress, timeout, use_dill, handle=None):
    """All the results, in order, as one list (map, starmap)."""
    out = []
    for results in _result_chunks(fn, iterable, chunksize, star, True, progress,
                                  timeout, use_dill, handle):
        out.extend(results)
    return out


def _result_chunks(fn, iterable, chunksize, star, ordered, progress, timeout,
                   use_dill, handle):
    """The chunks' result lists, as they come (in order if ordered)."""
    if handle is None:
        handle = _active_cluster()     # None: the local process-wide pool
    workers = _pool_workers(handle)
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    chunker = _Chunker(iterable, chunksize, workers)
    # a cluster's tasks cost milliseconds each: longer chunks there
    chunker.target = getattr(handle, "target_chunk_seconds", TARGET_CHUNK_SECONDS)
    bar = make_progress(progress, chunker.total)
    deadline = None if timeout is None else time.monotonic() + timeout
    in_flight = deque()          # (task, n_items), in submission order
    limit = _in_flight_limit(workers)

    def left():
        if deadline is None:
            return None
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutExceededError(f"map: timeout of {timeout} seconds exceeded")
        return remaining

    source_error = None       # the input iterable raised: after what came before

    def fill():
        nonlocal source_error
        while len(in_flight) < limit and source_error is None:
            try:
                chunk = chunker.next_chunk()
            except Exception as e:    # a partly read chunk is dropped
                source_error = e
                return
            if not chunk:
                return
            in_flight.append((_submit(handle, fn, chunk, star, use_dill), len(chunk)))

    try:
        fill()
        if source_error is not None and not in_flight:
            raise source_error
        while in_flight:
            if ordered:
                task, n = in_flight.popleft()
            else:
                tasks = [t for t, _ in in_flight]
                done = wait_first(tasks, left())
                if not done:
                    left()            # raises past the deadline
                    continue
                task, n = in_flight[done[0]]
                del in_flight[done[0]]
            results, seconds = task.get(timeout=left())[0]
            chunker.measured(n, seconds)
            fill()                    # keep the workers busy while we yield
            bar.update(n)
            yield results
            if source_error is not None and not in_flight:
                raise source_error
    finally:
        # On an exception, a timeout, or a consumer that stopped early: the
        # chunks still in flight are cancelled (dropping a Task cancels its
        # queued parts and stops the workers running them).
        in_flight.clear()
        bar.close()


def imap(fn: Callable[[T], R], iterable: Iterable[T],
         chunksize: Optional[int] = None, *, progress: Progress = False,
         timeout: Optional[float] = None, use_dill: bool = False) -> Iterator[R]:
    """Results of fn(item) for each item, in input order, as they come."""
    return _imap(fn, iterable, chunksize, False, True, progress, timeout, use_dill)


def imap_unordered(fn: Callable[[T], R], iterable: Iterable[T],
                   chunksize: Optional[int] = None, *, progress: Progress = False,
                   timeout: Optional[float] = None,
                   use_dill: bool = False) -> Iterator[R]:
    """Results of fn(item) in the order they finish (by chunk)."""
    return _imap(fn, iterable, chunksize, False, False, progress, timeout, use_dill)


def map(fn: Callable[[T], R], iterable: Iterable[T],
        chunksize: Optional[int] = None, *, progress: Progress = False,
        timeout: Optional[float] = None, use_dill: bool = False) -> List[R]:
    """[fn(item) for item in iterable], computed on the pool."""
    return _map_list(fn, iterable, chunksize, False, progress, timeout, use_dill)


def starmap(fn: Callable[..., R], iterable: Iterable[Iterable[Any]],
            chunksize: Optional[int] = None, *, progress: Progress = False,
            timeout: Optional[float] = None, use_dill: bool = False) -> List[R]:
    """[fn(*args) for args in iterable], computed on the pool."""
    return _map_list(fn, iterable, chunksize, True, progress, timeout, use_dill)
