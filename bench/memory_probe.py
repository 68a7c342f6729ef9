"""Scenario (j), the Python part: memory per task, in a FRESH interpreter.

    python bench/memory_probe.py [--tasks N] [--workers W]

One multicore.Task with N parts inc(i) (the trivial task of every scenario),
as issue 12 measured it: after the last run(), wait (without get()) until
every part has finished, so that every result waits in shared memory, then
collect them with get(). Prints one JSON object:

  shm_bytes_per_task      the pool's shared memory in use / N, every result waiting
  payload_bytes_per_task  argument + result bytes per task (the engine's counters)
  shm_overhead_per_task   the difference: what the engine adds to a task's payload
  caller_bytes_per_queued the caller's private memory (RssAnon) per part, after
                          the runs (the Task's bookkeeping: the group's offsets, the
                          part's format and callable)
  caller_bytes_per_result RssAnon per result once get() has returned, against
                          before the Task: the list of results and the objects
                          in it (get() has freed the Task's bookkeeping)

RssAnon is the caller's private memory (its heap), not the shared pages
it reads. Memory is deterministic up to the allocators' page granularity:
one pass is enough.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402  (before the pool starts)


def rss_anon():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    n = args.tasks

    import multicore
    multicore.initialize(workers=args.workers)
    try:
        inc = workloads.inc
        t = multicore.Task()
        t.run(inc, 0)                       # warm: callable pickled and cached
        t.get()
        s0 = multicore.stats()
        done0 = sum(w["tasks_done"] for w in s0["workers"])
        r0 = rss_anon()

        t = multicore.Task()
        t0 = time.perf_counter()
        for i in range(n):
            t.run(inc, i)
        submit_s = time.perf_counter() - t0
        r1 = rss_anon()
        deadline = time.monotonic() + 600
        while True:                          # every part finished, none collected
            s1 = multicore.stats()
            if sum(w["tasks_done"] for w in s1["workers"]) - done0 >= n:
                break
            if time.monotonic() > deadline:
                raise SystemExit("the tasks did not finish in 600 s")
            time.sleep(0.005)
        t1 = time.perf_counter()
        results = t.get()
        get_s = time.perf_counter() - t1
        r2 = rss_anon()
        if len(results) != n or results[-1] != n:
            raise SystemExit("wrong results")
        s2 = multicore.stats()
    finally:
        multicore.shutdown()

    shm = s1["shm_in_use"] - s0["shm_in_use"]
    payload = (s1["bytes_in"] - s0["bytes_in"]) + (s1["bytes_out"] - s0["bytes_out"])
    print(json.dumps({
        "tasks": n, "workers": args.workers,
        "shm_bytes": shm, "shm_bytes_per_task": shm / n,
        "arg_bytes_per_task": (s1["bytes_in"] - s0["bytes_in"]) / n,
        "result_bytes_per_task": (s1["bytes_out"] - s0["bytes_out"]) / n,
        "payload_bytes_per_task": payload / n,
        "shm_overhead_per_task": (shm - payload) / n,
        "shm_after_get": s2["shm_in_use"] - s0["shm_in_use"],
        "caller_bytes_per_queued": (r1 - r0) / n,
        "caller_bytes_per_result": (r2 - r0) / n,
        "submit_s": submit_s, "get_s": get_s,
    }))


if __name__ == "__main__":
    main()
