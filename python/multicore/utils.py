"""Helpers for splitting work between the workers.

ranges(iterable, min_range_size=0, number_of_workers=None) yields
(start, end) pairs covering range(len(iterable)), one per worker, each at
least min_range_size long; a Django QuerySet is counted with .count().
Implemented in C (mc_range_step).
"""

from multicore._multicore import ranges

__all__ = ["ranges"]
