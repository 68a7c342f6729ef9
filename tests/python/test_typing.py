"""The package ships type information (py.typed, a stub for the C
extension) that mypy uses: correct code passes, a wrong call is caught."""

import subprocess
import sys

GOOD = '''
import concurrent.futures
from typing import List, Optional
import multicore
from multicore import Task, initialize, shutdown
from multicore.utils import ranges

def square(x: int) -> int:
    return x * x

initialize(workers=2, worker_init=None, shared_memory=1 << 30)
task: Optional[Task] = Task(max_load_average=2.0)
if task is not None:
    task.run(square, 3, serialization_format="json")
    results: List[object] = task.get(timeout=1.5)
pairs = ranges(range(80), min_range_size=30)
squares: List[int] = multicore.map(square, range(10), chunksize=2)
first = next(multicore.imap_unordered(square, iter(range(5))))
wid: Optional[int] = multicore.worker_id()
with multicore.Executor(max_workers=2) as ex:
    fut: concurrent.futures.Future[int] = ex.submit(square, 2)
shutdown()
'''

BAD = '''
import multicore
multicore.initialize(workers="two")
t = multicore.Task()
assert t is not None
t.run(len, [1], serialization_format="yaml")
'''


def run_mypy(tmp_path, source):
    path = tmp_path / "program.py"
    path.write_text(source)
    return subprocess.run([sys.executable, "-m", "mypy", "--no-incremental",
                           "--cache-dir", str(tmp_path / "cache"), str(path)],
                          capture_output=True, text=True, timeout=300)


def test_mypy_accepts_correct_use(tmp_path):
    proc = run_mypy(tmp_path, GOOD)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_catches_wrong_calls(tmp_path):
    proc = run_mypy(tmp_path, BAD)
    assert proc.returncode == 1, proc.stdout
    assert 'Argument "workers" to "initialize" has incompatible type "str"' in proc.stdout
    assert "program.py:6: error:" in proc.stdout          # the "yaml" format
    assert "Literal['pickle', 'json', 'string']" in proc.stdout
    assert "Found 2 errors" in proc.stdout
