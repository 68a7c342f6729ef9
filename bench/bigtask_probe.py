"""Scenario (n), one library in a FRESH interpreter: one very large job.

    python bench/bigtask_probe.py --lib multicore|mp_pool [--parts N] [--items M] [--workers W]

Two jobs of the trivial task inc(i) (issue 12 section 4):
  parts  multicore: one Task with N parts, Task.run() x N then get();
         mp_pool: Pool.map over N items (its default chunk size), the
         issue's comparison (N apply_async calls would take minutes);
  items  multicore.map over M items (adaptive chunks) against
         Pool.map over the same M items (its default chunk size).
For each: the wall time from the first submit to the last result in the
caller's hands; the caller's peak RSS above its RSS just before (VmHWM,
reset through /proc/self/clear_refs before each job; the input list is
built before, it is the user's); for multicore, the peak of the pool's
shared memory in use (stats()["shm_in_use"], sampled every 5 ms by a
thread) and the shared pages the caller had mapped at the end (Rss of the
region's mapping in /proc/self/smaps). Prints one JSON object.
"""

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402  (before the pool starts)
import procs      # noqa: E402


def status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak():
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def shared_rss_kib():
    """Rss of the caller's shared mappings of the pool (memfd: '/memfd:')."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                inside = "/memfd:" in line
            elif inside and first == "Rss:":
                total += int(line.split()[1])
    return total


class ShmSampler(threading.Thread):
    def __init__(self, stats):
        super().__init__(daemon=True)
        self.stats, self.peak, self.stop_ev = stats, 0, threading.Event()

    def run(self):
        while not self.stop_ev.is_set():
            self.peak = max(self.peak, self.stats()["shm_in_use"])
            self.stop_ev.wait(0.005)

    def __enter__(self):
        self.base = self.stats()["shm_in_use"]
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.join()
        self.peak = max(self.peak, self.stats()["shm_in_use"])
        return False


def job(name, n, run):
    items = list(range(n))
    rss0 = status_kib("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    out = run(items)
    secs = time.perf_counter() - t0
    peak = status_kib("VmHWM")
    if len(out) != n or out[0] != 1 or out[-1] != n:
        raise SystemExit(f"{name}: wrong results")
    del out
    return {"n": n, "seconds": secs, "per_s": n / secs,
            "caller_rss_before_mib": rss0 / 1024,
            "caller_peak_rss_above_mib": (peak - rss0) / 1024,
            "caller_peak_bytes_per_item": (peak - rss0) * 1024 / n}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=["multicore", "mp_pool"], required=True)
    ap.add_argument("--parts", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=10_000_000)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    procs.crash_if_simulated(args.lib)
    inc = workloads.inc
    res = {"lib": args.lib, "workers": args.workers, "peak_reset": reset_peak()}

    if args.lib == "multicore":
        import multicore
        multicore.initialize(workers=args.workers)
        try:
            t = multicore.Task()
            t.run(inc, 0)
            t.get()
            list(multicore.map(inc, range(1000)))          # warm

            def parts(items):
                t = multicore.Task()
                for x in items:
                    t.run(inc, x)
                return t.get()

            for key, n, fn in (("parts", args.parts, parts),
                               ("items", args.items, lambda items: list(multicore.map(inc, items)))):
                with ShmSampler(multicore.stats) as smp:
                    r = job(key, n, fn)
                r["shm_peak_mib"] = (smp.peak - smp.base) / 2**20
                r["shm_peak_bytes_per_item"] = (smp.peak - smp.base) / n
                r["caller_shared_rss_end_mib"] = shared_rss_kib() / 1024
                r["method"] = "Task.run() x N, get()" if key == "parts" else "multicore.map(chunksize=None)"
                res[key] = r
        finally:
            multicore.shutdown()
    else:
        import multiprocessing
        with multiprocessing.Pool(args.workers) as pool:
            pool.map(inc, range(1000))                      # warm
            for key, n in (("parts", args.parts), ("items", args.items)):
                r = job(key, n, lambda items: pool.map(inc, items))
                r["method"] = "Pool.map (default chunksize)"
                res[key] = r
    print(json.dumps(res))


if __name__ == "__main__":
    main()
