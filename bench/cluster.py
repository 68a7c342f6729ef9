#!/usr/bin/env python3
"""Scenario (o): multicore on a Dask cluster against Dask itself (issue 14).

    python bench/cluster.py [--quick] [--json PATH] [--workers N]

Starts a real cluster on 127.0.0.1 (a `dask scheduler` process and N
`dask worker --nthreads 1` processes with nannies; bench/ on their
PYTHONPATH, the scheduler's too, as raw Dask needs the task's module
there), then measures, on that one cluster and interleaved repetition by
repetition:

- round trip: one trivial task, submit then result; p50 over many;
- per-task overhead: N trivial tasks submitted one by one, then all results
  (multicore: one Task, N run(), get(); Dask: N Client.submit(pure=False),
  Client.gather; joblib: Parallel(backend="dask", batch_size=1)); multicore
  twice: with its start claim over the workers' direct connection to the
  scheduler (the default) and through the workers' RPC (the old path). For
  each run the CPU time of every process (scheduler, nannies, workers, this
  one) is read from /proc, so the CPU each path costs is compared too;
- map throughput: N trivial items (multicore.map, adaptive chunks;
  Client.map, a task per item; joblib's dask backend, automatic batching);
- arrays: a numpy array of 8 / 64 MiB to a worker (its sum back), and one
  made on a worker back to the caller.

A duration is the best of the repetitions (other load only slows a run
down); every sample is in the JSON. The ratios printed are multicore's time
over raw Dask's (1.0 = the same; the target of issue 14 is multicore's
per-task overhead within 1.2 x Client.submit's): of the bests, and per
repetition (the paths of one repetition run back to back, so each
repetition's ratio is one comparison under one load), min / median / max.
The load average is read before and after each repetition. All processes
are ended and reaped at the end.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

from procs import cpu_ticks, descendants, CLK_TCK  # noqa: E402
from workloads import array_make, array_sum, inc  # noqa: E402

MiB = 1 << 20


class Cluster:
    def __init__(self, workers, workdir):
        self.workdir = workdir
        self.n = workers
        self.procs = []
        self.address = None

    def _start(self, name, args):
        env = dict(os.environ, PYTHONPATH=HERE)
        env.pop("MULTICORE_CLUSTER", None)
        log = open(os.path.join(self.workdir, name + ".log"), "wb")
        p = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                             cwd=self.workdir, start_new_session=True)
        log.close()
        self.procs.append(p)

    def start(self):
        sfile = os.path.join(self.workdir, "scheduler.json")
        self._start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", sfile])
        deadline = time.monotonic() + 60
        while True:
            try:
                with open(sfile) as f:
                    self.address = json.load(f)["address"]
                break
            except (OSError, ValueError, KeyError):
                if time.monotonic() > deadline:
                    raise RuntimeError("the scheduler did not start")
                time.sleep(0.05)
        for i in range(self.n):
            self._start(f"worker{i}", ["worker", self.address, "--nthreads", "1", "--nanny",
                                       "--no-dashboard", "--host", "127.0.0.1",
                                       "--local-directory", os.path.join(self.workdir, f"w{i}")])
        from distributed import Client
        with Client(self.address, set_as_default=False) as c:
            c.wait_for_workers(self.n, timeout=60)

    def pids(self):
        """The cluster's processes (scheduler, nannies, workers)."""
        out = []
        for p in self.procs:
            out.append(p.pid)
            out.extend(descendants(p.pid))
        return out

    def stop(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)


def _pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * (len(s) - 1) + 0.5))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--reps", type=int, default=6)
    args = ap.parse_args()
    n_tasks = 300 if args.quick else 2000
    n_items = 2000 if args.quick else 10000
    n_rt = 30 if args.quick else 200
    reps = 1 if args.quick else args.reps
    array_mib = [8] if args.quick else [8, 64]

    import distributed
    import joblib
    import multicore

    workdir = tempfile.mkdtemp(prefix="mcbench-cluster-")
    cluster = Cluster(args.workers, workdir)
    out = {"title": "multicore on a Dask cluster vs raw Dask and joblib's dask backend",
           "workers": args.workers, "quick": args.quick,
           "versions": {"distributed": distributed.__version__, "joblib": joblib.__version__,
                        "multicore": multicore.__version__},
           "loadavg_start": os.getloadavg()}
    try:
        t0 = time.perf_counter()
        cluster.start()
        out["cluster_start_s"] = time.perf_counter() - t0
        client = distributed.Client(cluster.address)     # the default client (joblib's)
        t0 = time.perf_counter()
        multicore.initialize(cluster=cluster.address)
        out["multicore_connect_s"] = time.perf_counter() - t0
        items = list(range(n_tasks))
        want = [x + 1 for x in items]

        def mc_task(xs):
            task = multicore.Task()
            for x in xs:
                task.run(inc, x)
            return task.get(timeout=600)

        from multicore.cluster import _dask as mc_dask

        def mc_task_rpc_claim(xs):
            client.run(mc_dask._set_claim_mode, "rpc")
            try:
                return mc_task(xs)
            finally:
                client.run(mc_dask._set_claim_mode, "direct")

        def raw_submit(xs):
            return client.gather([client.submit(inc, x, pure=False) for x in xs])

        def joblib_one(xs):
            with joblib.parallel_config(backend="dask"):
                return joblib.Parallel(batch_size=1)(joblib.delayed(inc)(x) for x in xs)

        def mc_map(xs):
            return multicore.map(inc, xs)

        def raw_map(xs):
            return client.gather(client.map(inc, xs, pure=False))

        def joblib_auto(xs):
            with joblib.parallel_config(backend="dask"):
                return joblib.Parallel()(joblib.delayed(inc)(x) for x in xs)

        # warm-up: every path once (imports, connections, the plugin)
        for fn in (mc_task, raw_submit, joblib_one, mc_map, raw_map, joblib_auto):
            assert fn(list(range(8))) == list(range(1, 9)), fn.__name__

        # -- round trip ------------------------------------------------------
        rt = {"multicore": [], "dask_submit": []}
        for i in range(n_rt):
            for name, fn in (("multicore", lambda: mc_task([i])),
                             ("dask_submit", lambda: [client.submit(inc, i, pure=False).result()])):
                s = time.perf_counter_ns()
                r = fn()
                rt[name].append((time.perf_counter_ns() - s) / 1000)
                assert r == [i + 1]
        out["roundtrip_us"] = {k: {"p50": _pct(v, 0.5), "p99": _pct(v, 0.99),
                                   "mean": statistics.fmean(v)} for k, v in rt.items()}

        # -- per-task overhead and map, interleaved --------------------------
        def timed(fn, xs, expect):
            s = time.perf_counter()
            got = fn(xs)
            dt = time.perf_counter() - s
            assert got == expect, fn.__name__
            return dt

        cluster_pids = cluster.pids()
        worker_pids = [p for p in cluster_pids
                       if p in set(client.run(os.getpid).values())]
        me = os.getpid()

        def ticks(pids):
            return sum(cpu_ticks(p) or 0 for p in pids)

        def timed_cpu(fn, xs, expect):
            """(seconds, {all, workers, scheduler, caller} CPU seconds)."""
            c0 = {"workers": ticks(worker_pids), "all": ticks(cluster_pids + [me]),
                  "caller": ticks([me])}
            dt = timed(fn, xs, expect)
            c1 = {"workers": ticks(worker_pids), "all": ticks(cluster_pids + [me]),
                  "caller": ticks([me])}
            return dt, {k: (c1[k] - c0[k]) / CLK_TCK for k in c0}

        tasks = {"multicore": [], "dask_submit": [], "joblib_dask": [],
                 "multicore_rpc_claim": []}
        task_cpu = {k: [] for k in tasks}
        rep_load = []
        maps = {"multicore_map": [], "dask_map": [], "joblib_dask_auto": []}
        map_items = list(range(n_items))
        map_want = [x + 1 for x in map_items]
        task_runs = [("multicore", mc_task), ("dask_submit", raw_submit),
                     ("joblib_dask", joblib_one), ("multicore_rpc_claim", mc_task_rpc_claim)]
        map_runs = [("multicore_map", mc_map), ("dask_map", raw_map),
                    ("joblib_dask_auto", joblib_auto)]
        for rep in range(reps):
            load0 = os.getloadavg()[0]
            # the order rotates from one repetition to the next
            k = rep % len(task_runs)
            for name, fn in task_runs[k:] + task_runs[:k]:
                dt, cpu = timed_cpu(fn, items, want)
                tasks[name].append(dt)
                task_cpu[name].append(cpu)
            for name, fn in map_runs[rep % 3:] + map_runs[:rep % 3]:
                maps[name].append(timed(fn, map_items, map_want))
            rep_load.append((load0, os.getloadavg()[0]))
        per_rep = {name: [a / b for a, b in zip(tasks[name], tasks["dask_submit"])]
                   for name in ("multicore", "multicore_rpc_claim", "joblib_dask")}
        out["tasks"] = {"n": n_tasks, "seconds": tasks, "cpu_seconds": task_cpu,
                        "rep_loadavg": rep_load,
                        "us_per_task": {k: min(v) / n_tasks * 1e6 for k, v in tasks.items()},
                        "per_rep_over_submit": per_rep,
                        # the run with the least CPU in all processes, per path
                        "cpu_us_per_task": {
                            k: {part: min(c[part] for c in v) / n_tasks * 1e6
                                for part in ("all", "workers", "caller")}
                            for k, v in task_cpu.items()}}
        out["map"] = {"n": n_items, "seconds": maps,
                      "items_per_s": {k: n_items / min(v) for k, v in maps.items()}}

        # -- arrays ------------------------------------------------------------
        arrays = {}
        for mib in array_mib:
            a = np.ones(mib * MiB // 8)
            want_sum = float(a.sum())
            send = {"multicore": [], "dask_submit": []}
            back = {"multicore": [], "dask_submit": []}
            for _ in range(max(1, reps // 2 + 1)):
                s = time.perf_counter()
                t = multicore.Task()
                t.run(array_sum, a)
                assert t.get(timeout=600) == [want_sum]
                send["multicore"].append(time.perf_counter() - s)
                s = time.perf_counter()
                assert client.submit(array_sum, a, pure=False).result() == want_sum
                send["dask_submit"].append(time.perf_counter() - s)
                s = time.perf_counter()
                t = multicore.Task()
                t.run(array_make, mib * MiB)
                (r,) = t.get(timeout=600)
                assert r.nbytes == mib * MiB
                back["multicore"].append(time.perf_counter() - s)
                del r
                s = time.perf_counter()
                r = client.submit(array_make, mib * MiB, pure=False).result()
                assert r.nbytes == mib * MiB
                back["dask_submit"].append(time.perf_counter() - s)
                del r
            arrays[f"{mib}MiB"] = {
                "send_s": {k: min(v) for k, v in send.items()},
                "return_s": {k: min(v) for k, v in back.items()},
                "samples": {"send": send, "return": back}}
        out["arrays"] = arrays
        multicore.shutdown()
        client.close()
    finally:
        multicore.shutdown()
        cluster.stop()
    out["loadavg_end"] = os.getloadavg()
    r = out["tasks"]["us_per_task"]
    m = out["map"]["items_per_s"]
    cpu = out["tasks"]["cpu_us_per_task"]
    out["ratios"] = {
        "task_overhead_multicore_over_submit": r["multicore"] / r["dask_submit"],
        "task_overhead_rpc_claim_over_submit": r["multicore_rpc_claim"] / r["dask_submit"],
        "task_cpu_multicore_over_submit": cpu["multicore"]["all"] / cpu["dask_submit"]["all"],
        "task_cpu_rpc_claim_over_submit":
            cpu["multicore_rpc_claim"]["all"] / cpu["dask_submit"]["all"],
        "task_overhead_joblib_over_submit": r["joblib_dask"] / r["dask_submit"],
        "roundtrip_multicore_over_submit": out["roundtrip_us"]["multicore"]["p50"] /
        out["roundtrip_us"]["dask_submit"]["p50"],
        "map_dask_time_over_multicore": m["multicore_map"] / m["dask_map"],
        "map_joblib_time_over_multicore": m["multicore_map"] / m["joblib_dask_auto"],
    }
    print(render(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


def render(out):
    rt = out["roundtrip_us"]
    t = out["tasks"]["us_per_task"]
    cpu = out["tasks"]["cpu_us_per_task"]
    per_rep = out["tasks"]["per_rep_over_submit"]
    m = out["map"]["items_per_s"]
    ratio = out["ratios"]
    lines = [
        f"(o) {out['title']} ({out['workers']} workers x 1 thread, "
        f"distributed {out['versions']['distributed']}; load average "
        f"{out['loadavg_start'][0]:.1f} -> {out['loadavg_end'][0]:.1f})",
        f"  cluster start {out['cluster_start_s']:.1f} s, multicore.initialize(cluster=) "
        f"{out['multicore_connect_s'] * 1000:.0f} ms",
        f"  round trip p50: multicore {rt['multicore']['p50']:.0f} us, "
        f"Client.submit {rt['dask_submit']['p50']:.0f} us "
        f"(ratio {ratio['roundtrip_multicore_over_submit']:.2f})",
        f"  per task ({out['tasks']['n']} one by one, best of "
        f"{len(out['tasks']['seconds']['multicore'])}): multicore {t['multicore']:.0f} us, "
        f"Client.submit {t['dask_submit']:.0f} us, joblib dask {t['joblib_dask']:.0f} us, "
        f"multicore with the RPC claim {t['multicore_rpc_claim']:.0f} us",
        f"    multicore / submit = {ratio['task_overhead_multicore_over_submit']:.2f} "
        f"(target <= 1.2; per repetition {_spread(per_rep['multicore'])}), "
        f"RPC claim / submit = {ratio['task_overhead_rpc_claim_over_submit']:.2f} "
        f"(per repetition {_spread(per_rep['multicore_rpc_claim'])}), "
        f"joblib / submit = {ratio['task_overhead_joblib_over_submit']:.2f}",
        f"    CPU per task, all processes (least of the repetitions): multicore "
        f"{cpu['multicore']['all']:.0f} us, Client.submit {cpu['dask_submit']['all']:.0f} us, "
        f"RPC claim {cpu['multicore_rpc_claim']['all']:.0f} us "
        f"(multicore / submit = {ratio['task_cpu_multicore_over_submit']:.2f}, "
        f"RPC claim / submit = {ratio['task_cpu_rpc_claim_over_submit']:.2f}); "
        f"in the workers: multicore {cpu['multicore']['workers']:.0f} us, "
        f"submit {cpu['dask_submit']['workers']:.0f} us, "
        f"RPC claim {cpu['multicore_rpc_claim']['workers']:.0f} us",
        f"    load average per repetition: " + ", ".join(
            f"{a:.1f}-{b:.1f}" for a, b in out["tasks"]["rep_loadavg"]),
        f"  map ({out['map']['n']} items): multicore.map {m['multicore_map']:,.0f}/s, "
        f"Client.map {m['dask_map']:,.0f}/s, joblib dask {m['joblib_dask_auto']:,.0f}/s "
        f"(multicore is {ratio['map_dask_time_over_multicore']:.1f}x Client.map, "
        f"{ratio['map_joblib_time_over_multicore']:.1f}x joblib)",
    ]
    for size, a in out["arrays"].items():
        lines.append(f"  array {size}: to a worker multicore {a['send_s']['multicore']:.3f} s, "
                     f"Client.submit {a['send_s']['dask_submit']:.3f} s; back multicore "
                     f"{a['return_s']['multicore']:.3f} s, Client.submit "
                     f"{a['return_s']['dask_submit']:.3f} s")
    return "\n".join(lines)


def _spread(ratios):
    if not ratios:
        return "-"
    return (f"{min(ratios):.2f} / {statistics.median(ratios):.2f} / "
            f"{max(ratios):.2f}")


if __name__ == "__main__":
    sys.exit(main())
