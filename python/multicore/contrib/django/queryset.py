"""How multicore counts a Django QuerySet: with .count(), never len().

multicore.utils.ranges() splits range(len(iterable)). len() of a QuerySet
fetches every row into memory, whereas .count() asks the database for a
number (SELECT COUNT(*)), so ranges() gives a QuerySet's count() instead:
sized(qs) is an object whose len() calls qs.count(). The test is the class
name (QuerySet, with a callable count attribute), so that Django need not be
imported, or even installed, to split a list; anything else passes through.
"""

import operator

__all__ = ["sized"]


class _Counted:
    """Sized by a QuerySet's count(), called when len() is (that is, after
    ranges() has checked its other arguments)."""

    __slots__ = ("_count",)

    def __init__(self, count):
        self._count = count

    def __len__(self):
        n = operator.index(self._count())
        if n < 0:
            raise ValueError("count() returned a negative number")
        return n


def sized(iterable):
    """iterable itself, or for a Django QuerySet an object whose len() is
    the QuerySet's count()."""
    if type(iterable).__name__ != "QuerySet":
        return iterable
    count = getattr(iterable, "count", None)
    if not callable(count):
        return iterable
    return _Counted(count)
