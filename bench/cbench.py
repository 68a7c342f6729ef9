"""Scenario (h): build and run the C benchmarks.

bench/c/roundtrip.c is compiled together with the engine's sources (the
same flags as the Release build CMake makes for the wheel: -O3 -DNDEBUG,
gnu11, hidden visibility) and bench/c/pingpong.c on its own, with cc,
into bench/.build/ (gitignored).
"""

import json
import os
import shlex
import subprocess
import sys
import glob

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, ".build")
CFLAGS = ["-O3", "-DNDEBUG", "-std=gnu11", "-fvisibility=hidden", "-Wall", "-Wextra"]


def _cc():
    return os.environ.get("CC", "cc")


def commands():
    engine = sorted(glob.glob(os.path.join(ROOT, "src", "*.c")))
    rt = ([_cc()] + CFLAGS + ["-I" + os.path.join(ROOT, "include"), "-I" + os.path.join(ROOT, "src")]
          + engine + [os.path.join(HERE, "c", "roundtrip.c"), "-lpthread",
                      "-o", os.path.join(BUILD, "roundtrip")])
    pp = ([_cc()] + CFLAGS + [os.path.join(HERE, "c", "pingpong.c"),
                              "-o", os.path.join(BUILD, "pingpong")])
    return {"roundtrip": rt, "pingpong": pp}


def build(log=sys.stderr):
    os.makedirs(BUILD, exist_ok=True)
    cmds = commands()
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
    cmds = build()
    hot, sleepy, sleep_us = (2000, 20, 5000) if quick else (200000, 400, 5000)
    rows = _run("pingpong", [hot, sleepy, sleep_us], 600)
    rows += _run("roundtrip", [hot, sleepy, sleep_us, 1], 600)
    if workers != 1:
        rows += _run("roundtrip", [hot, sleepy, sleep_us, workers], 600)
    return {"commands": cmds, "hot_iterations": hot, "sleep_iterations": sleepy,
            "sleep_us": sleep_us, "rows": rows}
