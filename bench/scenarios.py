"""The Python scenarios (a)-(e) and (g), run for one library at a time.

Each scenario function takes a peer adapter (peers.py), the worker count and
a Config, starts the library's pool, warms it up, times only the measured
part, stops the pool (always), and returns a dict of figures for the JSON.
Scenario (f) (start-up) runs in fresh processes: see startup_probe.py; (h)
is C: see cbench.py.

Conventions: latencies are percentiles over every sample; a throughput or a
duration is the best of `reps` repetitions (other load on the machine only
ever slows a run down), and every sample is kept in the JSON.
"""

import gc
import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

import procs
from workloads import array_make, array_sum, inc, spin

MiB = 1 << 20


@dataclass
class Config:
    quick: bool = False
    roundtrips: int = 5000          # (a) samples
    roundtrip_warmup: int = 200
    roundtrip_budget_s: float = 20.0  # (a) stop early past this (joblib: ~10 ms each)...
    roundtrip_min: int = 1000         # ...once this many samples are in
    tasks: int = 20000              # (b), (c) number of trivial tasks
    reps: int = 3                   # (b), (c), (d) repetitions
    spin_n: int = 0                 # (d) iterations for ~50 ms, calibrated by run.py
    array_mib: list = field(default_factory=lambda: [8, 64, 256])
    idle_seconds: float = 5.0       # (g)
    idle_settle: float = 0.5        # (g) pause after the warm-up, before the window

    @classmethod
    def make(cls, quick, spin_n):
        if not quick:
            return cls(spin_n=spin_n)
        return cls(quick=True, roundtrips=50, roundtrip_warmup=5, tasks=1000,
                   reps=1, spin_n=spin_n, array_mib=[8], idle_seconds=0.5, idle_settle=0.1)


def _pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _check(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: wrong result {got!r:.200} (expected {want!r:.200})")


# ---------------------------------------------------------------------------
# (a) round trip of one trivial task, warm pool
# ---------------------------------------------------------------------------

def roundtrip(peer, workers, cfg):
    peer.start(workers)
    try:
        for i in range(cfg.roundtrip_warmup):
            peer.call(inc, i)
        samples = []
        clock = time.perf_counter_ns
        budget_end = time.monotonic() + cfg.roundtrip_budget_s
        for i in range(cfg.roundtrips):
            t0 = clock()
            r = peer.call(inc, i)
            samples.append(clock() - t0)
            if r != i + 1:
                _check(r, i + 1, "inc")
            if i >= cfg.roundtrip_min and (i & 63) == 0 and time.monotonic() > budget_end:
                break
    finally:
        peer.stop()
    us = [s / 1000 for s in samples]
    return {"n": len(us), "p50_us": _pct(us, 0.50), "p99_us": _pct(us, 0.99),
            "mean_us": statistics.fmean(us), "min_us": min(us)}


# ---------------------------------------------------------------------------
# (b) tasks submitted one by one; (c) the library's best batching
# ---------------------------------------------------------------------------

def one_by_one(peer, workers, cfg):
    items = list(range(cfg.tasks))
    want = [x + 1 for x in items]
    peer.start(workers)
    try:
        peer.submit_all(inc, list(range(4 * workers)))          # warm-up
        times = []
        for _ in range(cfg.reps):
            dt, got = _timed(lambda: peer.submit_all(inc, items))
            _check(got, want, "one by one")
            times.append(dt)
            del got
    finally:
        peer.stop()
    best = min(times)
    return {"tasks": cfg.tasks, "seconds": times, "best_s": best,
            "tasks_per_s": cfg.tasks / best}


def batched(peer, workers, cfg):
    items = list(range(cfg.tasks))
    want = [x + 1 for x in items]
    peer.start(workers)
    try:
        peer.map(inc, list(range(4 * workers)), 1)               # warm-up
        by_chunk = {}
        candidates = peer.chunk_candidates(cfg.tasks, workers)
        if cfg.quick:                     # only prove that it runs (each method once)
            candidates = list(dict.fromkeys([candidates[0], candidates[-1]] +
                                            [c for c in candidates if c == "auto"]))
        # A run takes milliseconds, so one preempted run decides a best-of-3:
        # 9 repetitions per chunk size (the median is kept in the JSON too).
        reps = cfg.reps if cfg.quick else max(cfg.reps, 9)
        for c in candidates:
            times = []
            for _ in range(reps):
                dt, got = _timed(lambda: peer.map(inc, items, c))
                _check(list(got), want, f"map chunk {c}")
                times.append(dt)
                del got
            by_chunk[str(c)] = {"seconds": times, "tasks_per_s": cfg.tasks / min(times),
                                "tasks_per_s_median": cfg.tasks / statistics.median(times),
                                "method": peer.map_label(c)}
    finally:
        peer.stop()
    best_c = max(by_chunk, key=lambda c: by_chunk[c]["tasks_per_s"])
    return {"tasks": cfg.tasks, "method": by_chunk[best_c]["method"], "by_chunk": by_chunk,
            "best_chunk": best_c, "tasks_per_s": by_chunk[best_c]["tasks_per_s"]}


# ---------------------------------------------------------------------------
# (d) CPU-bound scaling
# ---------------------------------------------------------------------------

def calibrate_spin(target_s=0.05):
    """Iterations of spin() that take about target_s in this process."""
    n = 20000
    while True:
        dt = min(_timed(lambda: spin(n))[0] for _ in range(3))
        if dt > 0.01:
            return max(1, int(n * target_s / dt))
        n *= 4


def scaling(peer, workers, cfg):
    """2 x workers tasks of ~50 ms of pure Python. The sequential reference
    runs in this same process, alternating with the parallel runs (this VM's
    CPU speed drifts by 20-30 % over seconds): the speedup is the median of
    the ratios of neighbouring pairs; the best-of ratio is kept too."""
    ntasks = 2 * workers
    args = [cfg.spin_n] * ntasks
    want = [spin(cfg.spin_n)] * ntasks
    reps = max(cfg.reps, 5) if not cfg.quick else 1
    seq, par = [], []
    peer.start(workers)
    try:
        peer.submit_all(spin, [1000] * ntasks)                  # warm-up
        for _ in range(reps):
            dt, _got = _timed(lambda: [spin(x) for x in args])  # sequential, in-process
            seq.append(dt)
            dt, got = _timed(lambda: peer.submit_all(spin, args))
            _check(list(got), want, "spin")
            par.append(dt)
    finally:
        peer.stop()
    return {"tasks": ntasks, "spin_n": cfg.spin_n,
            "task_ms": 1000 * statistics.median(seq) / ntasks,
            "sequential_s": seq, "parallel_s": par,
            "speedup": statistics.median(s / p for s, p in zip(seq, par)),
            "speedup_best_of": min(seq) / min(par)}


# ---------------------------------------------------------------------------
# (e) numpy arrays to and from a worker
# ---------------------------------------------------------------------------

def arrays(peer, workers, cfg):
    """Each library's best way: multicore sends and returns arrays made in
    its shared memory (multicore.shared, passed by reference); it is also
    measured with plain numpy arrays (keys *_copy_*: one copy each way)."""
    out = {}
    peer.start(workers)
    try:
        small = np.ones(MiB // 8)
        peer.call(array_sum, small)                             # warm-up, both ways
        peer.call(array_make, MiB)
        del small
        variants = [("", True)]
        if getattr(peer, "has_shared_arrays", lambda: False)():
            variants.append(("_copy", False))
        for mib in cfg.array_mib:
            nbytes = mib * MiB
            reps = 1 if cfg.quick else (5 if mib <= 8 else 3)
            res = out[str(mib)] = {}
            for suffix, shared in variants:
                a = peer.array_to_send(nbytes, shared)
                send = []
                for _ in range(reps):
                    dt, r = _timed(lambda a=a: peer.call(array_sum, a))
                    _check(r, float(nbytes // 8), "array_sum")
                    send.append(dt)
                del a
                gc.collect()
                maker = peer.array_maker(shared)
                ret = []
                for _ in range(reps):
                    dt, r = _timed(lambda: peer.call(maker, nbytes))
                    if r.nbytes != nbytes or r[-1] != 1.0:
                        raise AssertionError("array_make: wrong array")
                    del r
                    gc.collect()
                    ret.append(dt)
                res.update({
                    f"send{suffix}_s": send, f"return{suffix}_s": ret,
                    f"send{suffix}_gb_s": nbytes / min(send) / 1e9,
                    f"return{suffix}_gb_s": nbytes / min(ret) / 1e9,
                })
    finally:
        peer.stop()
    return out


# ---------------------------------------------------------------------------
# (g) CPU used by an idle pool
# ---------------------------------------------------------------------------

def idle_cpu(peer, workers, cfg):
    """utime+stime (/proc/<pid>/stat, clock ticks, as issue 4 asks) and the
    finer schedstat nanoseconds of the caller and every process below it
    (plus the pids the library names), over an idle window. Our own /proc
    reading is kept out of the window: the processes are listed before it
    starts, and read first when it ends (the caller first of all)."""
    me = os.getpid()
    peer.start(workers)
    try:
        peer.submit_all(inc, list(range(8 * workers)))          # every worker is up
        time.sleep(cfg.idle_settle)                             # let start-up settle

        def pids():
            return [me] + sorted((set(procs.descendants(me)) | set(peer.worker_pids())) - {me})

        before_pids = pids()
        names = {p: ("caller" if p == me else procs.comm_of(p)) for p in before_pids}
        # The caller's own nanoseconds come from CLOCK_PROCESS_CPUTIME_ID:
        # schedstat lags for the task that is running while it reads it.
        before = {p: (procs.cpu_ticks(p), procs.cpu_ns(p)) for p in before_pids[1:]}
        me_ticks = procs.cpu_ticks(me)
        t0 = time.monotonic()
        me_ns = time.process_time_ns()
        time.sleep(cfg.idle_seconds)
        me_ns = time.process_time_ns() - me_ns
        elapsed = time.monotonic() - t0
        before[me] = (me_ticks, 0)
        after = {me: (procs.cpu_ticks(me), me_ns)}
        after.update({p: (procs.cpu_ticks(p), procs.cpu_ns(p)) for p in before_pids[1:]})
        born = [p for p in pids() if p not in before]           # during the window: all of it
        for p in born:
            after[p] = (procs.cpu_ticks(p), procs.cpu_ns(p))
            before[p] = (0, 0)
            names[p] = procs.comm_of(p)
    finally:
        peer.stop()
    per_ticks, per_ns = {}, {}
    for p, (t1, n1) in after.items():
        t0_, n0 = before[p]
        if t1 is not None and t0_ is not None:
            per_ticks[p] = t1 - t0_
        if n1 is not None and n0 is not None:
            per_ns[p] = n1 - n0
    ticks = sum(per_ticks.values())
    ns = sum(per_ns.values())
    busiest = sorted(per_ns.items(), key=lambda kv: -kv[1])[:5]
    return {"seconds": elapsed, "processes": len(after), "born_in_window": len(born),
            "ticks": ticks, "cpu_ms": 1000.0 * ticks / procs.CLK_TCK,
            "cpu_percent": 100.0 * ticks / procs.CLK_TCK / elapsed,
            "schedstat_ms": ns / 1e6,
            "caller_ms": per_ns.get(me, 0) / 1e6,
            "busiest": [{"pid": p, "comm": names.get(p, "?"), "ms": v / 1e6}
                        for p, v in busiest if v > 0]}


SCENARIOS = {
    "a": ("round trip of one trivial task", roundtrip),
    "b": ("trivial tasks submitted one by one", one_by_one),
    "c": ("trivial tasks, best batching", batched),
    "d": ("CPU-bound scaling", scaling),
    "e": ("numpy arrays to/from a worker", arrays),
    "g": ("CPU used by an idle pool", idle_cpu),
}
# What the in-process reference can take part in.
REFERENCE_SCENARIOS = {"a", "b", "c", "e"}
