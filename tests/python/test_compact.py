"""The compact frame (python/multicore/_ext/frame.h): small atoms (None,
bool, int within 64 bits, float, str, bytes) travel without pickle as a
call's positional arguments and as its result; everything else is pickled
as before. Whichever way a value travels, it must come back equal, of the
same type, and with the same bits (NaN, -0.0)."""

import math
import struct

import pytest

import multicore
from multicore import Task

from conftest import run1


def echo(*args):
    return args[0] if len(args) == 1 else args


def describe(*args, **kwargs):
    """What the worker received: each value's type name and repr."""
    return ([(type(a).__name__, repr(a)) for a in args],
            sorted((k, type(v).__name__, repr(v)) for k, v in kwargs.items()))


def float_bits(*args):
    return [struct.pack("<d", a).hex() for a in args]


def identity(x):
    return x


class Bytes(bytes):
    pass


class Int(int):
    pass


class Str(str):
    pass


ATOMS = [
    None, True, False, 0, 1, -1, 255, 256, 2**31, -2**31 - 1,
    2**63 - 1, -2**63,                       # the 64-bit edges: compact
    2**63, -2**63 - 1, 2**64, 10**40, -10**40,   # beyond: pickled
    0.0, -0.0, 1.5, -1e-310, 5e-324, 1.7976931348623157e308, math.inf, -math.inf,
    "", "a", "héllo", "日本語", "\U0001F600", "a\x00b", "x" * 512, "x" * 513, "é" * 300,
    "\ud800", "a\udfffb",                     # lone surrogates: not UTF-8, pickled
    b"", b"\x00", b"\xff" * 7, bytes(range(256)), b"y" * 508, b"y" * 4096,
]


@pytest.mark.parametrize("value", ATOMS, ids=lambda v: repr(v)[:40])
def test_atom_round_trips_as_argument_and_result(one_worker, value):
    got = run1(identity, value)
    assert type(got) is type(value)
    assert got == value
    if isinstance(value, float):
        assert math.copysign(1.0, got) == math.copysign(1.0, value)
    kinds, _ = run1(describe, value)
    assert kinds == [(type(value).__name__, repr(value))]


def test_nan_keeps_its_bits(one_worker):
    nans = [math.nan, -math.nan, struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000123))[0],
            struct.unpack("<d", struct.pack("<Q", 0xFFF80000DEADBEEF))[0]]   # payloads
    for n in nans:
        got = run1(identity, n)
        assert type(got) is float and math.isnan(got)
        assert struct.pack("<d", got) == struct.pack("<d", n)
    assert run1(float_bits, *nans) == [struct.pack("<d", n).hex() for n in nans]


def test_bool_stays_bool_and_int_stays_int(one_worker):
    assert run1(describe, True, 1, False, 0) == (
        [("bool", "True"), ("int", "1"), ("bool", "False"), ("int", "0")], [])
    assert type(run1(identity, True)) is bool
    assert type(run1(identity, 1)) is int


def test_subclasses_are_pickled_and_keep_their_type(one_worker):
    for value in (Bytes(b"ab"), Int(3), Str("s")):
        got = run1(identity, value)
        assert type(got) is type(value) and got == value
        kinds, _ = run1(describe, value)
        assert kinds == [(type(value).__name__, repr(value))]


def test_every_argument_count_and_mixture(one_worker):
    for n in range(0, 11):   # up to 8 atoms are compact, 9 and 10 pickled
        args = tuple([None, True, -7, 2.5, "s", b"b", 2**70, "é"][i % 8] for i in range(n))
        kinds, _ = run1(describe, *args)
        assert kinds == [(type(a).__name__, repr(a)) for a in args]
        got = run1(echo, *args) if n else None
        if n == 1:
            assert got == args[0]
        elif n > 1:
            assert got == args


def test_keywords_and_non_atoms_still_travel(one_worker):
    assert run1(describe, 1, x=2, y="z") == ([("int", "1")], [("x", "int", "2"), ("y", "str", "'z'")])
    assert run1(describe, [1], (2,), {3: 4}) == (
        [("list", "[1]"), ("tuple", "(2,)"), ("dict", "{3: 4}")], [])
    assert run1(identity, [None, 1.5]) == [None, 1.5]
    # one atom and one non-atom: the whole call is pickled
    assert run1(describe, 1, [2]) == ([("int", "1"), ("list", "[2]")], [])


def test_results_in_the_other_formats_are_unchanged(one_worker):
    t = Task()
    t.run(identity, "abc", serialization_format="string")
    t.run(identity, 5, serialization_format="json")
    t.run(identity, 5)
    assert t.get(timeout=60) == ["abc", 5, 5]


def test_many_parts_mixing_compact_and_pickled(one_worker):
    t = Task()
    values = [i if i % 3 else [i] for i in range(300)] + [2**64, "é", b"", None]
    for v in values:
        t.run(identity, v)
    assert t.get(timeout=60) == values


def test_run_keywords_are_parsed_only_when_given_and_not_mutated(one_worker):
    """run() without keywords takes the path that parses nothing; with
    them, its own options are taken out of a copy (the caller's dict is
    untouched) and the rest reach the function."""
    opts = {"serialization_format": "json", "k": 1}
    t = Task()
    t.run(describe, 2, **opts)
    t.run(describe, 3)
    t.run(fn=describe, use_dill=False, z="w")
    assert t.get(timeout=60) == [[[["int", "2"]], [["k", "int", "1"]]],
                                 ([("int", "3")], []),
                                 ([], [("z", "str", "'w'")])]
    assert opts == {"serialization_format": "json", "k": 1}


def test_task_constructor_and_get_arguments(one_worker):
    for make in (lambda: Task(), lambda: Task(None), lambda: Task(max_load_average=None),
                 lambda: Task(1e9)):
        t = make()
        t.run(identity, 7)
        assert t.get() == [7]
    t = Task()
    t.run(identity, 8)
    assert t.get(None) == [8]
    t = Task()
    t.run(identity, 9)
    assert t.get(timeout=60.0) == [9]
    with pytest.raises(TypeError):
        Task().get(1, 2)
    with pytest.raises(ValueError):
        Task().get(-1)
    with pytest.raises(TypeError):
        multicore._multicore.Task(None, None)
