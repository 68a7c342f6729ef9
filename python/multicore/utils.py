"""Helpers for splitting work between the workers.

ranges(iterable, min_range_size=0, number_of_workers=None) yields
(start, end) pairs covering range(len(iterable)), one per worker, each at
least min_range_size long; a Django QuerySet is counted with .count()
(multicore.contrib.django.queryset). number_of_workers defaults to the
pool's (a cluster's worker threads on a cluster). The split is computed
in C (mc_range_step).
"""

from typing import Any, Iterator, Optional, Tuple

from multicore import _multicore
from multicore.cluster import active as _active_cluster
from multicore.contrib.django.queryset import sized

__all__ = ["ranges"]


def ranges(iterable: Any, min_range_size: int = 0,
           number_of_workers: Optional[int] = None) -> Iterator[Tuple[int, int]]:
    """Split range(len(iterable)) into consecutive (start, end) pairs, one
    per worker, each at least min_range_size long (the last may be
    shorter). A Django QuerySet is counted with .count(). number_of_workers
    defaults to multicore.NUMBER_OF_WORKERS (on a cluster, its worker
    threads). Returns an iterator."""
    if number_of_workers is None:
        session = _active_cluster()
        if session is not None:
            number_of_workers = session.workers
    return _multicore.ranges(sized(iterable), min_range_size, number_of_workers)
