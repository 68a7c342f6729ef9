#!/usr/bin/env python3
"""The Python round trip's tail against the hypervisor's steal time (issue
12 section 2: p99 <= 10 us on an idle machine).

    python bench/tail_probe.py [--reps 8] [--n 20000] [--workers 2] [--json PATH]

One warm pool, `Task(); t.run(inc, i); t.get()` n times per repetition.
For each repetition: p50, p99, p99.9 of the round trip, and what the
machine's /proc/stat says happened meanwhile: ticks (USER_HZ) stolen by
the hypervisor from this VM's vCPUs, out of all ticks; the sleeps
(voluntary context switches: a spin that ran out, then a futex wait) and
preemptions (involuntary ones) of the caller and the workers; and the CPU
each process last ran on. On a VM the vCPUs are threads of the host: when the
host runs something else on the physical CPU under a vCPU, the process on
that vCPU stops for tens of microseconds or more and no guest-side change
can help. The summary compares repetitions with and without stolen ticks
(a tick is 10 ms, so "no steal" means less than one tick of it; shorter
steals can still hide in those repetitions).
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def inc(x):
    return x + 1


def cpu_ticks():
    """(steal, total) ticks over all CPUs since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[7], sum(v)


def last_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[36])


def switches(pid):
    """(voluntary, involuntary) context switches of a process so far:
    voluntary are its sleeps (a spin ran out, then a futex wait), involuntary
    the guest scheduler taking its CPU away."""
    v = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                k, n = line.split(":")
                v[k] = int(n)
    return v["voluntary_ctxt_switches"], v["nonvoluntary_ctxt_switches"]


def all_switches(pids):
    vs = [switches(p) for p in pids]
    return sum(a for a, _ in vs), sum(b for _, b in vs)


def pct(s, q):
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json")
    args = ap.parse_args()

    import multicore
    from multicore import Task
    multicore.initialize(workers=args.workers)
    try:
        for i in range(2000):                                   # warm-up
            t = Task()
            t.run(inc, i)
            t.get()
        workers = list(multicore._multicore._worker_pids())
        rows = []
        pc = time.perf_counter_ns
        for rep in range(args.reps):
            lat = []
            st0, tot0 = cpu_ticks()
            procs = [os.getpid()] + workers
            sw0 = all_switches(procs)
            per0 = [switches(p) for p in procs]
            for i in range(args.n):
                t0 = pc()
                t = Task()
                t.run(inc, i)
                got = t.get()
                lat.append(pc() - t0)
                if got != [i + 1]:
                    raise AssertionError(f"round trip {i}: {got!r}")
            st1, tot1 = cpu_ticks()
            sw1 = all_switches(procs)
            per = [switches(p) for p in procs]
            s = sorted(lat)
            rows.append({"p50_us": pct(s, 0.5) / 1e3, "p99_us": pct(s, 0.99) / 1e3,
                         "p999_us": pct(s, 0.999) / 1e3, "steal_ticks": st1 - st0,
                         "ticks": tot1 - tot0, "sleeps": sw1[0] - sw0[0],
                         "preempted": sw1[1] - sw0[1],
                         "preempted_each": [b[1] - a[1] for a, b in zip(per0, per)], "caller_cpu": last_cpu(os.getpid()),
                         "worker_cpus": [last_cpu(p) for p in workers]})
    finally:
        multicore.shutdown()

    print(f"{args.reps} reps x {args.n} round trips, {args.workers} workers; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'rep':>3} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'steal/ticks':>12} {'sleeps':>7} {'preempt':>7}  cpus (caller; workers)")
    for k, r in enumerate(rows):
        print(f"{k:>3} {r['p50_us']:>8.2f} {r['p99_us']:>8.2f} {r['p999_us']:>9.2f} "
              f"{r['steal_ticks']:>5}/{r['ticks']:<6} {r['sleeps']:>7} {r['preempted']:>7}  {r['caller_cpu']}; {r['worker_cpus']}  preempted (caller, workers): {r['preempted_each']}")
    for name, sel in (("no stolen tick", [r for r in rows if r["steal_ticks"] == 0]),
                      ("stolen ticks", [r for r in rows if r["steal_ticks"] > 0])):
        if sel:
            p99 = sorted(r["p99_us"] for r in sel)
            print(f"{name}: {len(sel)} reps, p99 {p99[0]:.2f} .. {p99[-1]:.2f} us "
                  f"(median {p99[len(p99) // 2]:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"reps": rows, "n": args.n, "workers": args.workers}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
