"""The conformance suites keep a pool for a whole class (CPython's
setUpClass), so the per-test check for child processes (tests/python/
conftest.py) moves to the end of each module here."""

import importlib.util
import pathlib

import pytest

import multicore

_spec = importlib.util.spec_from_file_location(
    "_multicore_tests_conftest", pathlib.Path(__file__).parent.parent / "conftest.py")
_parent = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_parent)
assert_no_children = _parent.assert_no_children


@pytest.fixture(autouse=True)
def _shutdown_and_check_children():
    # overrides the per-test fixture of the same name
    yield


@pytest.fixture(autouse=True, scope="module")
def _no_children_after_module():
    yield
    multicore.shutdown()
    assert_no_children()
