#!/usr/bin/env python3
"""The (a) round trip's tail against two processes sharing one CPU.

    python bench/colocation_probe.py [--pools 8] [--forced 0] [--workers 2]

When the caller and a worker end up on one vCPU, each spins, yields to the
other and finds the other's work done when it gets the CPU back: about
12 us a round trip, for as long as the scheduler leaves them there (src/
wait.c, mc__spin_yield, moves a spinner whose yields keep giving the CPU
away). This probe shows how often that happens and how long it lasts:

  fresh pools   --pools N: N times initialize(); 200 warm-up round trips;
                5,000 timed ones (the loop of bench (a)); shutdown().
  forced        --forced N: one pool; N times, every process of it pinned
                to CPU 0 for 3,000 round trips, then unpinned, then 5,000
                timed ones: how long until they are apart again.

Each line: p50 / p99 / mean in us, the round trips over 5 us, and the
(voluntary, involuntary) context switches of each worker and the caller
over the timed loop (/proc/<pid>/status): a repetition stuck on one CPU
shows hundreds of involuntary switches in the caller and one worker.

To compare two builds, run it once per build in turns (A B A B), the other
one installed with `pip install --target DIR TREE` and picked with
PYTHONPATH=DIR.
"""

import argparse
import os
import time

import multicore
from multicore import Task


def inc(x):
    return x + 1


def switches(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if "ctxt_switches" in line:
                key, value = line.split(":")
                out[key.strip()] = int(value)
    return out["voluntary_ctxt_switches"], out["nonvoluntary_ctxt_switches"]


def timed(pids, n=5000):
    before = {p: switches(p) for p in pids}
    lat = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        t = Task()
        t.run(inc, i)
        t.get()
        lat.append(time.perf_counter_ns() - t0)
    after = {p: switches(p) for p in pids}
    s = sorted(lat)
    slow = sum(1 for x in lat if x > 5000)
    delta = [(after[p][0] - before[p][0], after[p][1] - before[p][1]) for p in pids]
    return (f"p50 {s[n // 2] / 1000:.2f} p99 {s[n * 99 // 100] / 1000:.2f} "
            f"mean {sum(lat) / n / 1000:.2f} slow {slow} switches {delta}")


def warm(n):
    for i in range(n):
        t = Task()
        t.run(inc, i)
        t.get()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pools", type=int, default=8)
    ap.add_argument("--forced", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    for k in range(a.pools):
        multicore.initialize(workers=a.workers)
        try:
            pids = [w["pid"] for w in multicore.stats()["workers"]] + [os.getpid()]
            warm(200)
            print(f"fresh pool {k}: {timed(pids)}", flush=True)
        finally:
            multicore.shutdown()
    if a.forced:
        multicore.initialize(workers=a.workers)
        try:
            pids = [w["pid"] for w in multicore.stats()["workers"]] + [os.getpid()]
            allowed = os.sched_getaffinity(0)
            for k in range(a.forced):
                for p in pids:
                    os.sched_setaffinity(p, {min(allowed)})
                warm(3000)
                for p in pids:
                    os.sched_setaffinity(p, allowed)
                print(f"forced {k}: {timed(pids)}", flush=True)
        finally:
            multicore.shutdown()


if __name__ == "__main__":
    main()
