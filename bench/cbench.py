"""Scenario (h), and the C parts of (j) and (k): build and run the C
benchmarks.

bench/c/roundtrip.c, memory.c and startup.c are compiled together with the
engine's sources (the same flags as the Release build CMake makes for the
wheel: -O3 -DNDEBUG, gnu11, hidden visibility) and bench/c/pingpong.c on
its own, with cc, into bench/.build/ (gitignored).
"""

import json
import os
import shlex
import statistics
import subprocess
import sys
import glob

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, ".build")
PAIR_ROUNDS = 7   # (h): steady rounds of floor, multicore, floor wanted
PAIR_TRIES = 14   # (h): at most this many rounds run to find them
# (h): a round is steady when its two spin floors differ by less than this.
# A move of the vCPUs changes the floor about 5x (0.1 to 0.5 us); a round
# where nothing moved still differs by a grain or two of this VM's 10 ns
# clock (0.07-0.11 us), which 1.25 counted as moves in a first run.
STEADY = 1.5
CFLAGS = ["-O3", "-DNDEBUG", "-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wextra"]


def _cc():
    return os.environ.get("CC", "cc")


def _with_engine(name):
    engine = sorted(glob.glob(os.path.join(ROOT, "src", "*.c")))
    return ([_cc()] + CFLAGS + ["-I" + os.path.join(ROOT, "include"), "-I" + os.path.join(ROOT, "src")]
            + engine + [os.path.join(HERE, "c", name + ".c"), "-lpthread",
                        "-o", os.path.join(BUILD, name)])


def commands():
    pp = ([_cc()] + CFLAGS + [os.path.join(HERE, "c", "pingpong.c"),
                              "-o", os.path.join(BUILD, "pingpong")])
    return {"roundtrip": _with_engine("roundtrip"), "pingpong": pp,
            "memory": _with_engine("memory"), "startup": _with_engine("startup")}


def build(log=sys.stderr, only=None):
    os.makedirs(BUILD, exist_ok=True)
    cmds = {k: v for k, v in commands().items() if only is None or k in only}
    procs = {name: subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, cmd in cmds.items()}                     # both at once
    for name, p in procs.items():
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"building {name} failed:\n$ {shlex.join(cmds[name])}\n{err}")
        if err.strip():
            print(err, file=log)
    return {k: shlex.join(v).replace(ROOT + "/", "") for k, v in cmds.items()}


def _run(exe, args, timeout):
    r = subprocess.run([os.path.join(BUILD, exe)] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{exe} failed ({r.returncode}): {r.stderr.strip()}")
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def run(quick, workers):
    """Returns {"commands", "rows": [...], "floors"...} for the JSON."""
    cmds = build(only=("roundtrip", "pingpong"))
    hot, sleepy, sleep_us = (2000, 20, 5000) if quick else (200000, 400, 5000)
    rows = _run("pingpong", [hot, sleepy, sleep_us], 600)
    rows += _run("roundtrip", [hot, sleepy, sleep_us, 1], 600)
    if workers != 1:
        rows += _run("roundtrip", [hot, sleepy, sleep_us, workers], 600)
    return {"commands": cmds, "hot_iterations": hot, "sleep_iterations": sleepy,
            "sleep_us": sleep_us, "rows": rows, "pairs": _pairs(quick, sleep_us)}


def _p50(rows, name, mode):
    return next(r["p50_ns"] for r in rows if r["name"] == name and r["mode"] == mode)


def _pairs(quick, sleep_us):
    """The targets' figures: rounds of the floors, multicore (1 worker,
    reused group) and the floors again, each round's ratios taken against
    the mean of the floors around it. Where the host puts the two vCPUs
    moves the floor itself, within a run and between one program and the
    next (the spin floor's p50 was 0.07, 0.10 and 0.50 us in the same run),
    so a ratio is only worth something when the host did not move them
    during the round: a round is steady when its two spin floors differ by
    less than STEADY. The figure is the median of the steady rounds (of all
    rounds if none was), up to PAIR_ROUNDS of them in at most PAIR_TRIES;
    the table shows every round."""
    hot, sleepy = (2000, 10) if quick else (50000, 100)
    rounds = []
    for _ in range(1 if quick else PAIR_TRIES):
        before = _run("pingpong", [hot, sleepy, sleep_us], 600)
        mc = _run("roundtrip", [hot, sleepy, sleep_us, 1], 600)
        after = _run("pingpong", [hot, sleepy, sleep_us], 600)
        spins = [_p50(f, "spin_floor", "hot") for f in (before, after)]
        futexes = [_p50(f, "futex_floor", "after_sleep") for f in (before, after)]
        x = {"spin_before_ns": spins[0], "spin_after_ns": spins[1],
             "spin_ns": sum(spins) / 2, "futex_sleep_ns": sum(futexes) / 2,
             "hot_ns": _p50(mc, "multicore_reused_group", "hot"),
             "sleep_ns": _p50(mc, "multicore_reused_group", "after_sleep"),
             "steady": max(spins) < STEADY * min(spins)}
        x["hot_ratio"] = x["hot_ns"] / x["spin_ns"]
        x["sleep_ratio"] = x["sleep_ns"] / x["futex_sleep_ns"]
        rounds.append(x)
        if sum(r["steady"] for r in rounds) >= PAIR_ROUNDS:
            break
    return {"hot_iterations": hot, "sleep_iterations": sleepy, "rounds": rounds,
            "steady_factor": STEADY, **pair_figures(rounds)}


def pair_figures(rounds):
    """(h)'s figures from its rounds: the medians over the steady ones, or
    over all of them when none was steady."""
    kept = [r for r in rounds if r["steady"]] or rounds
    return {"steady_rounds": sum(r["steady"] for r in rounds),
            "hot_ratio": statistics.median(r["hot_ratio"] for r in kept),
            "sleep_ratio": statistics.median(r["sleep_ratio"] for r in kept)}


def run_memory(quick):
    """(j): arena bytes per queued and per finished task, for a sweep of
    (argument, result) sizes (bench/c/memory.c)."""
    cmds = build(only=("memory",))
    n = 2000 if quick else 100000
    pairs = ["8:8", "102:32", "200:100"] if quick else []
    return {"commands": cmds, "tasks": n, "rows": _run("memory", [n] + pairs, 600)}


def run_startup(quick, heap_mib=48):
    """(k): start-to-ready for 2, 8, 64 workers against fork floors, in a
    process with heap_mib MiB of private memory (bench/c/startup.c)."""
    cmds = build(only=("startup",))
    reps, counts = (2, [2, 8]) if quick else (15, [2, 8, 64])
    rows = _run("startup", ["-m", heap_mib, reps] + counts, 900)
    return {"commands": cmds, "repetitions": reps, "heap_mib": heap_mib, "rows": rows}
