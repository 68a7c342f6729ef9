#!/usr/bin/env python3
"""Where the time per task goes, on the multicore side of (a) and (b).

    python bench/perf_breakdown.py [--installed] [--tasks-a 10000] [--tasks-b 20000] [--freq 4000]

Builds the extension from the current tree with symbols (-O3 -g, the same
sources and flags as the Release wheel, not stripped) into bench/.build/prof
(--installed profiles the installed, stripped module instead), then runs
bench/perf_tasks.py under

    perf record -e cpu-clock -F 4000 -k mono -o <file> python bench/perf_tasks.py <mode> <n> <pids.json>

(a software clock: this VM has no hardware counters) and attributes every
sample by process (caller / worker / zygote) and by the symbol it landed in,
to the stages of a task: the caller's Python and binding code, pickling,
the engine (lock, journal, ring, arena), spinning, the kernel (futex
wake/wait and scheduling, page faults), the worker's unpickling, the call
itself, pickling the result, and reading it back. Prints a table of CPU
microseconds per task for each stage and process.
"""

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile

import buildext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PROF = os.path.join(buildext.BUILD, "prof")


def build_module():
    return buildext.build_extension(ROOT, PROF, ("-g",))


# (stage, symbol test) in order; the first match wins. dso is the shared
# object's basename, sym the symbol ("[unknown]" when perf has none).
def stage(role, dso, sym):
    s = sym
    if dso.startswith("_pickle"):
        if s.startswith(("save", "Pickler", "_Pickler", "dump", "_pickle_dumps",
                         "batch_", "write_", "memo_put", "fast_save")):
            return "pickle dumps" + (" (args)" if role == "caller" else " (result)")
        return "pickle loads" + (" (result)" if role == "caller" else " (args, fn)")
    if dso.startswith("_multicore"):
        if s in ("wait_task", "mc__wait_for_work", "mc__pool_wait_word") or s.startswith("mc__futex"):
            return "engine: spin / wait"
        if s.startswith(("mc_", "txn", "arena", "bin_", "journal", "ring", "block", "task_at",
                         "finish_and_take", "publish", "take", "mc")) and not s.startswith("mcx"):
            return "engine: submit/take/publish (lock, journal, ring, arena)"
        return "binding (Task.run/get, payload, result)"
    if dso == "[vdso]":
        return "engine: spin / wait"           # clock_gettime in the spin loops
    if "kernel" in dso:
        if any(k in s for k in ("futex", "schedule", "wake", "ttwu", "enqueue", "dequeue",
                                "switch", "idle", "hrtimer", "pick_next", "update_curr",
                                "finish_task", "select_task_rq", "psi_")):
            return "kernel: futex wake/wait, scheduling"
        if any(k in s for k in ("fault", "clear_page", "page", "folio", "lru", "memcg",
                                "madvise", "zap", "tlb", "pte", "pmd", "vma", "rmqueue")):
            return "kernel: page faults, madvise"
        if any(k in s for k in ("syscall", "entry_", "exit_to_user", "do_syscall")):
            return "kernel: syscall entry/exit"
        return "kernel: other"
    if dso.startswith("libpython") or dso.startswith("python"):
        if s.startswith(("gc_collect", "visit_", "subtract_refs", "move_", "update_refs",
                         "dict_traverse", "list_traverse", "tupletraverse", "func_traverse",
                         "type_traverse", "deduce_unreachable")):
            return "Python: cyclic GC"
        if role == "caller":
            return "Python: caller's interpreter (loop, calls, objects)"
        return "Python: worker's interpreter (call of fn, objects)"
    if dso.startswith("_multiarray"):
        return "numpy (the task's sum / fill)"
    if dso.startswith("libc") or dso.startswith("ld-linux"):
        if "memmove" in s or "memcpy" in s:
            return "libc: memcpy"
        return "libc: other (malloc, syscall stubs)"
    return "other (" + dso + ")"


def profile(mode, n, use_installed, freq):
    with tempfile.TemporaryDirectory() as tmp:
        data, pids = os.path.join(tmp, "perf.data"), os.path.join(tmp, "pids.json")
        env = dict(os.environ)
        if not use_installed:
            env["PYTHONPATH"] = PROF + os.pathsep + env.get("PYTHONPATH", "")
        cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", str(freq), "-k", "mono", "-o", data,
               sys.executable, os.path.join(HERE, "perf_tasks.py"), mode, str(n), pids]
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
        info = json.load(open(pids))
        out = subprocess.run(["perf", "script", "-i", data, "-F", "pid,time,period,ip,sym,dso",
                              "--ns"],
                             check=True, capture_output=True, text=True).stdout
    roles = {info["caller"]: "caller", info["zygote"]: "zygote"}
    roles.update({p: "worker" for p in info["workers"]})
    acc = collections.Counter()
    syms = collections.Counter()
    total_ns = collections.Counter()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue
        try:
            pid, ts, period = int(parts[0]), float(parts[1].rstrip(":")), int(parts[2])
        except ValueError:
            continue
        if not info["t0"] <= ts <= info["t1"]:
            continue                  # start-up, warm-up, shutdown: not per task
        dso = parts[-1].strip("()")
        dso = os.path.basename(dso) if dso.startswith("/") else dso
        sym = " ".join(parts[4:-1]) or "[unknown]"   # parts[3] is the ip
        sym = sym.split("+0x")[0]
        role = roles.get(pid, "other")
        if role == "other" and pid not in roles:
            role = "worker" if info["caller"] != pid else "caller"   # a replacement worker
        acc[(role, stage(role, dso, sym))] += period
        syms[(role, stage(role, dso, sym), sym)] += period
        total_ns[role] += period
    return info, acc, syms, total_ns, " ".join(c.replace(ROOT + "/", "") for c in cmd)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--installed", action="store_true")
    ap.add_argument("--tasks-a", type=int, default=10000)
    ap.add_argument("--freq", type=int, default=4000,
                    help="samples per second (higher perturbs the hand-offs more)")
    ap.add_argument("--tasks-b", type=int, default=20000)
    ap.add_argument("--arrays", type=int, default=5,
                    help="(e): 64 MiB arrays sent and returned this many times")
    ap.add_argument("--json")
    ap.add_argument("--top", type=int, default=0, help="also print the top N symbols of each stage")
    args = ap.parse_args()
    if shutil.which("perf") is None:
        sys.exit("perf is not installed")
    build = None if args.installed else build_module()
    if build:
        print("built:", build, "\n")
    report = {"build": build}
    for mode, n in (("roundtrip", args.tasks_a), ("onebyone", args.tasks_b),
                    ("arrays", args.arrays)):
        info, acc, syms, total, cmd = profile(mode, n, args.installed, args.freq)
        per = info["wall_s"] / n * 1e6
        what = {"roundtrip": "Task+run+get each", "onebyone": "run x n, then one get",
                "arrays": "per pair: array_sum(64 MiB array) then array_make(64 MiB)"}[mode]
        unit = "pair" if mode == "arrays" else "task"
        print(f"== {mode}: {n} {unit}s, wall {per:.1f} us per {unit} ({what})")
        print(f"   perf: {cmd}")
        print(f"   {'stage':58s} {'caller':>8s} {'worker':>8s}   (CPU us per {unit})")
        stages = sorted({s for (_, s) in acc}, key=lambda s: -(acc[("caller", s)] + acc[("worker", s)]))
        rows = []
        for s in stages:
            c, w = acc[("caller", s)] / 1e3 / n, acc[("worker", s)] / 1e3 / n
            if c + w < 0.05:
                continue
            top = sorted(((v, r, sym) for (r, st, sym), v in syms.items() if st == s),
                         reverse=True)[:max(args.top, 3)]
            rows.append({"stage": s, "caller_us": c, "worker_us": w,
                         "top": [{"role": r, "symbol": sym, "us": v / 1e3 / n} for v, r, sym in top]})
            print(f"   {s:58s} {c:8.2f} {w:8.2f}")
            for v, r, sym in top[:args.top]:
                print(f"        {r:6s} {sym[:60]:60s} {v / 1e3 / n:6.2f}")
        print(f"   {'total CPU':58s} {total['caller'] / 1e3 / n:8.2f} {total['worker'] / 1e3 / n:8.2f}"
              f"   (zygote {total['zygote'] / 1e3 / n:.2f})\n")
        report[mode] = {"tasks": n, "wall_us_per_task": per, "perf": cmd, "rows": rows,
                        "caller_cpu_us": total["caller"] / 1e3 / n,
                        "worker_cpu_us": total["worker"] / 1e3 / n}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
