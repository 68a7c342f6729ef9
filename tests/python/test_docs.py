"""Every Python example in the docs runs (each one is a whole program)."""

import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
PAGES = ["task.md", "map.md", "executor.md", "worker-state.md", "migration.md",
         "pool.md", "shared.md", "joblib.md", "cluster.md"]


def examples():
    for page in PAGES:
        text = (DOCS / page).read_text()
        for n, block in enumerate(re.findall(r"```python\n(.*?)```", text, re.S)):
            yield pytest.param(block, id=f"{page}#{n}")


@pytest.mark.parametrize("source", list(examples()))
def test_example_runs(source, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_page_has_an_example():
    assert len(list(examples())) >= len(PAGES)


def test_postgresql_example_runs(tmp_path):
    """docs/postgresql.md's program, against the server tests/run_all.sh starts."""
    import os
    dsn = os.environ.get("MULTICORE_TEST_PG_DSN")
    if not dsn:
        if os.environ.get("CI"):
            pytest.fail("MULTICORE_TEST_PG_DSN is not set (CI starts a server)")
        pytest.skip("no PostgreSQL server: set MULTICORE_TEST_PG_DSN")
    text = (DOCS / "postgresql.md").read_text()
    source = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    script = tmp_path / "example.py"
    script.write_text(source)
    proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path,
                          env={**os.environ, "DSN": dsn})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("10000 squares from"), proc.stdout
