"""One home for building the extension outside pip, for the profiling
scripts (perf_breakdown.py, rt_profile.py, rt_callgrind.py): the Release
wheel's flags (-O3 -DNDEBUG, hidden visibility) plus any extra ones (-g),
from a source tree (this one, a worktree, a `git archive` of a commit)
into DEST/multicore, with the package's Python files beside it, so that a
child run with PYTHONPATH=DEST and `python -S` imports exactly that build.

Build output lives under bench/.build/ (not tracked).
"""
import glob
import os
import shutil
import subprocess
import sysconfig

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BUILD = os.path.join(HERE, ".build")


def build_extension(tree, dest, extra_cflags=()):
    """Compile tree's engine and binding into dest/multicore; returns the
    compiler command line (paths relative to tree), for the report."""
    pkg = os.path.join(dest, "multicore")
    if os.path.isdir(dest):
        shutil.rmtree(dest)
    shutil.copytree(os.path.join(tree, "python", "multicore"), pkg,
                    ignore=shutil.ignore_patterns("_ext", "__pycache__"))
    inc = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    cmd = (["cc", "-O3", *extra_cflags, "-DNDEBUG", "-std=gnu11", "-fPIC", "-shared",
            "-fvisibility=hidden", "-I" + inc, "-Iinclude", "-Isrc", "-Ipython/multicore/_ext"]
           + sorted(glob.glob(os.path.join(tree, "src", "*.c")))
           + sorted(glob.glob(os.path.join(tree, "python", "multicore", "_ext", "*.c")))
           + ["-lpthread", "-o", os.path.join(pkg, "_multicore" + suffix)])
    subprocess.run(cmd, cwd=tree, check=True)
    return " ".join(c.replace(tree.rstrip("/") + "/", "") for c in cmd)
