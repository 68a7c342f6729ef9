#!/usr/bin/env bash
# tests/stages/pyversions.sh: the Python package on every other CPython of
# the machine, from pyproject.toml's requires-python up.
#
#   bash tests/stages/pyversions.sh            (from the repo root; PYTHON=...)
#
# Interpreters: each ${PYENV_ROOT:-~/.pyenv}/versions/*/bin/python and each
# python3.N on PATH that is CPython, at least requires-python, and not
# free-threaded; one per minor version (the newest pyenv patch release
# first), and none of the minor version of $PYTHON (default python3), which
# the main python stage runs in full.
#
# For each, in a fresh venv under $MULTICORE_BUILD_ROOT/pyversions (default
# build-ci/pyversions): the package built with -Werror (scikit-build-core,
# no build isolation: its build requirements are read from pyproject.toml
# and installed into the venv once), its test-core extra (pytest, numpy,
# dill: nothing an old Python cannot install), an import check, the core
# tests (the seed example, Task, map, Executor, Pool; MULTICORE_PYVERSIONS_TESTS
# overrides the list, paths relative to tests/python) and the demo.
#
# The build of the next interpreter runs while the tests of the current one
# run (the tests mostly wait on workers; the build uses the CPU).
#
# Output: one "pyversions X.Y.Z: <pytest summary>" line per interpreter,
# then "check: ..." lines; the pytest log is printed when it failed. Exits
# non-zero if any interpreter failed to build, import or pass.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

PYTHON=${PYTHON:-python3}
DIR=${MULTICORE_BUILD_ROOT:-$ROOT/build-ci}/pyversions
# test_api: Task; test_interfaces: map, imap, Executor; test_pool*, the Pool
# conformance copy: Pool; test_executor*: the Executor's own tests, if any;
# test_numlist: packed lists of numbers (C code on each version's API);
# test_lifecycle: processes, streams and at-fork callbacks across the
# pool's forks (PyOS_AfterFork_Child's work differs between versions).
TESTS=${MULTICORE_PYVERSIONS_TESTS:-"test_seed_example.py test_api.py test_interfaces.py
    test_pool.py test_pool_mp.py conformance/test_mp_pool.py test_executor*.py test_numlist.py
    test_lifecycle.py"}
PIP_OPTS=(--quiet --disable-pip-version-check --root-user-action=ignore)

# requires-python's floor, e.g. 3.9 (pyproject.toml is its one home).
min=$(sed -n 's/^requires-python *= *">= *\([0-9]*\.[0-9]*\)".*/\1/p' pyproject.toml)
if [[ -z $min ]]; then
    echo "pyversions: cannot read requires-python (\">=X.Y\") from pyproject.toml" >&2
    exit 1
fi

# "X.Y X.Y.Z" for a CPython interpreter at least $min, not free-threaded;
# nothing otherwise.
describe() {
    "$1" - "$min" 2>/dev/null <<'EOF' || true
import platform, sys, sysconfig
floor = tuple(int(p) for p in sys.argv[1].split("."))
if (platform.python_implementation() == "CPython" and sys.version_info[:2] >= floor
        and not sysconfig.get_config_var("Py_GIL_DISABLED")):
    print("%d.%d" % sys.version_info[:2], platform.python_version())
EOF
}

main_minor=$(describe "$(command -v "$PYTHON" || echo "$PYTHON")" | cut -d' ' -f1)
if [[ -z $main_minor ]]; then
    echo "pyversions: warning: \$PYTHON=$PYTHON is not a usable CPython >= $min; excluding none"
fi

candidates=()
pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
if [[ -d $pyenv_root/versions ]]; then
    while IFS= read -r v; do
        [[ -x $pyenv_root/versions/$v/bin/python ]] && candidates+=("$pyenv_root/versions/$v/bin/python")
    done < <(ls "$pyenv_root/versions" | sort -rV)
fi
for n in $(seq 30 -1 "${min#*.}"); do
    p=$(command -v "python3.$n" 2>/dev/null) && candidates+=("$p")
done

declare -A seen=()
chosen=()      # "X.Y X.Y.Z PATH"
for c in "${candidates[@]}"; do
    d=$(describe "$c")
    [[ -n $d ]] || continue
    minor=${d%% *}
    [[ -z ${seen[$minor]:-} ]] || continue
    seen[$minor]=1
    if [[ $minor == "$main_minor" ]]; then
        echo "pyversions: $d ($c): not repeated here, the main python stage runs $PYTHON ($main_minor) in full"
        continue
    fi
    chosen+=("$d $c")
done
if ((${#chosen[@]} == 0)); then
    echo "pyversions: no CPython >= $min besides $PYTHON found"
    exit 0
fi
echo "pyversions: ${#chosen[@]} interpreters: $(printf '%s\n' "${chosen[@]}" | cut -d' ' -f2 | tr '\n' ' ')"

test_paths=()
for t in $TESTS; do
    for f in tests/python/$t; do
        [[ -e $f ]] && test_paths+=("$f")
    done
done
if ((${#test_paths[@]} == 0)); then
    echo "pyversions: none of the tests exists: $TESTS" >&2
    exit 1
fi
echo "pyversions: tests: ${test_paths[*]#tests/python/}"

# The build requirements of pyproject.toml's [build-system], one a line.
build_requires() {
    "$1" - <<'EOF'
import ast, re
text = open("pyproject.toml").read()
block = re.search(r"^\[build-system\](.*?)^\[", text, re.M | re.S).group(1)
for req in ast.literal_eval(re.search(r"^requires *= *(\[.*?\])", block, re.M | re.S).group(1)):
    print(req)
EOF
}

# prepare FULLVERSION PY: venv, build, install (every step checked: set -e
# does not hold in a function whose status is tested).
prepare() {
    local full=$1 py=$2 venv=$DIR/venv-$1 build=$DIR/build-$1
    local vpy=$venv/bin/python reqs=()
    rm -rf "$venv" "$build"
    "$py" -m venv "$venv" || return 1
    mapfile -t reqs < <(build_requires "$vpy")
    ((${#reqs[@]})) || { echo "no [build-system] requires read from pyproject.toml"; return 1; }
    # cmake and ninja from PyPI only when the machine lacks them
    cmake --version >/dev/null 2>&1 || reqs+=(cmake)
    ninja --version >/dev/null 2>&1 || reqs+=(ninja)
    "$vpy" -m pip install "${PIP_OPTS[@]}" "${reqs[@]}" || return 1
    # --config-settings, not -C: pip 23.0 (3.9's and 3.10's) lacks the short form.
    "$vpy" -m pip install "${PIP_OPTS[@]}" --no-build-isolation \
        --config-settings=cmake.define.MULTICORE_WERROR=ON \
        --config-settings=build-dir="$build" \
        ".[test-core]" || return 1
    # The extension was compiled with -Werror, not only asked for.
    grep -Eq -- '-Werror( |$)' "$build/build.ninja" ||
        { echo "$build/build.ninja shows no -Werror"; return 1; }
}

mkdir -p "$DIR"
for entry in "${chosen[@]}"; do
    read -r _ full _ <<<"$entry"
    rm -f "$DIR/$full.ready" "$DIR/$full.failed"
done

# Builds in sequence in the background, each one ahead of its tests; its
# log is $DIR/X.Y.Z.build.log, then $DIR/X.Y.Z.ready (or .failed) marks it
# done. Its own process group (set -m), so that an early exit stops all of it.
set -m
(
    for entry in "${chosen[@]}"; do
        read -r _ full py <<<"$entry"
        if prepare "$full" "$py" >"$DIR/$full.build.log" 2>&1; then
            touch "$DIR/$full.ready"
        else
            touch "$DIR/$full.failed"
        fi
    done
) &
builder=$!
set +m
trap 'kill -- "-$builder" 2>/dev/null || true; wait "$builder" 2>/dev/null || true' EXIT

failed=()
start=$SECONDS
for entry in "${chosen[@]}"; do
    read -r _ full py <<<"$entry"
    while [[ ! -e $DIR/$full.ready && ! -e $DIR/$full.failed ]]; do
        if ! kill -0 "$builder" 2>/dev/null; then
            echo "the build process ended before $full" >>"$DIR/$full.build.log"
            touch "$DIR/$full.failed"
            break
        fi
        sleep 0.5
    done
    if [[ -e $DIR/$full.failed ]]; then
        echo "pyversions $full: build or install FAILED ($py):"
        tail -n 40 "$DIR/$full.build.log"
        echo "check: python $full builds with -Werror and installs: FAILED"
        failed+=("$full")
        continue
    fi
    echo "check: python $full builds with -Werror and installs: ok"
    vpy=$DIR/venv-$full/bin/python
    ok=1
    # Run from outside the repo so that the installed package is imported.
    if (cd "$DIR" && "$vpy" -c 'import multicore._multicore') >/dev/null 2>"$DIR/$full.import.log"; then
        echo "check: python $full imports multicore._multicore: ok"
    else
        echo "check: python $full imports multicore._multicore: FAILED"
        cat "$DIR/$full.import.log"
        ok=0
    fi
    rc=0
    "$vpy" -m pytest -q -p no:cacheprovider "${test_paths[@]}" \
        >"$DIR/$full.pytest.log" 2>&1 || rc=$?
    summary=$(tail -n 1 "$DIR/$full.pytest.log" | tr -d '=' | sed 's/^ *//; s/ *$//')
    echo "pyversions $full: ${summary:-no pytest summary (exit $rc)}"
    if ((rc != 0)); then
        sed -n '/= FAILURES =\|= ERRORS =/,$p' "$DIR/$full.pytest.log" | tail -n 120
        ok=0
    fi
    if (cd "$DIR" && "$vpy" -m multicore demo) >"$DIR/$full.demo.log" 2>&1; then
        echo "check: python $full: python -m multicore demo: ok"
    else
        echo "check: python $full: python -m multicore demo: FAILED"
        tail -n 20 "$DIR/$full.demo.log"
        ok=0
    fi
    ((ok)) || failed+=("$full")
done
wait "$builder" || true
trap - EXIT

echo "pyversions: ${#chosen[@]} interpreters in $((SECONDS - start)) s after discovery;" \
     "failed: ${failed[*]:-none}"
((${#failed[@]} == 0))
