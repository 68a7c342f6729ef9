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
import mmap
import os
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

import procs
from workloads import (array_make, array_sum, inc, nap_pid, payload_len, payload_make, spin,
                       warm_malloc)

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
    payload_max_log4: int = 15      # (l) sizes 4**0 .. 4**15 bytes (1 B .. 1 GiB)
    payload_budget_s: float = 20.0  # (l) per size and direction, at most this long...
    worker_counts: list = field(default_factory=lambda: [1, 2, 4, 8, 16, 32, 64])  # (m)
    growth_tasks: int = 20000       # (m) tasks one by one
    growth_items: int = 200000      # (m) items of one multicore.map
    growth_pairs: int = 7           # (m) rounds of 2 workers against the most, alternating

    @classmethod
    def make(cls, quick, spin_n):
        if not quick:
            return cls(spin_n=spin_n)
        return cls(quick=True, roundtrips=50, roundtrip_warmup=5, tasks=1000,
                   reps=1, spin_n=spin_n, array_mib=[8], idle_seconds=0.5, idle_settle=0.1,
                   payload_max_log4=10, payload_budget_s=1.0, worker_counts=[1, 2, 8],
                   growth_tasks=1000, growth_items=10000)


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

def fresh_shared(nbytes):
    """A fresh mapping of shared memory (MAP_SHARED|MAP_ANONYMOUS: shmem,
    like the pool's memfd region): every page faults and is zeroed on first
    touch, as a fresh block of the pool's region is."""
    return mmap.mmap(-1, max(1, nbytes), flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)


def floor_copy_sum(a):
    """(e)'s sending floor, in-process: copy the array into fresh shared
    memory (what sending a plain array must do once), then sum it there
    (the task's work)."""
    m = fresh_shared(a.nbytes)
    b = np.frombuffer(m, dtype=a.dtype, count=a.size)
    b[:] = a
    r = float(b.sum())
    del b
    m.close()
    return r


def floor_build_copy(nbytes, dtype=np.float64):
    """(e)'s and (l)'s returning floor, in-process: build the array (the
    task's work), then copy it out into fresh shared memory (what returning
    a plain array must do once). Returns the copy (its mapping lives as
    long as the array)."""
    a = np.ones(nbytes // np.dtype(dtype).itemsize, dtype=dtype)
    m = fresh_shared(a.nbytes)
    b = np.frombuffer(m, dtype=a.dtype, count=a.size)
    b[:] = a
    return b


def floor_copy(a):
    """(l)'s sending floor, in-process: copy the payload into fresh shared
    memory; returns its size (what the worker returns)."""
    m = fresh_shared(a.nbytes)
    b = np.frombuffer(m, dtype=a.dtype, count=a.size)
    b[:] = a
    n = b.nbytes
    del b
    m.close()
    return n


def _array_floors(nbytes, reps):
    """The copy floors of (e), in this process: sending (copy into fresh
    shared memory + sum) and returning (build + copy out), and the same
    into warm shared memory. Each repetition is set up as arrays() sets up
    a library's: the array to send made just before (untimed, so it is in
    the caches as a library's freshly made argument is), and a
    gc.collect() after, which walks the heap and leaves the caches cold
    (an 8 MiB copy timed back to back ran twice as fast as the same copy
    after a collection)."""
    def timed_reps(op, send):
        times = []
        for _ in range(reps):
            a = np.ones(nbytes // 8) if send else None
            dt, r = _timed(lambda: op(a))
            if send:
                _check(r, float(nbytes // 8), "floor: copy + sum")
            elif r.nbytes != nbytes or r[-1] != 1.0:
                raise AssertionError("floor: build + copy: wrong array")
            del a, r
            gc.collect()
            times.append(dt)
        return times

    send = timed_reps(floor_copy_sum, True)
    ret = timed_reps(lambda _a: floor_build_copy(nbytes), False)
    # The same into warm shared memory (one mapping, touched before, reused
    # by every repetition): the floor of a region whose pages are already
    # faulted in, as the pool's are once blocks of that size were used.
    m = fresh_shared(nbytes)
    w = np.frombuffer(m, dtype=np.float64, count=nbytes // 8)
    w[:] = 0.0
    send_w = timed_reps(lambda a: (np.copyto(w, a), float(w.sum()))[1], True)
    ret_w = timed_reps(lambda _a: (np.copyto(w, np.ones(nbytes // 8)), w)[1], False)
    # And returning without the copy (a worker's own array is moved to the
    # caller): the build alone, written into that warm memory in place.
    ret_b = timed_reps(lambda _a: (w.fill(1.0), w)[1], False)
    del w
    m.close()
    return {"send_floor_s": send, "return_floor_s": ret,
            "send_floor_gb_s": nbytes / min(send) / 1e9,
            "return_floor_gb_s": nbytes / min(ret) / 1e9,
            "send_warm_floor_s": send_w, "return_warm_floor_s": ret_w,
            "send_warm_floor_gb_s": nbytes / min(send_w) / 1e9,
            "return_warm_floor_gb_s": nbytes / min(ret_w) / 1e9,
            "return_build_floor_s": ret_b,
            "return_build_floor_gb_s": nbytes / min(ret_b) / 1e9}


def arrays(peer, workers, cfg):
    """Each library's best way: multicore sends and returns arrays made in
    its shared memory (multicore.shared, passed by reference); it is also
    measured with plain numpy arrays (keys *_copy_*: one copy each way).
    The in-process reference also measures the copy floors of plain arrays
    (keys *_floor_*, issue 12 section 1): copy into fresh shared memory +
    sum, and build + copy out; and the build alone (a worker's array that
    is moved, not copied)."""
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
                # A fresh array for every repetition, made outside the
                # timer: joblib keeps the memmap it made of an array object
                # and reuses it when the same object is sent again, which
                # would time a cache instead of a send.
                # One untimed round each way first, for every library: the
                # first use of a size pays one-time costs (a pool's region
                # or an object store faulting in memory it keeps), and with
                # three repetitions at 64 and 256 MiB the best of them was
                # otherwise often the only one past those.
                # And every worker's malloc warmed for the size: each worker
                # process has its own, and glibc's gives a process's first
                # array of a size a fresh mapping and its second fresh heap
                # pages (it raised its mmap threshold on the first free);
                # only from the third on is the memory already touched
                # (multicore, 8 MiB: 531-562, 516, then 0 page faults in the
                # worker that builds it; which worker takes a call depends
                # on which one spins, so one worker could otherwise be warm
                # and the other not). Each worker takes one such task: it
                # holds its worker 50 ms (as (m)'s warm-up does).
                warmed = peer.submit_all(warm_malloc, [nbytes] * workers)
                res[f"warmed{suffix}_workers"] = len(set(warmed))
                a = peer.array_to_send(nbytes, shared)
                _check(peer.call(array_sum, a), float(nbytes // 8), "array_sum")
                del a
                maker = peer.array_maker(shared)
                r = peer.call(maker, nbytes)
                if r.nbytes != nbytes:
                    raise AssertionError("array_make: wrong array")
                del r
                gc.collect()
                send = []
                for _ in range(reps):
                    a = peer.array_to_send(nbytes, shared)
                    dt, r = _timed(lambda a=a: peer.call(array_sum, a))
                    _check(r, float(nbytes // 8), "array_sum")
                    send.append(dt)
                    del a
                    gc.collect()
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
            if peer.is_reference:
                res.update(_array_floors(nbytes, reps))
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


# ---------------------------------------------------------------------------
# (l) round trip and GB/s against payload size (issue 12 section 4)
# ---------------------------------------------------------------------------

def _payload_reps(size, quick):
    """(max, min) samples for one size: many for small payloads (a
    percentile), few for large ones (each costs a copy of up to 1 GiB)."""
    if quick:
        return 5, 1
    if size <= 64 << 10:
        return 300, 20
    if size <= 16 * MiB:
        return 30, 5
    if size <= 256 * MiB:
        return 5, 3
    return 3, 2


def payload_sizes(peer, workers, cfg):
    """Plain numpy uint8 arrays of 4**k bytes, k = 0 .. payload_max_log4.
    Sending: the worker receives the payload and returns its size;
    returning: the worker builds the payload (np.ones) and returns it.
    multicore gets ordinary arrays (the path most users take: copied once
    sending; returned from 1 MiB up, the worker's array is moved, not
    copied); the in-process reference measures the floors: copy into fresh
    shared memory (sending), build + copy into fresh shared memory
    (returning). A size stops after payload_budget_s once it has its
    minimum number of samples. GB/s is the payload over the median. Each
    sample sends a new array (made outside the timer)."""
    sizes = [4 ** k for k in range(cfg.payload_max_log4 + 1)]
    rows = []
    peer.start(workers)
    try:
        peer.call(payload_len, np.ones(16, dtype=np.uint8))     # warm-up, both ways
        peer.call(payload_make, 16)
        for size in sizes:
            most, least = _payload_reps(size, cfg.quick)
            row = {"bytes": size}
            box = [None]   # a fresh payload for every sample (see arrays(): joblib's memmap cache)
            if peer.is_reference:
                ops = {"send": lambda: floor_copy(box[0]),
                       "return": lambda: floor_build_copy(size, np.uint8)}
            else:
                ops = {"send": lambda: peer.call(payload_len, box[0]),
                       "return": lambda: peer.call(payload_make, size)}
            for way, op in ops.items():
                samples = []
                end = time.monotonic() + cfg.payload_budget_s
                for i in range(most):
                    box[0] = np.ones(size, dtype=np.uint8) if way == "send" else None
                    dt, r = _timed(op)
                    got = r if way == "send" else r.nbytes
                    if got != size:
                        _check(got, size, f"payload {way} {size}")
                    del r
                    samples.append(dt)
                    if i + 1 >= least and time.monotonic() > end:
                        break
                if size >= 16 * MiB:
                    gc.collect()
                med = statistics.median(samples)
                row[way] = {"n": len(samples), "p50_us": 1e6 * med,
                            "min_us": 1e6 * min(samples), "gb_s": size / med / 1e9}
            box[0] = None
            gc.collect()
            rows.append(row)
    finally:
        peer.stop()
    return {"rows": rows, "multicore_arrays": "plain numpy (sent: copied; returned from 1 MiB: moved)"}


# ---------------------------------------------------------------------------
# (m) throughput against the number of workers (issue 12 section 4)
# ---------------------------------------------------------------------------

def _tree_cpu(pids):
    """(CPU ns from schedstat, voluntary + involuntary context switches) summed
    over pids."""
    ns = sw = 0
    for p in pids:
        ns += procs.cpu_ns(p) or 0
        sw += procs.ctxt_switches(p) or 0
    return ns, sw


def _all_live(peer, w, cfg):
    """Make every worker of a fresh pool live: as many tasks as workers,
    each holding its worker 50 ms, at once; then a few trivial ones. The
    pids that ran the holding tasks."""
    live = set(peer.submit_all(nap_pid, [0.02 if cfg.quick else 0.05] * w))
    peer.submit_all(inc, list(range(4 * w)))
    return live


def _time_one_by_one(peer, items, want):
    """Seconds for inc over items, one task each, results checked."""
    dt, got = _timed(lambda: peer.submit_all(inc, items))
    _check(got, want, "one by one")
    return dt


def _time_map(peer, items, want, chunk):
    """Seconds for one map of inc over items, results checked."""
    dt, got = _timed(lambda: peer.map(inc, items, chunk))
    _check(list(got), want, "map")
    return dt


def _growth_pairs(peer, top, cfg, items_b, want_b, items_c, want_c, chunk):
    """The figures the target compares, 2 workers against top, measured in
    alternation: growth_pairs rounds, each a fresh pool of 2 then one of top
    (every worker live), best of 3 of each way; the ratio of each round.
    Measured minutes apart in the sweep, the two depend on how fast this
    VM's CPUs run at the time (the 2-worker map moved 20 % between runs)."""
    rounds = []
    for _ in range(1 if cfg.quick else cfg.growth_pairs):
        got_round = {}
        for w in (2, top):
            peer.start(w)
            try:
                _all_live(peer, w, cfg)
                one, maps = [], []
                for _ in range(3):
                    one.append(_time_one_by_one(peer, items_b, want_b))
                    maps.append(_time_map(peer, items_c, want_c, chunk))
            finally:
                peer.stop()
            got_round[w] = {"one_by_one_per_s": len(items_b) / min(one),
                            "map_per_s": len(items_c) / min(maps)}
        rounds.append({"two": got_round[2], "top": got_round[top],
                       "one_by_one_ratio": got_round[top]["one_by_one_per_s"]
                       / got_round[2]["one_by_one_per_s"],
                       "map_ratio": got_round[top]["map_per_s"] / got_round[2]["map_per_s"]})
    return {"workers": top, "rounds": rounds,
            "one_by_one_ratio": statistics.median(r["one_by_one_ratio"] for r in rounds),
            "map_ratio": statistics.median(r["map_ratio"] for r in rounds)}


def worker_growth(peer, workers, cfg):
    """For each worker count: growth_tasks trivial tasks submitted one by
    one, and one map over growth_items items (multicore.map's adaptive
    chunking; a peer's map with its default chunk size), best of reps.
    Every worker is live first (_all_live), and the pids that held a task
    are counted. The CPU time (schedstat) and context switches of the
    caller and of the workers over the timed one-by-one runs are kept for
    the analysis. Then 2 workers and the most, in alternation
    (_growth_pairs): the figures the target compares."""
    me = os.getpid()
    rows = []
    items_b = list(range(cfg.growth_tasks))
    want_b = [x + 1 for x in items_b]
    items_c = list(range(cfg.growth_items))
    want_c = [x + 1 for x in items_c]
    chunk = "auto" if peer.name == "multicore" else None
    reps = cfg.reps if cfg.quick else max(cfg.reps, 5)
    for w in cfg.worker_counts:
        peer.start(w)
        try:
            live = _all_live(peer, w, cfg)
            pids = sorted((set(procs.descendants(me)) | set(peer.worker_pids())) - {me})
            c0, s0 = _tree_cpu(pids)
            me0, mes0 = time.process_time_ns(), procs.ctxt_switches(me) or 0
            one = []
            for _ in range(reps):
                one.append(_time_one_by_one(peer, items_b, want_b))
            c1, s1 = _tree_cpu(pids)
            me1, mes1 = time.process_time_ns(), procs.ctxt_switches(me) or 0
            maps = []
            for _ in range(reps):
                maps.append(_time_map(peer, items_c, want_c, chunk))
        finally:
            peer.stop()
        n_b = cfg.growth_tasks * reps
        rows.append({
            "workers": w, "live_workers": len(live),
            "one_by_one_s": one, "one_by_one_per_s": cfg.growth_tasks / min(one),
            "map_s": maps, "map_per_s": cfg.growth_items / min(maps),
            "caller_cpu_us_per_task": (me1 - me0) / 1e3 / n_b,
            "workers_cpu_us_per_task": (c1 - c0) / 1e3 / n_b,
            "caller_switches_per_task": (mes1 - mes0) / n_b,
            "workers_switches_per_task": (s1 - s0) / n_b,
            "wall_us_per_task": 1e6 * sum(one) / n_b,
        })
    top = max(cfg.worker_counts)
    pairs = (_growth_pairs(peer, top, cfg, items_b, want_b, items_c, want_c, chunk)
             if 2 in cfg.worker_counts and top > 2 else None)
    return {"tasks": cfg.growth_tasks, "items": cfg.growth_items, "rows": rows,
            "pairs": pairs, "map_method": peer.map_label(chunk)}


SCENARIOS = {
    "a": ("round trip of one trivial task", roundtrip),
    "b": ("trivial tasks submitted one by one", one_by_one),
    "c": ("trivial tasks, best batching", batched),
    "d": ("CPU-bound scaling", scaling),
    "e": ("numpy arrays to/from a worker", arrays),
    "g": ("CPU used by an idle pool", idle_cpu),
    "l": ("round trip and GB/s against payload size", payload_sizes),
    "m": ("throughput against the number of workers", worker_growth),
}
# What the in-process reference can take part in.
REFERENCE_SCENARIOS = {"a", "b", "c", "e", "l"}
