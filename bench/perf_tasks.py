"""The workload profiled by bench/perf_breakdown.py: multicore only.

    python bench/perf_tasks.py roundtrip 2000 pids.json   # (a): Task, run, get, 2000 times
    python bench/perf_tasks.py onebyone 20000 pids.json   # (b): 20000 run(), then one get()
    python bench/perf_tasks.py arrays 5 pids.json         # (e): 64 MiB sent, then returned, 5 times

Writes the caller, zygote and worker pids and the wall time to pids.json so
the profile can be split by process.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from workloads import array_make, array_sum, inc  # noqa: E402  (before initialize)
import multicore           # noqa: E402
from multicore import _multicore  # noqa: E402


def main():
    mode, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    multicore.initialize(workers=os.cpu_count())
    for i in range(200):                         # warm-up
        t = multicore.Task()
        t.run(inc, i)
        t.get()
    m0 = time.clock_gettime(time.CLOCK_MONOTONIC)     # perf record -k mono: same clock
    t0 = time.perf_counter()
    if mode == "arrays":
        import numpy as np
        nbytes = 64 << 20
        a = np.ones(nbytes // 8)

        def call(fn, arg):
            t = multicore.Task()
            t.run(fn, arg)
            return t.get(timeout=None)[0]
        call(array_sum, a)                       # warm-up of this size, both ways
        del a
        call(array_make, nbytes)
        a = np.ones(nbytes // 8)
        m0 = time.clock_gettime(time.CLOCK_MONOTONIC)
        t0 = time.perf_counter()
        for i in range(n):
            call(array_sum, a)
            call(array_make, nbytes)             # the result is dropped at once
    elif mode == "roundtrip":
        for i in range(n):
            t = multicore.Task()
            t.run(inc, i)
            t.get(timeout=None)
    else:
        t = multicore.Task()
        for i in range(n):
            t.run(inc, i)
        t.get(timeout=None)
    wall = time.perf_counter() - t0
    m1 = time.clock_gettime(time.CLOCK_MONOTONIC)
    info = {"mode": mode, "tasks": n, "wall_s": wall, "t0": m0, "t1": m1, "caller": os.getpid(),
            "zygote": _multicore._zygote_pid(), "workers": list(_multicore._worker_pids()),
            "module": multicore._multicore.__file__}
    multicore.shutdown()
    with open(out, "w") as f:
        json.dump(info, f)


if __name__ == "__main__":
    main()
