#!/usr/bin/env python3
"""The multicore benchmark suite (issue 4): every scenario, for multicore
and, in the same run, its peers.

    python bench/run.py            # full run (~10-15 minutes on 2 cores)
    python bench/run.py --quick    # CI: every scenario runs once, tiny sizes (< 60 s)

Options: --json PATH (default bench/results/latest.json), --png PATH
(default bench/results/latest.png; matplotlib), --md PATH (the tables in
Markdown, default bench/results/latest.md), --scenarios a,b,..,h,
--libs multicore,mp_pool,futures,joblib,mpire,ray, --workers N.

Scenarios: (a) round trip of one trivial task, (b) 20,000 tasks one by one,
(c) the same with each library's best batching, (d) CPU-bound scaling,
(e) numpy arrays to and from a worker, (f) start-up and shutdown, (g) CPU
of an idle pool, (h) the C API against futex and spin floors, (i) a
scikit-learn grid search on joblib's multicore backend against loky
(bench/joblib_grid.py), (j) shared memory per task (1,000,000 tasks in one
Task, bench/memory_probe.py; and the C sweep bench/c/memory.c), (k)
start-up against the number of workers, against fork floors
(bench/startup_workers_probe.py, bench/c/startup.c), (l) round trip and
GB/s against payload size, 1 B to 1 GiB, (m) throughput against the number
of workers, 1 to 64, (n) one Task of 1,000,000 parts and one map over
10,000,000 items, time and peak memory, against mp.Pool.map
(bench/bigtask_probe.py). (o) multicore on a Dask cluster against raw Dask
and joblib's dask backend (bench/cluster.py; docs/cluster.md). See
docs/benchmarks.md.

Each library runs in its own child process (bench/measure.py) per scenario
(per library with --quick), its pool started once per scenario and shut
down after it; start-ups run in fresh interpreters (bench/startup_probe.py);
the C part is built with cc into bench/.build/ (bench/cbench.py). A library
that cannot be imported is reported as missing, never dropped. This process
is a child subreaper: whatever a library leaves behind is re-parented here,
reported under "strays" in the JSON and killed.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import procs    # noqa: E402
import report   # noqa: E402

ALL_LIBS = ["multicore", "mp_pool", "futures", "joblib", "mpire", "ray"]
PY_SCENARIOS = ["a", "b", "c", "d", "e", "g", "l", "m"]
REFERENCE_SCENARIOS = {"a", "b", "c", "e", "l"}   # where the in-process reference row makes sense
# Scenarios that run only some libraries: (l) against the best peers of (e)
# for large arrays (joblib sending, Ray returning) and the in-process copy
# floors; (m) and (n) against mp.Pool (64 workers of every peer would take
# minutes).
SCENARIO_LIBS = {"l": {"multicore", "joblib", "ray", "inprocess"},
                 "m": {"multicore", "mp_pool"}, "n": {"multicore", "mp_pool"}}
TITLES = {
    "a": "round trip of one trivial task",
    "b": "trivial tasks submitted one by one",
    "c": "trivial tasks, best batching",
    "d": "CPU-bound scaling",
    "e": "numpy arrays to/from a worker",
    "f": "start-up to first result, shutdown",
    "g": "CPU used by an idle pool",
    "h": "C API round trip vs floors",
    "i": "scikit-learn grid search, joblib backend multicore vs loky",
    "j": "shared memory per task",
    "k": "start-up against the number of workers",
    "l": "round trip and GB/s against payload size",
    "m": "throughput against the number of workers",
    "n": "one Task of 1,000,000 parts, one map over 10,000,000 items",
    "o": "multicore on a Dask cluster vs raw Dask and joblib's dask backend",
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem and round(mem / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "platform": platform.platform(), "clk_tck": procs.CLK_TCK}


class Interference:
    """CPU that processes other than ours used while a child ran: all CPUs'
    busy time from /proc/stat minus our children's rusage, as a percentage
    of the machine (100 = every core busy with somebody else's work)."""

    def __enter__(self):
        self.b0, self.t0 = procs.cpu_times()
        self.c0 = procs.children_cpu_s()
        self.w0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        b1, t1 = procs.cpu_times()
        ours = (procs.children_cpu_s() - self.c0) * procs.CLK_TCK
        wall = time.monotonic() - self.w0
        self.percent = max(0.0, 100.0 * (b1 - self.b0 - ours) / max(1, t1 - self.t0))
        self.wall = wall
        return False


def run_child(cmd, logpath, timeout):
    """Run a child with its output in logpath; returns (ok, why, seconds, strays)."""
    t0 = time.perf_counter()
    with open(logpath, "w") as lf:
        try:
            r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, timeout=timeout,
                               cwd=ROOT)
            ok = r.returncode == 0
            why = None if ok else f"exit status {r.returncode}"
        except subprocess.TimeoutExpired:
            ok, why = False, f"timed out after {timeout} s"
    strays = procs.reap_strays()
    return ok, why, time.perf_counter() - t0, strays


def tail(path, n=15):
    try:
        with open(path) as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (CI)")
    ap.add_argument("--json", default=os.path.join(HERE, "results", "latest.json"))
    ap.add_argument("--png", default=os.path.join(HERE, "results", "latest.png"))
    ap.add_argument("--growth-png", default=None,
                    help="the plot of (l), (m), (n) (default: --png with -growth before .png)")
    ap.add_argument("--no-png", action="store_true")
    ap.add_argument("--md", default=os.path.join(HERE, "results", "latest.md"))
    ap.add_argument("--scenarios", default="a,b,c,d,e,f,g,h,i,j,k,l,m,n,o")
    ap.add_argument("--libs", default=",".join(ALL_LIBS))
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="before each measurement wait up to this many seconds for the "
                         "machine to be idle (default 30, 0 with --quick)")
    args = ap.parse_args()
    if args.quiet_wait is None:
        args.quiet_wait = 0.0 if args.quick else 30.0

    scen = [s for s in args.scenarios.split(",") if s]
    libs = [l for l in args.libs.split(",") if l]
    bad = [s for s in scen if s not in TITLES] + [l for l in libs if l not in ALL_LIBS]
    if bad:
        ap.error(f"unknown scenario or library: {', '.join(bad)}")
    if "multicore" not in libs:
        libs.insert(0, "multicore")
    t_start = time.perf_counter()
    for p in (args.json, args.md, args.png):
        os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    logdir = os.path.join(os.path.dirname(os.path.abspath(args.json)), "logs")
    os.makedirs(logdir, exist_ok=True)

    subreaper = procs.make_subreaper()

    data = {
        "meta": dict(machine(), command=" ".join(["python"] + [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]),
                     quick=args.quick, workers=args.workers,
                     date=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                     loadavg_start=procs.loadavg(), subreaper=subreaper),
        "peers": {}, "scenarios": {}, "strays": [], "failures": [],
    }

    def note_child(what, ok, why, secs, strays, logpath):
        if strays:
            log(f"  !! {what}: {len(strays)} stray process(es) left behind, killed: "
                + ", ".join(f"{p} {c}" for p, c, _ in strays))
            data["strays"] += [{"after": what, "pid": p, "comm": c, "cmdline": cl}
                               for p, c, cl in strays]
        if not ok:
            log(f"  !! {what} failed ({why}); log {logpath}:\n{tail(logpath)}")
            data["failures"].append({"what": what, "why": why, "log": logpath})

    # -- calibration for (d): ~50 ms per task (a few ms in --quick) --------
    spin_n = 0
    if "d" in scen:
        import scenarios as S
        spin_n = S.calibrate_spin(0.005 if args.quick else 0.05)
        data["meta"]["spin_n"] = spin_n

    # -- Python scenarios, each library in its own process ----------------
    py = [s for s in PY_SCENARIOS if s in scen]
    for s in py:
        data["scenarios"][s] = {"title": TITLES[s], "libs": [], "results": {}}
    jobs = []   # (lib, [scenarios])
    run_libs = libs + ["inprocess"]

    def takes_part(lib, s):
        if lib == "inprocess" and s not in REFERENCE_SCENARIOS:
            return False
        return lib in SCENARIO_LIBS.get(s, (lib,))
    if args.quick:
        for lib in run_libs:
            ss = [s for s in py if takes_part(lib, s)]
            if ss:
                jobs.append((lib, ss))
    else:
        for s in py:
            for lib in run_libs:
                if takes_part(lib, s):
                    jobs.append((lib, [s]))
    for lib, ss in jobs:
        out = os.path.join(logdir, f"{lib}_{''.join(ss)}.json")
        logpath = out[:-5] + ".log"
        if os.path.exists(out):
            os.unlink(out)
        cmd = [sys.executable, os.path.join(HERE, "measure.py"), "--lib", lib,
               "--scenarios", ",".join(ss), "--out", out, "--spin-n", str(spin_n),
               "--workers", str(args.workers)] + (["--quick"] if args.quick else [])
        busy = procs.wait_quiet(give_up=args.quiet_wait) if args.quiet_wait > 0 else None
        log(f"[{time.perf_counter() - t_start:6.1f}s] {lib}: scenario {','.join(ss)}"
            + (f" (machine {100 * busy:.0f}% busy before)" if busy is not None else ""))
        with Interference() as itf:
            ok, why, secs, strays = run_child(cmd, logpath, 240 if args.quick else 1800)
        if itf.percent >= 10:
            log(f"  note: other processes used {itf.percent:.0f}% of the machine meanwhile")
        note_child(f"{lib} {','.join(ss)}", ok, why, secs, strays, logpath)
        try:
            with open(out) as f:
                res = json.load(f)
        except (OSError, ValueError):
            res = {"available": True, "version": None, "error": None, "results": {}}
        if lib != "inprocess" and lib not in data["peers"]:
            data["peers"][lib] = {"available": res["available"], "version": res["version"],
                                  "error": res["error"]}
        for s in ss:
            data["scenarios"][s]["libs"].append(lib)
            r = res["results"].get(s)
            if r is None and res["available"]:
                r = {"error": why or "no result (see log)"}
            if r is not None:
                r["interference_percent"] = round(itf.percent, 1)
                data["scenarios"][s]["results"][lib] = r
                if "error" in r:
                    log(f"  !! {lib} ({s}): {r['error']}")

    # -- (f) start-up, fresh interpreters -----------------------------------
    # Round by round, every library once a round, so a slow spell of the
    # machine lands on all of them rather than on one library's samples.
    if "f" in scen:
        reps = 1 if args.quick else 9
        F = data["scenarios"]["f"] = {"title": TITLES["f"], "libs": [], "results": {},
                                      "repetitions": reps, "interleaved": True}
        samples = {lib: [] for lib in libs}
        live = list(libs)             # dropped at an error or when not installed
        F["libs"].extend(libs)
        for i in range(reps):
            log(f"[{time.perf_counter() - t_start:6.1f}s] scenario f round {i + 1}/{reps}: "
                + ", ".join(live))
            for lib in list(live):
                logpath = os.path.join(logdir, f"{lib}_f{i}.log")
                cmd = [sys.executable, os.path.join(HERE, "startup_probe.py"), "--lib", lib,
                       "--workers", str(args.workers)]
                t0 = time.perf_counter()
                if args.quiet_wait > 0:      # short: a sample per library per round
                    procs.wait_quiet(give_up=min(args.quiet_wait, 5.0))
                itf = Interference().__enter__()
                try:
                    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                                       timeout=120)
                    with open(logpath, "w") as lf:
                        lf.write(r.stdout + r.stderr)
                    ok, why = r.returncode == 0, f"exit status {r.returncode}"
                    line = [l for l in r.stdout.splitlines() if l.startswith("{")]
                    sample = json.loads(line[-1]) if ok and line else None
                except subprocess.TimeoutExpired as exc:
                    ok, why, sample = False, "timed out after 120 s", None
                    with open(logpath, "w") as lf:
                        for part in (exc.stdout, exc.stderr):
                            if part:
                                lf.write(part if isinstance(part, str) else part.decode(errors="replace"))
                itf.__exit__(None, None, None)
                strays = procs.reap_strays()
                note_child(f"{lib} f#{i}", ok, why, time.perf_counter() - t0, strays, logpath)
                if sample is not None:
                    sample["interference_percent"] = round(itf.percent, 1)
                if sample is None:
                    F["results"][lib] = {"error": why}
                    live.remove(lib)
                    continue
                if not sample["available"]:
                    data["peers"].setdefault(lib, {"available": False, "version": None,
                                                   "error": sample["error"]})
                    live.remove(lib)
                    continue
                data["peers"].setdefault(lib, {"available": True, "version": sample["version"],
                                               "error": None})
                samples[lib].append(sample)
        for lib in live:
            got = samples[lib]
            keys = ("import_s", "start_to_first_result_s", "shutdown_s")
            F["results"][lib] = dict(
                {k: statistics.median(s[k] for s in got) for k in keys},
                min_start_s=min(s["start_to_first_result_s"] for s in got),
                interference_percent=max(s["interference_percent"] for s in got),
                samples=got)

    # -- (h) C ------------------------------------------------------------
    if "h" in scen:
        import cbench
        log(f"[{time.perf_counter() - t_start:6.1f}s] C: building and running (h)")
        if args.quiet_wait > 0:
            procs.wait_quiet(give_up=args.quiet_wait)
        try:
            with Interference() as itf:
                h = cbench.run(args.quick, args.workers)
            data["scenarios"]["h"] = dict(title=TITLES["h"], interference_percent=round(itf.percent, 1), **h)
        except Exception as exc:
            log(f"  !! (h) failed: {exc}")
            data["scenarios"]["h"] = {"title": TITLES["h"], "error": str(exc)}
            data["failures"].append({"what": "h", "why": str(exc)})
        data["strays"] += [{"after": "h", "pid": p, "comm": c, "cmdline": cl}
                           for p, c, cl in procs.reap_strays()]

    def child_scenario(letter, who, script, argv, quick_timeout):
        """A scenario measured by a script of its own in a fresh interpreter
        that writes its JSON (its peers inside it); a failure is noted."""
        log(f"[{time.perf_counter() - t_start:6.1f}s] {who}: scenario {letter}")
        out = os.path.join(logdir, f"{who}_{letter}.json")
        logpath = out[:-5] + ".log"
        if os.path.exists(out):
            os.unlink(out)
        cmd = [sys.executable, os.path.join(HERE, script), "--json", out] + argv + \
            (["--quick"] if args.quick else [])
        if args.quiet_wait > 0:
            procs.wait_quiet(give_up=args.quiet_wait)
        with Interference() as itf:
            ok, why, secs, strays = run_child(cmd, logpath, quick_timeout if args.quick else 1800)
        note_child(f"{who} {letter}", ok, why, secs, strays, logpath)
        try:
            with open(out) as f:
                data["scenarios"][letter] = dict(json.load(f),
                                                 interference_percent=round(itf.percent, 1))
        except (OSError, ValueError):
            data["scenarios"][letter] = {"title": TITLES[letter],
                                         "error": why or "no result (see log)"}

    # -- (i) scikit-learn grid search, joblib backends (own process) ---------
    if "i" in scen:
        child_scenario("i", "joblib", "joblib_grid.py", ["--workers", str(args.workers)], 240)

    # -- (j) memory per task, (k) start-up vs workers: multicore only --------
    def own_probe(scen, script, argv, timeout, owner="multicore"):
        """Run a probe in a fresh interpreter; its JSON, or None (failure noted
        as owner's: a failure of a peer's probe does not fail the run)."""
        out = os.path.join(logdir, f"{owner}_{scen}.log")
        cmd = [sys.executable, os.path.join(HERE, script)] + argv
        if args.quiet_wait > 0:
            procs.wait_quiet(give_up=args.quiet_wait)
        with Interference() as itf:
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
                ok, why = r.returncode == 0, f"exit status {r.returncode}"
                text = r.stdout + r.stderr
            except subprocess.TimeoutExpired:
                ok, why, text = False, f"timed out after {timeout} s", ""
        with open(out, "w") as lf:
            lf.write(text)
        note_child(f"{owner} {scen}", ok, why, 0, procs.reap_strays(), out)
        lines = [l for l in (text.splitlines() if ok else []) if l.startswith("{")]
        return (json.loads(lines[-1]) if lines else None), round(itf.percent, 1)

    import cbench
    if "j" in scen:
        log(f"[{time.perf_counter() - t_start:6.1f}s] multicore: scenario j")
        J = data["scenarios"]["j"] = {"title": TITLES["j"]}
        py, itf = own_probe("j", "memory_probe.py",
                            ["--tasks", str(20000 if args.quick else 1000000),
                             "--workers", str(args.workers)], 240 if args.quick else 1200)
        J["python"] = py if py is not None else {"error": "see log"}
        J["interference_percent"] = itf
        try:
            J["c"] = cbench.run_memory(args.quick)
        except Exception as exc:
            log(f"  !! (j) C part failed: {exc}")
            J["c"] = {"error": str(exc)}
            data["failures"].append({"what": "multicore j", "why": str(exc)})
    if "k" in scen:
        log(f"[{time.perf_counter() - t_start:6.1f}s] multicore: scenario k")
        K = data["scenarios"]["k"] = {"title": TITLES["k"]}
        py, itf = own_probe("k", "startup_workers_probe.py",
                            ["--reps", "1" if args.quick else "9",
                             "--workers", "2,8" if args.quick else "2,8,64"],
                            240 if args.quick else 1200)
        K["python"] = py if py is not None else {"error": "see log"}
        K["interference_percent"] = itf
        try:
            with Interference() as itf_c:
                K["c"] = cbench.run_startup(args.quick)
            K["c"]["interference_percent"] = round(itf_c.percent, 1)
        except Exception as exc:
            log(f"  !! (k) C part failed: {exc}")
            K["c"] = {"error": str(exc)}
            data["failures"].append({"what": "multicore k", "why": str(exc)})
    # -- (o) multicore on a Dask cluster (own process and cluster) ---------
    if "o" in scen:
        child_scenario("o", "cluster", "cluster.py", [], 300)

    if "n" in scen:
        N = data["scenarios"]["n"] = {"title": TITLES["n"], "libs": [], "results": {}}
        parts, items = (10000, 100000) if args.quick else (1000000, 10000000)
        for lib in [l for l in libs if l in SCENARIO_LIBS["n"]]:
            log(f"[{time.perf_counter() - t_start:6.1f}s] {lib}: scenario n")
            N["libs"].append(lib)
            r, itf = own_probe("n", "bigtask_probe.py",
                               ["--lib", lib, "--parts", str(parts), "--items", str(items),
                                "--workers", str(args.workers)], 240 if args.quick else 900,
                               owner=lib)
            if r is not None:
                r["interference_percent"] = itf
            N["results"][lib] = r if r is not None else {"error": "see log"}

    # -- output -------------------------------------------------------------
    for lib in libs:
        data["peers"].setdefault(lib, {"available": None, "version": None, "error": "not run"})
    data["meta"]["loadavg_end"] = procs.loadavg()
    data["meta"]["elapsed_s"] = time.perf_counter() - t_start
    tbls = report.tables(data)
    data["targets"] = report.targets(data, os.cpu_count())

    text = report.render_text(tbls)
    print(text)
    print("Targets of issues 4 and 12" + (" (QUICK RUN: figures are not meaningful)" if args.quick else ""))
    print(report.render_targets(data["targets"]))
    i = data["scenarios"].get("i")
    if i is not None:
        if "error" in i:
            print(f"\n(i) {TITLES['i']}: failed: {i['error']}")
        else:
            r = i["results"]
            print(f"\n(i) {TITLES['i']}: {i['fits']} fits on {i['workers']} workers: "
                  f"loky {r['loky']['best_s']:.3f} s, multicore {r['multicore']['best_s']:.3f} s, "
                  f"loky / multicore = {i['ratio_loky_over_multicore']:.2f}x")
    o = data["scenarios"].get("o")
    if o is not None:
        if "error" in o:
            print(f"\n(o) {TITLES['o']}: failed: {o['error']}")
        else:
            import cluster as cluster_bench
            print("\n" + cluster_bench.render(o))
    missing = [l for l, p in data["peers"].items() if p.get("available") is False]
    if missing:
        print("\nMissing peers: " + "; ".join(f"{l}: {data['peers'][l]['error']}" for l in missing))
    print(f"\nLoad average (1, 5, 15 min): {data['meta']['loadavg_start']} at the start, "
          f"{data['meta']['loadavg_end']} at the end")
    print(f"\nStray processes after the run: {len(data['strays'])}; "
          f"failures: {len(data['failures'])}; load average start {data['meta']['loadavg_start']}"
          f", end {data['meta']['loadavg_end']}; {data['meta']['elapsed_s']:.0f} s")

    if not args.no_png:
        why = report.draw_png(data, args.png)
        data["meta"]["png"] = None if why else args.png
        print(why or f"PNG: {args.png}")
        gpng = args.growth_png or (os.path.splitext(args.png)[0] + "-growth.png")
        why = report.draw_growth_png(data, gpng)
        data["meta"]["growth_png"] = None if why else gpng
        print(why or f"growth PNG: {gpng}")
    with open(args.json, "w") as f:
        json.dump(data, f, indent=1)
    with open(args.md, "w") as f:
        f.write(report.render_markdown(tbls) + "\n" + report.render_targets(data["targets"], True) + "\n")
    print(f"JSON: {args.json}\nMarkdown tables: {args.md}")
    # The suite proves that multicore's side runs: a failure of multicore,
    # of the in-process floors or of the C scenario fails it; a peer that
    # fails (its install, its session directory, its daemon) is a row
    # marked "error: ..." in the tables and listed here, not a failure.
    ours = [f for f in data["failures"] if f["what"].split()[0] in OWN]
    theirs = [f for f in data["failures"] if f not in ours]
    if theirs:
        print("Peers that failed (reported in the tables; not a failure of this suite): "
              + "; ".join(f"{f['what']}: {f['why']}" for f in theirs))
    if ours:
        print("FAILED: " + "; ".join(f"{f['what']}: {f['why']}" for f in ours))
    return 1 if ours else 0


# What a failure of fails the run: ours, the floors, the C scenario (h).
OWN = ("multicore", "inprocess", "h")

if __name__ == "__main__":
    sys.exit(main())
