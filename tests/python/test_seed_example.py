"""The example of the original multicore 0.1.1 README, run as a script."""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def test_seed_example_runs_as_written():
    proc = subprocess.run([sys.executable, os.path.join(HERE, "seed_example.py")],
                          capture_output=True, text=True, timeout=120, cwd=HERE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 2, proc.stdout
    # Example 1: 20 tasks, results in submission order.
    assert lines[0] == ", ".join(str(i) for i in range(20))
    # Example 2: one part per range, each "a,b,c", joined with ", ".
    parts = lines[1].split(", ")
    assert 1 <= len(parts) <= 100
    assert ",".join(parts).split(",") == [str(i) for i in range(100)]
