#!/usr/bin/env python3
"""Instructions per round trip, by stage, under callgrind: a figure the
machine's load does not move (bench/rt_profile.py's times do, by several
microseconds on this shared 2-vCPU VM).

    python bench/rt_callgrind.py [--src NAME=TREE ...] [--n 2000]

Each build (compiled as bench/rt_profile.py does, with -g added) runs N
round trips `Task(); t.run(inc, i); t.get()` after 200 of warm-up, under
`valgrind --tool=callgrind --trace-children=yes` (the zygote and workers
are forked, so they are followed), and again with 2N: the difference
divided by N removes start-up and shutdown. Reported per round trip, in
instructions, for the caller and the worker, each function inclusive:

  caller  Task_new (Task()), Task_run, Task_get without waiting
          (Task_get - mc_group_wait_one - mcx_wait_sliced), of which
          decode_result (unpickling the result); Task_dealloc
  worker  mcx_task_entry (everything the worker does for a task: taking
          the GIL, parsing, unpickling args, the call, pickling the result)

Spinning is left out on both sides (its count is how long one waited).
"""

import argparse
import glob
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rt_profile  # noqa: E402

CHILD = r"""
import os, sys, multicore
assert multicore._multicore.__file__.startswith(os.environ["PYTHONPATH"]), multicore._multicore.__file__
n = int(sys.argv[1])
def inc(x):
    return x + 1
multicore.initialize(workers=1)
Task = multicore.Task
for i in range(200 + n):
    t = Task()
    t.run(inc, i)
    assert t.get()[0] == i + 1
multicore.shutdown()
"""

FUNCS = ["Task_new", "Task_run", "Task_get", "mc_group_wait_one", "mcx_wait_sliced",
         "decode_result", "Task_dealloc", "mcx_task_entry", "mcx_oob_encode", "mcx_oob_loads"]


def inclusive(outfile):
    r = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", outfile],
                       capture_output=True, text=True, check=True)
    got = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\([^)]*\)\s+\S*:(\w+)", line)
        if m and m.group(2) in FUNCS and m.group(2) not in got:
            got[m.group(2)] = int(m.group(1).replace(",", ""))
    return got


def measure(pkgdir, n, tag):
    out = os.path.join(rt_profile.buildext.BUILD, "cg", tag)
    os.makedirs(out, exist_ok=True)
    for f in glob.glob(out + "/callgrind.out.*"):
        os.remove(f)
    env = dict(os.environ, PYTHONPATH=pkgdir)
    subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=yes",
                    f"--callgrind-out-file={out}/callgrind.out.%p", sys.executable, "-S", "-c", CHILD, str(n)],
                   env=env, check=True, capture_output=True, cwd="/tmp")
    total = {}
    for f in glob.glob(out + "/callgrind.out.*"):
        for k, v in inclusive(f).items():
            total[k] = total.get(k, 0) + v
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", action="append", default=[])
    ap.add_argument("--n", type=int, default=2000)
    a = ap.parse_args()
    srcs = [s.split("=", 1) for s in a.src] or [["cur", rt_profile.ROOT]]
    rows = {}
    for name, tree in srcs:
        d = rt_profile.build(name, os.path.abspath(tree), extra=["-g"])
        lo = measure(d, a.n, name + "-1")
        hi = measure(d, 2 * a.n, name + "-2")
        rows[name] = {k: (hi.get(k, 0) - lo.get(k, 0)) / a.n for k in FUNCS}
    for name, r in rows.items():
        r["Task_get (no wait)"] = r["Task_get"] - r["mc_group_wait_one"] - r["mcx_wait_sliced"]
    keys = ["Task_new", "Task_run", "mcx_oob_encode", "Task_get (no wait)", "decode_result",
            "Task_dealloc", "mcx_task_entry"]
    print(f"instructions per round trip (inclusive), n={a.n} vs {2 * a.n}")
    print(f"{'function':<22}" + "".join(f"{n:>12}" for n in rows))
    for k in keys:
        print(f"{k:<22}" + "".join(f"{rows[n][k]:>12.0f}" for n in rows))
    tot = {n: sum(rows[n][k] for k in ("Task_new", "Task_run", "Task_get (no wait)", "Task_dealloc",
                                       "mcx_task_entry")) for n in rows}
    print(f"{'total (no spin)':<22}" + "".join(f"{tot[n]:>12.0f}" for n in rows))
    names = list(rows)
    for n in names[1:]:
        print(f"{n} vs {names[0]}: {tot[n] / tot[names[0]]:.2f}x the instructions")


if __name__ == "__main__":
    main()
