"""Helpers for splitting work between the workers.

ranges(iterable, min_range_size=0, number_of_workers=None) yields
(start, end) pairs covering range(len(iterable)), one per worker, each at
least min_range_size long; a Django QuerySet is counted with .count().
number_of_workers defaults to the pool's (a cluster's worker threads on a
cluster). Implemented in C (mc_range_step).
"""

from multicore import _multicore
from multicore.cluster import active as _active_cluster

__all__ = ["ranges"]


def ranges(iterable, min_range_size=0, number_of_workers=None):
    if number_of_workers is None:
        session = _active_cluster()
        if session is not None:
            number_of_workers = session.workers
    return _multicore.ranges(iterable, min_range_size, number_of_workers)


ranges.__doc__ = _multicore.ranges.__doc__
