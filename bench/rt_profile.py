#!/usr/bin/env python3
"""The Python round trip (issue 12 section 2): where each microsecond goes,
for one or more builds of the extension measured in the same run.

    python bench/rt_profile.py [--src NAME=TREE ...] [--reps 5] [--n 5000] [--workers 2]

Each --src names a source tree (a worktree, or a `git archive` of a commit);
its extension is compiled (the Release wheel's flags: -O3 -DNDEBUG, hidden
visibility) into bench/.build/rtprof/NAME/multicore. Without --src, the
tree this script is in is measured as "cur". The builds then run in turns,
one child interpreter per build and repetition (A B A B ...), so that the
machine's drift hits all of them alike; the report is the best (lowest)
p50 and p99 over the repetitions of each build, and the ratios between
builds, against the in-process call and the C spin floor (bench/c/pingpong)
taken in the same run.

A child measures, with perf_counter_ns, in the caller:

  call          f(x), in process (the reference)
  rt            Task(); t.run(f, x); t.get()  (the round trip; p50/p99/mean)
  task_empty    Task(); t.get() with no run: object + group create/destroy
  dumps_args    pickle.dumps(((x,), {}), 5, buffer_callback=cb): what the
                binding did for the arguments before the compact frame
  loads_args    pickle.loads of that (what the worker did)
  dumps_res / loads_res   the same for the result x + 1

The hand-off and wake-up are what is left: rt - (the sum of the parts the
caller and the worker run one after the other).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import buildext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(buildext.BUILD, "rtprof")


def build(name, tree, extra=()):
    dest = os.path.join(OUT, name)
    buildext.build_extension(tree, dest, extra)
    return dest


def pct(s, q):
    s = sorted(s)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def inc(x):
    return x + 1


def child(n, workers):
    import pickle
    import time
    import multicore
    if not multicore._multicore.__file__.startswith(os.environ["PYTHONPATH"]):
        raise SystemExit(f"wrong module: {multicore._multicore.__file__}")
    clock = time.perf_counter_ns

    def loop(fn, k=n):
        ts = []
        for i in range(k):
            t0 = clock()
            fn(i)
            ts.append(clock() - t0)
        return ts

    cb = [].append
    out = {}
    # in-process pieces first (no pool yet: nothing else spinning)
    out["call"] = loop(lambda i: inc(i))
    out["dumps_args"] = loop(lambda i: pickle.dumps(((i,), {}), 5, buffer_callback=cb))
    b = pickle.dumps(((12345,), {}), 5)
    out["loads_args"] = loop(lambda i: memoryview(b).release() if pickle.loads(memoryview(b)) else 0)
    out["dumps_res"] = loop(lambda i: pickle.dumps(i + 1, 5, buffer_callback=cb))
    r = pickle.dumps(12346, 5)
    out["loads_res"] = loop(lambda i: pickle.loads(memoryview(r)))
    multicore.initialize(workers=workers)
    try:
        Task = multicore.Task

        def empty(i):
            Task().get()
        out["task_empty"] = loop(empty)

        def rt(i):
            t = Task()
            t.run(inc, i)
            if t.get()[0] != i + 1:
                raise AssertionError("wrong result")
        for i in range(300):
            rt(i)
        out["rt"] = loop(rt)
    finally:
        multicore.shutdown()
    res = {}
    for k, v in out.items():
        us = [x / 1000 for x in v]
        res[k] = {"p50": pct(us, 0.5), "p99": pct(us, 0.99), "mean": statistics.fmean(us)}
    print(json.dumps(res))


def spin_floor():
    exe = os.path.join(HERE, ".build", "pingpong")
    rt = os.path.join(HERE, ".build", "roundtrip")
    sys.path.insert(0, HERE)
    import cbench
    cbench.build(only=("roundtrip", "pingpong"))
    rows = []
    for e, args in ((exe, [100000, 5, 1000]), (rt, [100000, 5, 1000, 1])):
        r = subprocess.run([e] + [str(a) for a in args], capture_output=True, text=True, timeout=300)
        rows += [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--src", action="append", default=[], help="NAME=TREE")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    if a.child:
        return child(a.n, a.workers)
    srcs = [s.split("=", 1) for s in a.src] or [["cur", ROOT]]
    dirs = {name: build(name, os.path.abspath(tree)) for name, tree in srcs}
    load0 = os.getloadavg()
    runs = {name: [] for name in dirs}
    for rep in range(a.reps):
        for name, d in dirs.items():
            env = dict(os.environ, PYTHONPATH=d)
            # -S: no site-packages, so that an installed (or editable) multicore
            # cannot shadow the build on PYTHONPATH
            p = subprocess.run([sys.executable, "-S", os.path.abspath(__file__), "--child", "--n", str(a.n),
                                "--workers", str(a.workers)], env=env, cwd="/tmp",
                               capture_output=True, text=True, timeout=600)
            if p.returncode != 0:
                raise SystemExit(f"{name} failed: {p.stderr}")
            runs[name].append(json.loads(p.stdout))
    floors = spin_floor()
    load1 = os.getloadavg()
    print(f"load average {load0[0]:.2f} at start, {load1[0]:.2f} at end; "
          f"{a.reps} reps x {a.n} samples; best-of per build (us)")
    keys = list(next(iter(runs.values()))[0].keys())
    best = {name: {k: {m: min(r[k][m] for r in rs) for m in ("p50", "p99", "mean")} for k in keys}
            for name, rs in runs.items()}
    med = {name: {k: statistics.median(r[k]["p50"] for r in rs) for k in keys}
           for name, rs in runs.items()}
    print(f"{'what':<12}" + "".join(f"{n + ' p50':>12}{n + ' p99':>12}{n + ' med':>10}" for n in dirs))
    for k in keys:
        print(f"{k:<12}" + "".join(f"{best[n][k]['p50']:>12.3f}{best[n][k]['p99']:>12.3f}{med[n][k]:>10.3f}"
                                     for n in dirs))
    names = list(dirs)
    for n in names:
        b = best[n]
        print(f"{n}: rt p50 / in-process call = {b['rt']['p50'] / b['call']['p50']:.1f}x; "
              f"rt - (serialization parts + task_empty) = "
              f"{b['rt']['p50'] - b['task_empty']['p50'] - b['dumps_args']['p50'] - b['loads_args']['p50'] - b['dumps_res']['p50'] - b['loads_res']['p50'] - b['call']['p50']:.2f} us")
    for n in names[1:]:
        print(f"{n} vs {names[0]}: rt p50 {best[n]['rt']['p50'] / best[names[0]]['rt']['p50']:.2f}x, "
              f"p99 {best[n]['rt']['p99'] / best[names[0]]['rt']['p99']:.2f}x (lower is better)")
    for row in floors:
        if row.get("mode") == "hot":
            print(f"C {row['name']} (hot): p50 {row['p50_ns'] / 1000:.3f} us p99 {row['p99_ns'] / 1000:.3f} us")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"load": [load0, load1], "runs": runs, "floors": floors}, f)


if __name__ == "__main__":
    sys.exit(main())
