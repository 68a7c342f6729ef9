"""Scenario (k), the Python part: start-up against the number of workers.

    python bench/startup_workers_probe.py [--reps R] [--workers 2,8,64]

In one interpreter with numpy imported (workloads imports it, as a real
program would have its modules), for each worker count: multicore's
initialize() (which returns when every worker is ready) and the first
result after it, against a bare fork floor measured in the same run, the
repetitions interleaved: the caller forks one process that forks the N
children one after another with os.fork() (as the zygote does, fork hooks
and all), each child writing a byte to a pipe; the floor is the time until
the N bytes are read. Also the CPU time the start took in every process
(caller, zygote, workers; /proc schedstat): on a machine with few cores,
a start whose CPU time is the cores' worth of its wall time cannot gain
from forking in parallel. Prints one JSON object.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402  (numpy, before any pool starts)


def _floor_child(w, q):
    os.write(w, b"x")
    os.read(q, 1)                 # EOF once the sample is over
    os._exit(0)


def fork_chain_floor(n):
    r, w = os.pipe()
    qr, qw = os.pipe()
    t0 = time.perf_counter()
    z = os.fork()
    if z == 0:
        try:
            os.close(r)
            os.close(qw)
            kids = []
            for _ in range(n):
                pid = os.fork()
                if pid == 0:
                    _floor_child(w, qr)
                kids.append(pid)
            for pid in kids:
                os.waitpid(pid, 0)
        finally:
            os._exit(0)
    os.close(w)
    os.close(qr)
    got = 0
    while got < n:
        got += len(os.read(r, 4096))
    dt = time.perf_counter() - t0
    os.close(qw)
    os.waitpid(z, 0)
    os.close(r)
    return dt


def _cpu_ns(pid):
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def pool_sample(n):
    """(ready s, first result s, CPU s of the start: caller + zygote + workers)."""
    import multicore
    c0 = time.process_time()
    t0 = time.perf_counter()
    multicore.initialize(workers=n)
    t1 = time.perf_counter()
    caller = time.process_time() - c0
    pids = [w["pid"] for w in multicore.stats()["workers"] if w["pid"]]
    zyg = _ppid(pids[0]) if pids else None
    cpu = caller + sum(_cpu_ns(p) for p in pids + ([zyg] if zyg else [])) / 1e9
    t = multicore.Task()
    t.run(workloads.inc, 41)
    if t.get() != [42]:
        raise SystemExit("wrong result")
    t2 = time.perf_counter()
    multicore.shutdown()
    return t1 - t0, t2 - t0, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--workers", default="2,8,64")
    args = ap.parse_args()
    out = {"reps": args.reps, "rows": []}
    for n in [int(x) for x in args.workers.split(",") if x]:
        pool_sample(n)                           # warm-up
        ready, first, cpu, floor = [], [], [], []
        for _ in range(args.reps):
            a, b, c = pool_sample(n)
            ready.append(a)
            first.append(b)
            cpu.append(c)
            floor.append(fork_chain_floor(n))
        med = statistics.median
        out["rows"].append({
            "workers": n,
            "ready_ms": 1e3 * med(ready), "first_result_ms": 1e3 * med(first),
            "fork_floor_ms": 1e3 * med(floor),
            "ready_min_ms": 1e3 * min(ready), "fork_floor_min_ms": 1e3 * min(floor),
            "ready_over_floor": med(ready) / med(floor),
            "start_cpu_ms": 1e3 * med(cpu),
            "samples": {"ready_s": ready, "first_result_s": first, "start_cpu_s": cpu,
                        "fork_floor_s": floor}})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
