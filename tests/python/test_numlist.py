"""Lists of numbers (python/multicore/_ext/oob.c, "Lists of numbers"): an
exact list of at least MCX_NUMLIST_MIN (32) exact ints within 64 bits, or
exact floats, given directly as an argument or returned (alone or as an
item of a returned tuple), travels as one packed buffer and is rebuilt by
multicore._multicore._numlist. Everything else is pickled as before.

Which way a list went is observed, not assumed: pickle finds the rebuild
function by name, so a counting stand-in put in its place (in the caller
for results, in the worker for arguments) is what a packed list calls."""

import enum
import struct

import pytest

import multicore
from multicore import _multicore

from conftest import run1

MIN = 32


@pytest.fixture
def caller_count(monkeypatch):
    """Counts the packed lists the caller rebuilds (results). While it is
    in place the caller must not send a packed list itself: pickle refuses
    to pickle a function that is not the one its name finds."""
    real = _multicore._numlist
    calls = []

    def counting(kind, data):
        calls.append((kind, len(memoryview(data).cast("B"))))
        return real(kind, data)

    monkeypatch.setattr(_multicore, "_numlist", counting)
    return calls


def make(kind, n):
    if kind == "ints":
        return [i * 7 - n for i in range(n)]
    return [i * 0.25 for i in range(n)]


def install_counter():
    """In a worker: count the packed lists it rebuilds (arguments)."""
    real = _multicore._numlist
    calls = []

    def counting(kind, data):
        calls.append(kind)
        return real(kind, data)

    _multicore._numlist = counting
    _multicore._numlist_calls = calls
    return True


def received(*args, **kwargs):
    """In a worker with install_counter(): how many packed lists it has
    rebuilt, and what it got (type names of each list's items, lengths,
    identities between arguments)."""
    lists = [a for a in list(args) + list(kwargs.values()) if isinstance(a, list)]
    return (len(_multicore._numlist_calls),
            [(type(a).__name__, sorted({type(v).__name__ for v in a}), len(a)) for a in lists],
            [a is b for a in lists for b in lists])


def build(kind, n):
    return make(kind, n)


def build_pair(kind, n):
    return make(kind, n), 1.5


def echo(x):
    return x


@pytest.mark.parametrize("kind", ["ints", "floats"])
@pytest.mark.parametrize("n", [MIN, 1000, 200_000])
def test_a_returned_list_of_numbers_travels_packed(pool, caller_count, kind, n):
    got = run1(build, kind, n)
    assert got == make(kind, n)
    assert type(got) is list and {type(v) for v in got} == {int if kind == "ints" else float}
    # one packed buffer of 8 bytes a value; from 64 KiB on it went out of band
    assert caller_count == [(0 if kind == "ints" else 1, 8 * n)]


def test_a_list_in_a_returned_tuple_travels_packed(pool, caller_count):
    got = run1(build_pair, "ints", 500)
    assert got == (make("ints", 500), 1.5)
    assert len(caller_count) == 1


def build_same_twice(n):
    a = list(range(n))
    return a, a, b"x" * 100_000


def test_a_list_returned_twice_in_a_tuple_stays_one_object(pool, caller_count):
    a, b, big = run1(build_same_twice, 100)
    assert a is b and a == list(range(100)) and big == b"x" * 100_000
    assert caller_count == []


def test_int_limits_and_float_bits_survive(pool):
    ints = [2 ** 63 - 1, -2 ** 63, 0, -1] * 10
    assert run1(echo, ints) == ints
    floats = [float("nan"), -0.0, float("inf"), float("-inf"), 5e-324] * 8
    bits = [struct.pack("<d", v) for v in floats]
    assert [struct.pack("<d", v) for v in run1(echo, floats)] == bits


class Color(enum.IntEnum):
    RED = 1


class MyList(list):
    pass


@pytest.mark.parametrize("value", [
    [True, False] * MIN,                       # bools stay bools
    [Color.RED] * MIN,                         # int subclasses keep their type
    list(range(MIN)) + [2 ** 64],              # an int beyond 64 bits
    list(range(MIN)) + [1.5],                  # ints and a float
    [1.5] * MIN + [2],                         # floats and an int
    list(range(MIN - 1)),                      # below the threshold
    MyList(range(100)),                        # a list subclass
    [list(range(100))],                        # a nested list is not looked into
], ids=["bools", "intenum", "bigint", "int-float", "float-int", "short", "subclass", "nested"])
def test_other_lists_are_pickled_as_before(pool, caller_count, value):
    got = run1(echo, value)
    assert got == value and type(got) is type(value)
    assert [type(v) for v in got] == [type(v) for v in value]
    assert caller_count == []


def test_a_list_argument_travels_packed(one_worker):
    assert run1(install_counter)
    count, lists, _ = run1(received, list(range(1000)))
    assert count == 1 and lists == [("list", ["int"], 1000)]
    count, lists, _ = run1(received, x=[0.5] * 40)
    assert count == 2 and lists == [("list", ["float"], 40)]


def test_a_list_given_twice_stays_one_object(one_worker):
    assert run1(install_counter)
    a = list(range(100))
    count, _, same = run1(received, a, a)
    assert count == 0 and same == [True, True, True, True]
    count, _, same = run1(received, a, b=a)
    assert count == 0 and same == [True, True, True, True]


def hold(a, d):
    return len(_multicore._numlist_calls), a is d["a"]


def test_a_list_also_held_by_another_argument_stays_one_object(one_worker):
    assert run1(install_counter)
    a = list(range(100))
    assert run1(hold, a, {"a": a}) == (0, True)


def test_numlist_rejects_what_it_cannot_rebuild():
    with pytest.raises(ValueError, match="kind 0 with 7 bytes"):
        _multicore._numlist(0, b"1234567")
    with pytest.raises(ValueError, match="kind 2 with 8 bytes"):
        _multicore._numlist(2, bytes(8))
    assert _multicore._numlist(0, struct.pack("=3q", 1, -2, 3)) == [1, -2, 3]
    assert _multicore._numlist(1, b"") == []
