"""The cluster suite (tests/python/cluster_suite.py, issue 14), run in a
pytest process of its own, with one test here per test there.

Its own process, because importing distributed (which the suite, and
multicore on a cluster, must do) installs tblib's copyreg pickling of
tracebacks for every exception type in that process: the local pool's
tests that follow would then see, for example, a RecursionError with its
1,000-frame traceback fail to pickle. This process never imports it.

The suite's results come back as JUnit XML; each test below passes if its
namesake passed there, and fails with its message otherwise."""

import ast
import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = os.path.join(HERE, "cluster_suite.py")
TIMEOUT = 300

if importlib.util.find_spec("distributed") is None:
    # CI (tests/run_all.sh sets CI=1) installs the test extra: missing there
    # is a failure, not a skip
    if os.environ.get("CI"):
        pytest.fail("needs Dask distributed (pip install 'multicore[dask]')", pytrace=False)
    pytest.skip("needs Dask distributed (pip install 'multicore[dask]')",
                allow_module_level=True)


def _suite_tests():
    tree = ast.parse(open(SUITE).read())
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


@pytest.fixture(scope="module")
def suite_results(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster-suite")
    xml = base / "results.xml"
    env = dict(os.environ, MULTICORE_TEST_CLUSTER_WORKDIR=str(base))
    env.pop("MULTICORE_CLUSTER", None)
    env.pop("MULTICORE_TEST_CLUSTER", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", SUITE, "-q",
                               "-p", "no:cacheprovider", "-o", "addopts=",
                               f"--junitxml={xml}"],
                              capture_output=True, text=True, timeout=TIMEOUT, cwd=HERE,
                              env=env)
    except subprocess.TimeoutExpired:
        # The suite's own teardown ends its cluster; killed before that,
        # it leaves its scheduler and workers (in process groups of their
        # own, still running), ended here.
        from dask_cluster import kill_groups
        kill_groups(str(base))
        raise
    results = {}
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            problem = next((c for c in case if c.tag in ("failure", "error", "skipped")), None)
            results.setdefault(case.get("name"), []).append(
                ("passed", "") if problem is None else
                (problem.tag, (problem.get("message") or "") + "\n" + (problem.text or "")))
    return proc, results


@pytest.mark.timeout(TIMEOUT + 30)
@pytest.mark.parametrize("name", _suite_tests())
def test_on_a_real_cluster(suite_results, name):
    proc, results = suite_results
    outcomes = results.get(name)
    assert outcomes, (f"{name} did not run (exit status {proc.returncode}):\n"
                      f"{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}")
    for outcome, text in outcomes:       # a teardown error is a second entry
        assert outcome == "passed", f"{name}: {outcome}\n{text[-4000:]}"
