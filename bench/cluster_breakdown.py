#!/usr/bin/env python3
"""What multicore's per-task overhead on a Dask cluster is made of (see
docs/cluster.md, Figures).

    python bench/cluster_breakdown.py [N_TASKS] [REPS]

On one cluster (a `dask scheduler`, 2 `dask worker --nthreads 1` with
nannies, as bench/cluster.py starts it), interleaved repetition by
repetition, N trivial tasks submitted one by one then all results, by:
raw Client.submit; multicore; multicore with the start claim switched off
in the workers (their WorkerContext's claim set to None: not at-most-once,
for measuring only); and the same with results fetched only when get()
waits (fetch_window made huge). Prints per path the best time per task,
the median, the CPU per task (least of the repetitions) of the workers,
the scheduler, the caller and all of them, and each repetition's ratio to
raw. Every process is ended and reaped at the end.
"""
import os, sys, time, tempfile, statistics
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster import Cluster
from procs import cpu_ticks, CLK_TCK
from workloads import inc
import distributed, multicore
from multicore.cluster import _dask as mc_dask

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
wd = tempfile.mkdtemp(prefix="mcbench-breakdown-")
cl = Cluster(2, wd)
try:
    cl.start()
    client = distributed.Client(cl.address)
    multicore.initialize(cluster=cl.address)
    sess = multicore.cluster.active()
    wpids = set(client.run(os.getpid).values())
    sched = cl.procs[0].pid
    allp = cl.pids() + [os.getpid()]
    def t(pids): return sum(cpu_ticks(p) or 0 for p in pids)
    def mc(xs):
        task = multicore.Task()
        for x in xs: task.run(inc, x)
        return task.get(timeout=600)
    def raw(xs):
        return client.gather([client.submit(inc, x, pure=False) for x in xs])
    def mc_late(xs):
        sess.fetch_window = 1000.0
        try: return mc(xs)
        finally: sess.fetch_window = 0.05
    def mc_rpc(xs):
        client.run(mc_dask._set_claim_mode, "rpc")
        try: return mc(xs)
        finally: client.run(mc_dask._set_claim_mode, "direct")
    def set_claim(on, dask_worker=None):
        from multicore.cluster import _wire, _dask
        import functools
        for ctx in _wire._contexts.values():
            ctx.claim = functools.partial(_dask._claim, dask_worker) if on else None
        return True
    def mc_noclaim(xs):
        client.run(set_claim, False)
        try: return mc(xs)
        finally: client.run(set_claim, True)
    def mc_noclaim_late(xs):
        client.run(set_claim, False)
        try: return mc_late(xs)
        finally: client.run(set_claim, True)
    paths = [("raw", raw), ("mc", mc), ("mc_noclaim", mc_noclaim), ("mc_noclaim_fetch_at_get", mc_noclaim_late)]
    for _, f in paths: f(list(range(20)))
    res = {n: [] for n, _ in paths}
    xs = list(range(N))
    for r in range(REPS):
        k = r % len(paths)
        for n, f in paths[k:] + paths[:k]:
            c0 = (t(wpids), t([sched]), t([os.getpid()]), t(allp)); fc0 = sess.fetch_count
            s = time.perf_counter(); out = f(xs); dt = time.perf_counter() - s
            c1 = (t(wpids), t([sched]), t([os.getpid()]), t(allp))
            assert out == [x + 1 for x in xs]
            res[n].append((dt, *[(b - a) / CLK_TCK for a, b in zip(c0, c1)], sess.fetch_count - fc0))
        print("rep", r, "load", os.getloadavg()[0], flush=True)
    for n, v in res.items():
        best = min(v)
        print(f"{n:18s} best {best[0]/N*1e6:6.0f} us/task  med {statistics.median(x[0] for x in v)/N*1e6:6.0f}  cpu(us/task) workers {min(x[1] for x in v)/N*1e6:5.0f} sched {min(x[2] for x in v)/N*1e6:5.0f} caller {min(x[3] for x in v)/N*1e6:5.0f} all {min(x[4] for x in v)/N*1e6:5.0f} fetches {v[0][5]}")
    for n in res:
        print(n, "per-rep ratio to raw", [round(a[0] / b[0], 2) for a, b in zip(res[n], res["raw"])])
    multicore.shutdown(); client.close()
finally:
    multicore.shutdown(); cl.stop()
