#!/usr/bin/env bash
# tests/run_all.sh: install what is missing, then build and run every test.
#
#   bash tests/run_all.sh
#
# Stages (all run; the script fails at the end if any failed):
#   gcc      standalone C build with gcc -Werror, ctest
#   clang    the same with clang
#   asan     gcc with AddressSanitizer + UndefinedBehaviorSanitizer, ctest
#   tsan     clang with ThreadSanitizer, ctest (but test_idle)
#   valgrind gcc -O1 -g, no sanitizers; every C test under valgrind memcheck,
#            the zygote and workers it forks included (see stage_valgrind)
#   fuzz     the libFuzzer targets of tests/fuzz/ (clang, ASan + UBSan), each
#            for MULTICORE_FUZZ_SECONDS (default 10) on its corpus
#   install  cmake --install into a temp prefix; the README example built with
#            pkg-config against the shared and against the static library
#   python   pip install ".[test]" (-Werror), pytest, python -m multicore demo
#   pyversions  every other CPython of the machine from requires-python up
#            (pyenv's 3.9 to 3.13 here): built with -Werror in a venv each,
#            the core tests and the demo (tests/stages/pyversions.sh)
#   wheel    `python -m build --wheel` plus `auditwheel repair` make a
#            manylinux wheel; installed into a fresh venv with no C compiler
#            on PATH, it runs the demo and the seed example
#            (tests/stages/wheel.sh)
#   pyasan   the extension built with ASan + UBSan in a venv over the python
#            stage's packages; the Python tests run with the sanitizer
#            runtimes preloaded into the (uninstrumented) interpreter
#   bench    the benchmark suite's quick mode against the peers (proves it
#            runs; asserts no speed)
#
# Environment: MULTICORE_STAGES="gcc clang ..." runs a subset;
# MULTICORE_BUILD_ROOT (default build-ci/) holds build trees and logs;
# PYTHON (default python3) is the interpreter for the python stage;
# MULTICORE_CTEST_JOBS (default: the number of cores) C tests, and
# programs under valgrind, run at once;
# MULTICORE_FUZZ_SECONDS (default 10) is the fuzz stage's time per target;
# MULTICORE_TEST_PG_DSN, when set, is the PostgreSQL server the Python
# tests use (otherwise one is started for the run, tests/lib/postgres.sh).
# Debian, run as root: what the selected stages need and the machine lacks
# is installed first (see "Prerequisites").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ALL_STAGES="gcc clang asan tsan valgrind fuzz install python pyversions wheel pyasan bench"
STAGES=${MULTICORE_STAGES:-$ALL_STAGES}
BUILD_ROOT=${MULTICORE_BUILD_ROOT:-$ROOT/build-ci}
PYTHON=${PYTHON:-python3}
JOBS=$(nproc 2>/dev/null || echo 2)
CTEST_JOBS=${MULTICORE_CTEST_JOBS:-$JOBS}
LOGS=$BUILD_ROOT/logs

banner() {
    printf '\n'
    printf '=%.0s' {1..78}
    printf '\n== %s\n' "$*"
    printf '=%.0s' {1..78}
    printf '\n'
}

# ---------------------------------------------------------------------------
# Prerequisites: everything any selected stage needs, probed up front and
# installed in one step (Debian's apt, as root) before any stage runs. A
# probe checks what a stage really uses (a sanitizer's runtime library
# links, not only that clang exists), so a machine that never ran the suite
# is no different from one that did. After installing, every probe runs
# again: a prerequisite still missing stops the suite here, naming its
# package, instead of failing a link later.
# ---------------------------------------------------------------------------
banner "prerequisites"

has_stage() { [[ " $STAGES " == *" $1 "* ]]; }
c_stages() { local s; for s in gcc clang asan tsan valgrind fuzz install; do has_stage $s && return 0; done; return 1; }

links() {   # links CC FLAGS...: a trivial program compiles and links with them
    local cc=$1
    shift
    command -v "$cc" >/dev/null 2>&1 || return 1
    printf 'int main(void) { return 0; }\n' | "$cc" -x c - "$@" -o /dev/null >/dev/null 2>&1
}
fuzzer_links() {
    command -v clang >/dev/null 2>&1 || return 1
    printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n; }\n' |
        clang -x c - -fsanitize=fuzzer,address -o /dev/null >/dev/null 2>&1
}
gcc_major() { gcc -dumpversion 2>/dev/null | cut -d. -f1; }
clang_major() { clang -dumpversion 2>/dev/null | cut -d. -f1; }

# probe_all: fills MISSING with "package:what" for every failed probe.
# Packages whose name depends on a compiler's version are named after it
# (so a second pass, after the compilers are installed, names them right).
probe_all() {
    MISSING=()
    local need_c=0 need_py=0
    c_stages && need_c=1
    { has_stage python || has_stage pyversions || has_stage wheel || has_stage pyasan || has_stage bench; } && need_py=1
    command -v gcc >/dev/null 2>&1 || MISSING+=("gcc:gcc")
    command -v cmake >/dev/null 2>&1 || MISSING+=("cmake:cmake")
    command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || MISSING+=("make:make")
    if ((need_c)); then
        command -v pkg-config >/dev/null 2>&1 || MISSING+=("pkg-config:pkg-config")
        command -v nm >/dev/null 2>&1 && command -v objdump >/dev/null 2>&1 ||
            MISSING+=("binutils:nm and objdump")
    fi
    if has_stage clang || has_stage tsan || has_stage fuzz; then
        command -v clang >/dev/null 2>&1 || MISSING+=("clang:clang")
    fi
    if has_stage asan || has_stage pyasan; then
        links gcc -fsanitize=address,undefined ||
            MISSING+=("libgcc-$(gcc_major)-dev:gcc's AddressSanitizer and UBSan runtimes (libasan, libubsan)")
    fi
    if has_stage tsan && command -v clang >/dev/null 2>&1; then
        links clang -fsanitize=thread ||
            MISSING+=("libclang-rt-$(clang_major)-dev:clang's ThreadSanitizer runtime")
    fi
    if has_stage fuzz && command -v clang >/dev/null 2>&1; then
        fuzzer_links ||
            MISSING+=("libclang-rt-$(clang_major)-dev:clang's libFuzzer and ASan runtimes")
    fi
    if has_stage valgrind; then
        command -v valgrind >/dev/null 2>&1 || MISSING+=("valgrind:valgrind")
    fi
    if has_stage python; then
        [[ -n ${MULTICORE_TEST_PG_DSN:-} || -n $(pg_bindir) ]] ||
            MISSING+=("postgresql:the PostgreSQL server (initdb, pg_ctl, postgres)")
        command -v ip >/dev/null 2>&1 || MISSING+=("iproute2:ip (network namespaces)")
        command -v runuser >/dev/null 2>&1 || MISSING+=("util-linux:runuser")
    fi
    if ((need_py)); then
        "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 ||
            MISSING+=("python3-venv:$PYTHON with venv and ensurepip")
    fi
}

install_missing() {
    local pkgs=() m
    for m in "${MISSING[@]}"; do
        pkgs+=("${m%%:*}")
    done
    mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
    echo "installing: ${pkgs[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "error: not root; install these first (Debian): apt-get install ${pkgs[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ((!APT_UPDATED)); then
        apt-get update -qq
        APT_UPDATED=1
    fi
    if printf '%s\n' "${pkgs[@]}" | grep -qx postgresql; then
        # postgresql-common first, to turn off the "main" cluster that
        # installing the server would otherwise create (and start on 5432):
        # the tests run a private, throwaway one (tests/lib/postgres.sh).
        apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null
        local conf=/etc/postgresql-common/createcluster.conf
        if [[ -f $conf ]]; then
            sed -i -E 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' "$conf"
            grep -q '^create_main_cluster = false' "$conf" ||
                echo 'create_main_cluster = false' >>"$conf"
        fi
    fi
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

# shellcheck source=tests/lib/postgres.sh
. "$ROOT/tests/lib/postgres.sh"
APT_UPDATED=0
# Two passes: the sanitizer runtimes' package names follow the compilers'
# versions, known once the compilers are installed.
for pass in 1 2; do
    probe_all
    ((${#MISSING[@]})) || break
    install_missing
done
probe_all
if ((${#MISSING[@]})); then
    for m in "${MISSING[@]}"; do
        echo "error: missing ${m#*:} (Debian package ${m%%:*})" >&2
    done
    exit 1
fi
for tool in gcc clang cmake pkg-config valgrind "$PYTHON"; do
    if command -v "$tool" >/dev/null 2>&1; then
        printf '%-12s %s\n' "$tool" "$("$tool" --version 2>&1 | head -n1)"
    fi
done

# The Python tests need a PostgreSQL server (test_postgres, the docs'
# program): one is started here for the whole run unless
# MULTICORE_TEST_PG_DSN names one already. CI=1 makes a test that lacks
# its server fail instead of skipping.
export CI=${CI:-1}
if has_stage python || has_stage pyasan; then
    if [[ -n ${MULTICORE_TEST_PG_DSN:-} ]]; then
        echo "using the PostgreSQL server of MULTICORE_TEST_PG_DSN"
    else
        start_postgres
    fi
fi

GENERATOR=()
if command -v ninja >/dev/null 2>&1; then
    GENERATOR=(-G Ninja)
fi

mkdir -p "$BUILD_ROOT" "$LOGS"

# ---------------------------------------------------------------------------
# Stages. Each runs in a subshell with `set -e`; its output goes to
# $LOGS/<stage>.log as well as to the terminal.
# ---------------------------------------------------------------------------

# c_build NAME CC BUILD_TYPE SANITIZE [CTEST ARGS...]: configure, build, ctest.
c_build() {
    local name=$1 cc=$2 build_type=$3 sanitize=$4
    shift 4
    local dir=$BUILD_ROOT/$name
    rm -rf "$dir"
    CC=$cc cmake -S "$ROOT" -B "$dir" "${GENERATOR[@]}" \
        -DCMAKE_BUILD_TYPE="$build_type" \
        -DMULTICORE_WERROR=ON \
        -DMULTICORE_BUILD_TESTS=ON \
        -DMULTICORE_BUILD_PYTHON=OFF \
        -DMULTICORE_SANITIZE="$sanitize"
    cmake --build "$dir" -j "$JOBS"
    cd "$dir"
    ctest --output-on-failure --no-tests=error -j "$CTEST_JOBS" "$@"
}

stage_gcc() {
    c_build gcc gcc RelWithDebInfo ""
}

stage_clang() {
    c_build clang clang Debug ""
}

stage_tsan() {
    export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
    # test_idle counts context switches of idle processes; TSan's own
    # background thread wakes every 100 ms, so that count means nothing
    # here (the test runs in the gcc, clang and asan stages).
    c_build tsan clang Debug thread -E '^test_idle\.'
}

stage_asan() {
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    c_build asan gcc Debug "address,undefined"
}

# valgrind: every tests/c program under memcheck. Notes on how it is run:
#  - Forked processes stay under valgrind whatever --trace-children says
#    (that option is about execve, which the engine never calls); so the
#    zygote and every worker are checked too, each reporting in its own
#    log file (--log-file=...%p). A worker or zygote exit status never
#    reaches the test, so --error-exitcode alone would miss their errors:
#    after each test every log is scanned, and any process with an error
#    fails the stage (also those killed by SIGKILL, which print no summary:
#    their error reports are matched directly).
#  - MULTICORE_TEST_REGION_SIZE (read by tests/c/harness.h) shrinks the
#    region of every pool started with the default size from 2x RAM to
#    64 MiB: memcheck's leak check reads the whole mapping at the exit of
#    each process (committing its untouched pages), which at 2x RAM takes
#    minutes per process. test_large moves 256 MiB arguments and results,
#    so it gets 640 MiB.
#  - pidfd_open is not supported by valgrind 3.19 (a warning in the logs):
#    the engine then watches the zygote through waitid(WNOWAIT), its
#    fallback, so that is the path checked here.
#  - Not run: the examples (examples/hello.c starts a pool with the default
#    region size, which the test harness cannot change; the same engine
#    paths run in test_basic). Every test of tests/c runs, test_idle,
#    test_large and the chaos test of test_crash included: under valgrind
#    they pass, the whole stage in about 2 minutes on 2 cores.
#  - Suppressions: only genuine false positives, each with its reason, in
#    the file written below.
stage_valgrind() {
    local dir=$BUILD_ROOT/valgrind
    rm -rf "$dir"
    mkdir -p "$dir"
    cat >"$dir/multicore.supp" <<'EOF'
# test_hold's hold_many_then_die task takes three holds and then _exits on
# purpose, to check that the zygote releases a dead worker's holds. The
# mc_hold handles are malloc'd in the worker and die with it: lost by
# design, not a leak of the engine's.
{
   test_hold-worker-exits-holding-its-holds
   Memcheck:Leak
   match-leak-kinds: definite
   fun:malloc
   fun:mc__worker_hold_task
   fun:mc_task_hold
   fun:hold_many_then_die
}
EOF
    CC=gcc cmake -S "$ROOT" -B "$dir" "${GENERATOR[@]}" \
        -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_FLAGS_DEBUG="-O1 -g" \
        -DMULTICORE_WERROR=ON -DMULTICORE_BUILD_TESTS=ON -DMULTICORE_BUILD_PYTHON=OFF \
        -DMULTICORE_SANITIZE=""
    cmake --build "$dir" -j "$JOBS"
    # Two programs at a time (MULTICORE_CTEST_JOBS): each waits on its
    # workers most of the time, so the stage takes about half as long.
    local t name running=0 failed=0
    local -a names=()
    for t in "$dir"/test_*; do
        [[ -f $t && -x $t ]] || continue
        name=$(basename "$t")
        names+=("$name")
        if ((running >= CTEST_JOBS)); then
            wait -n || true
            running=$((running - 1))
        fi
        valgrind_one "$dir" "$name" >"$dir/$name.out" 2>&1 &
        running=$((running + 1))
    done
    wait || true
    for name in "${names[@]}"; do
        cat "$dir/$name.out"
        grep -q "^check: valgrind $name .*: ok$" "$dir/$name.out" || failed=1
    done
    return "$failed"
}

# valgrind_one DIR NAME: one test program under memcheck, its zygote and
# workers included; prints one check line.
valgrind_one() {
    local dir=$1 name=$2 t=$1/$2 region vglogs start rc procs bad
    region=64M
    [[ $name == test_large ]] && region=640M
    vglogs=$dir/vglogs/$name
    rm -rf "$vglogs"
    mkdir -p "$vglogs"
    echo "valgrind: $name (region $region, logs $vglogs)"
    start=$SECONDS
    rc=0
    MULTICORE_TEST_REGION_SIZE=$region timeout -k 10 600 \
        valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
            --errors-for-leak-kinds=definite --trace-children=yes \
            --suppressions="$dir/multicore.supp" \
            --log-file="$vglogs/vg.%p.log" "$t" || rc=$?
    procs=$(find "$vglogs" -name 'vg.*.log' | wc -l)
    bad=$(grep -lE 'ERROR SUMMARY: [1-9]|^==[0-9]+== (Invalid (read|write|free)|Mismatched free|Conditional jump|Use of uninitialised|Syscall param|Source and destination overlap|Argument .* of function|Invalid alignment|.* are definitely lost)' \
          "$vglogs"/vg.*.log || true)
    if ((rc == 0)) && [[ -z $bad ]]; then
        echo "check: valgrind $name ($((SECONDS - start)) s, $procs processes): ok"
    else
        for f in $bad; do
            echo "---- $f"
            cat "$f"
        done
        echo "check: valgrind $name (exit $rc, $(wc -w <<<"$bad") of $procs processes with errors): FAILED"
    fi
}

stage_fuzz() {
    # libFuzzer (Debian's libclang-rt-<version>-dev) is a prerequisite.
    MULTICORE_BUILD_ROOT=$BUILD_ROOT bash "$ROOT/tests/fuzz/run.sh" "${MULTICORE_FUZZ_SECONDS:-10}"
}

check() {   # check NAME COMMAND...: one line per check, counted in the summary
    local name=$1
    shift
    if "$@"; then
        echo "check: $name: ok"
    else
        echo "check: $name: FAILED"
        return 1
    fi
}

readme_example_matches() {
    # The README's ```c block must be examples/hello.c, verbatim.
    awk '/^```c$/ {inside=1; next} inside && /^```$/ {exit} inside {print}' \
        README.md | diff -u examples/hello.c - >&2
}

stage_install() {
    local dir=$BUILD_ROOT/install-build prefix=$BUILD_ROOT/prefix out=$BUILD_ROOT/install-out
    rm -rf "$dir" "$prefix" "$out"
    mkdir -p "$out"
    cmake -S "$ROOT" -B "$dir" "${GENERATOR[@]}" \
        -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_INSTALL_PREFIX="$prefix" \
        -DMULTICORE_WERROR=ON -DMULTICORE_BUILD_TESTS=OFF -DMULTICORE_BUILD_PYTHON=OFF
    cmake --build "$dir" -j "$JOBS"
    cmake --install "$dir"

    local pc libdir
    pc=$(find "$prefix" -name multicore.pc -print -quit)
    [[ -n "$pc" ]] || { echo "multicore.pc was not installed" >&2; return 1; }
    export PKG_CONFIG_PATH=$(dirname "$pc")
    libdir=$(pkg-config --variable=libdir multicore)
    echo "pkg-config --cflags --libs multicore:          $(pkg-config --cflags --libs multicore)"
    echo "pkg-config --static --cflags --libs multicore: $(pkg-config --static --cflags --libs multicore)"
    ls -l "$prefix/include" "$libdir"

    local failed=0
    check "README C example is examples/hello.c" readme_example_matches || failed=1
    # The installed libraries export the header's functions and nothing
    # that looks like them (internal names are mc__); its own check lines.
    bash "$ROOT/tests/stages/exports.sh" "$libdir/libmulticore.a" "$libdir/libmulticore.so" ||
        failed=1
    check "libmulticore.so has SONAME libmulticore.so.0" \
        bash -c "objdump -p '$libdir/libmulticore.so' | grep -q 'SONAME *libmulticore\.so\.0$'" || failed=1

    # Shared: the exact command the README gives.
    # shellcheck disable=SC2046
    check "hello.c builds against the shared library" \
        cc examples/hello.c $(pkg-config --cflags --libs multicore) -o "$out/hello-shared" || failed=1
    check "hello (shared) links libmulticore.so.0" \
        bash -c "LD_LIBRARY_PATH='$libdir' ldd '$out/hello-shared' | grep -q 'libmulticore\.so\.0 => $libdir/'" || failed=1
    check "hello (shared) runs" \
        env LD_LIBRARY_PATH="$libdir" "$out/hello-shared" || failed=1

    # Static: libmulticore.a plus Libs.private, no shared library at run time.
    # shellcheck disable=SC2046
    check "hello.c builds statically (pkg-config --static)" \
        cc examples/hello.c $(pkg-config --cflags multicore) -static \
           $(pkg-config --static --libs multicore) -o "$out/hello-static" || failed=1
    check "hello (static) runs without libmulticore.so" \
        env -u LD_LIBRARY_PATH "$out/hello-static" || failed=1
    return "$failed"
}

stage_python() {
    local py=$PYTHON
    # A Python that refuses global installs (PEP 668) gets a venv that still
    # sees its site-packages.
    if "$py" -c 'import sys, sysconfig, os; sys.exit(not os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")))'; then
        echo "$py is externally managed: using a venv in $BUILD_ROOT/venv"
        rm -rf "$BUILD_ROOT/venv"
        "$py" -m venv --system-site-packages "$BUILD_ROOT/venv"
        py=$BUILD_ROOT/venv/bin/python
    fi
    "$py" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --root-user-action=ignore \
        ".[test]" -C cmake.define.MULTICORE_WERROR=ON
    "$py" -c 'import multicore, multicore._multicore as m; print("multicore", multicore.__file__, m.__file__)'
    local rc=0
    "$py" -m pytest tests/python -q -p no:cacheprovider || rc=$?
    check "python -m multicore demo" "$py" -m multicore demo || rc=1
    return "$rc"
}

stage_pyversions() {
    PYTHON=$PYTHON MULTICORE_BUILD_ROOT=$BUILD_ROOT bash "$ROOT/tests/stages/pyversions.sh"
}

stage_wheel() {
    PYTHON=$PYTHON MULTICORE_BUILD_ROOT=$BUILD_ROOT bash "$ROOT/tests/stages/wheel.sh"
}

# pyasan: the C extension (and the engine inside it) under AddressSanitizer
# and UndefinedBehaviorSanitizer, driven by the Python tests. CPython itself
# is not instrumented, so the runtimes are preloaded, PYTHONMALLOC=malloc
# lets ASan see object allocations, leak checking is off (the interpreter
# frees little at exit), and handle_segv=0 lets the tests whose worker
# crashes on purpose see a real SIGSEGV. Left to the python stage: test_typing
# (mypy on stubs, no C code), test_bench (bench/run.py's verdict) and the
# peers' conformance suites in tests/python/conformance (the Python glue's
# behaviour against CPython's and joblib's own tests: the C calls they make
# are the ones the other tests make, at several times the run time), and
# the cluster suites (test_cluster*.py: the Python glue over Dask, whose
# workers are separate, uninstrumented interpreters). Runs after the python stage
# (its venv sees the packages that stage installed).
stage_pyasan() {
    local venv=$BUILD_ROOT/venv-asan base=$PYTHON
    if [[ -x $BUILD_ROOT/venv/bin/python ]]; then
        base=$BUILD_ROOT/venv/bin/python
    fi
    rm -rf "$venv"
    "$base" -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --root-user-action=ignore --no-deps --force-reinstall . \
        -C cmake.define.MULTICORE_SANITIZE=address,undefined \
        -C cmake.define.MULTICORE_WERROR=ON -C cmake.build-type=Debug
    local preload
    preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
    (cd "$BUILD_ROOT" &&
        LD_PRELOAD=$preload PYTHONMALLOC=malloc \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1:handle_segv=0 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$venv/bin/python" -m pytest "$ROOT/tests/python" -q -p no:cacheprovider \
            --ignore "$ROOT/tests/python/test_typing.py" \
            --ignore "$ROOT/tests/python/test_bench.py" \
            --ignore "$ROOT/tests/python/conformance" \
            --ignore "$ROOT/tests/python/test_cluster.py" \
            --ignore "$ROOT/tests/python/test_cluster_netns.py")
}

# bench: the benchmark suite in its quick mode, only to prove that every
# scenario still runs for every library (speed is never asserted; the full
# run and its figures are in docs/benchmarks.md). The peers are the
# `bench` extra of pyproject.toml; one that cannot be installed is reported
# as missing by the suite, not dropped. Runs after the python stage (it
# uses the multicore that stage installed).
stage_bench() {
    local py=$PYTHON
    if [[ -x $BUILD_ROOT/venv/bin/python ]]; then
        py=$BUILD_ROOT/venv/bin/python
    fi
    if ! "$py" -c 'import multicore' 2>/dev/null; then
        "$py" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
            --root-user-action=ignore .
    fi
    local peers
    peers=$("$py" -c 'import tomllib; print(" ".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["bench"]))')
    echo "peers: $peers"
    # shellcheck disable=SC2086
    "$py" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
        --root-user-action=ignore $peers ||
        echo "some peers could not be installed: the suite reports them as missing"
    mkdir -p "$BUILD_ROOT/bench"
    check "bench/run.py --quick" "$py" bench/run.py --quick \
        --json "$BUILD_ROOT/bench/quick.json" --png "$BUILD_ROOT/bench/quick.png" \
        --md "$BUILD_ROOT/bench/quick.md"
}

# ---------------------------------------------------------------------------
# Run every stage, then summarize
# ---------------------------------------------------------------------------
declare -A RESULT PASSED FAILED DURATION

# count LOG: sets P and F from the runners' closing lines in a stage log.
count() {
    local log=$1 line n
    P=0
    F=0
    # ctest: "92% tests passed, 1 tests failed out of 12" or (CMake >= 4)
    # "100% tests passed out of 12"
    while read -r line; do
        [[ $line =~ tests\ passed(,\ ([0-9]+)\ tests?\ failed)?\ out\ of\ ([0-9]+) ]] || continue
        n=${BASH_REMATCH[2]:-0}
        F=$((F + n))
        P=$((P + BASH_REMATCH[3] - n))
    done < <(grep -E '^[0-9]+% tests passed(, [0-9]+ tests? failed)? out of [0-9]+' "$log" || true)
    # pytest -q: "3 failed, 40 passed, 2 skipped in 5.1s"
    line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error|errors|skipped|deselected|xfailed|xpassed)\b.* in [0-9.]+s' "$log" | tail -n1 || true)
    if [[ -n $line ]]; then
        for n in $(grep -oE '[0-9]+ passed' <<<"$line" | cut -d' ' -f1); do P=$((P + n)); done
        for n in $(grep -oE '[0-9]+ (failed|errors?)' <<<"$line" | cut -d' ' -f1); do F=$((F + n)); done
    fi
    # pyversions: "pyversions 3.9.18: 1 failed, 125 passed in 30.1s", one a line
    while read -r line; do
        for n in $(grep -oE '[0-9]+ passed' <<<"$line" | cut -d' ' -f1); do P=$((P + n)); done
        for n in $(grep -oE '[0-9]+ (failed|errors?)' <<<"$line" | cut -d' ' -f1); do F=$((F + n)); done
    done < <(grep -E '^pyversions [0-9.]+: ' "$log" || true)
    # our own checks
    P=$((P + $(grep -cE '^check: .*: ok$' "$log" || true)))
    F=$((F + $(grep -cE '^check: .*: FAILED$' "$log" || true)))
}

overall=0
for stage in $STAGES; do
    if ! declare -F "stage_$stage" >/dev/null; then
        echo "unknown stage: $stage (known: $ALL_STAGES)" >&2
        exit 2
    fi
    banner "stage: $stage"
    log=$LOGS/$stage.log
    start=$SECONDS
    set +e
    ( set -euo pipefail; "stage_$stage" ) 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    DURATION[$stage]=$((SECONDS - start))
    count "$log"
    if ((rc != 0)); then
        RESULT[$stage]=FAILED
        overall=1
        ((F > 0)) || F=1     # a failure no runner counted (a build error, say)
    else
        RESULT[$stage]=ok
    fi
    PASSED[$stage]=$P
    FAILED[$stage]=$F
    echo "-- stage $stage: ${RESULT[$stage]} (exit $rc, ${DURATION[$stage]} s, log $log)"
done

banner "summary"
total_p=0
total_f=0
printf '%-10s %-7s %7s %7s %7s\n' stage result passed failed seconds
for stage in $STAGES; do
    printf '%-10s %-7s %7d %7d %7d\n' "$stage" "${RESULT[$stage]}" \
        "${PASSED[$stage]}" "${FAILED[$stage]}" "${DURATION[$stage]}"
    total_p=$((total_p + PASSED[$stage]))
    total_f=$((total_f + FAILED[$stage]))
done
if ((overall != 0)); then
    echo "FAILED: see the logs in $LOGS"
else
    echo "all stages passed"
fi
echo "total: $total_p passed, $total_f failed"
exit "$overall"
