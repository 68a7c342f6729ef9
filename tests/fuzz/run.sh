#!/usr/bin/env bash
# tests/fuzz/run.sh [SECONDS]: build the libFuzzer targets with clang and run
# each one for SECONDS (default 20) on its corpus.
#
#   bash tests/fuzz/run.sh            # 20 s per target
#   bash tests/fuzz/run.sh 600        # a long run
#   bash tests/fuzz/run.sh 0          # build, then only replay the corpora
#   bash tests/fuzz/run.sh cov        # line coverage of SRCS by the corpora
#
# First tests/fuzz/regress.c runs: the bugs the targets found, as plain
# deterministic cases. Then the targets (tests/fuzz/fuzz_<name>.c; see the
# comment at the top of each):
#   journal  the undo journal replayed on EOWNERDEAD (mc__lock, txn.c)
#   arena    block headers, boundary tags, free lists (arena.c)
#   ring     ring indices, worker slots, task records after a recovery
#   frame    the Python extension's task payload and out-of-band frame
#            (python/multicore/_ext/frame.c, the binding's one Python-free
#            file: it is built with the engine here)
#
# Built with clang -fsanitize=fuzzer,address,undefined (UBSan fatal) into
# $MULTICORE_BUILD_ROOT/fuzz (default build-ci/fuzz). Each target starts from
# three corpus directories: build-ci/fuzz/corpus/<name> (kept between runs,
# where libFuzzer adds what it finds), seeds this script generates (small
# valid inputs, so nothing binary needs to be committed for them) and
# tests/fuzz/corpus/<name> (committed: inputs that once found a bug). A
# crash, a leak, an invariant failure (abort) or an input that runs longer
# than 10 s fails the script; the input is saved under
# build-ci/fuzz/artifacts/<name>/ and the command that replays it printed.
#
# Environment: MULTICORE_FUZZ_TARGETS="journal arena" runs a subset;
# FUZZ_CC (default clang); MULTICORE_FUZZ_JOBS (default 1): parallel
# libFuzzer jobs per target (-fork), for long runs on a bigger machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

SECS=${1:-20}
TARGETS=${MULTICORE_FUZZ_TARGETS:-"journal arena ring frame"}
OUT=${MULTICORE_BUILD_ROOT:-$ROOT/build-ci}/fuzz
CC=${FUZZ_CC:-clang}
FORKS=${MULTICORE_FUZZ_JOBS:-1}
JOBS=$(nproc 2>/dev/null || echo 2)

CFLAGS=(-std=gnu11 -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Werror
        -fno-sanitize-recover=all -Iinclude -Isrc -Ipython/multicore/_ext)
# What the targets cover: the engine, and the decoders of the extension's
# own bytes in shared memory (no Python in them).
SRCS=(src/*.c python/multicore/_ext/frame.c)
SAN=address,undefined

mkdir -p "$OUT/obj"

# ---- coverage: replay the corpora with clang's source-based coverage -----
if [[ $SECS == cov ]]; then
    cov=$OUT/cov
    rm -rf "$cov"
    mkdir -p "$cov"
    objs=()
    for t in $TARGETS; do
        $CC "${CFLAGS[@]}" -fsanitize=fuzzer -fprofile-instr-generate -fcoverage-mapping \
            "tests/fuzz/fuzz_$t.c" "${SRCS[@]}" -lpthread -o "$cov/fuzz_$t"
        dirs=("$OUT/corpus/$t")
        [[ -d tests/fuzz/corpus/$t ]] && dirs+=("tests/fuzz/corpus/$t")
        LLVM_PROFILE_FILE="$cov/$t.profraw" "$cov/fuzz_$t" -runs=0 "${dirs[@]}" >"$cov/$t.log" 2>&1
        objs+=(-object "$cov/fuzz_$t")
    done
    llvm-profdata merge -sparse "$cov"/*.profraw -o "$cov/all.profdata"
    llvm-cov report "${objs[@]:1}" -instr-profile="$cov/all.profdata" "${SRCS[@]}"
    llvm-cov show "${objs[@]:1}" -instr-profile="$cov/all.profdata" -format=html \
        -output-dir="$cov/html" "${SRCS[@]}"
    echo "fuzz: coverage report in $cov/html/index.html"
    exit 0
fi

# ---- build: SRCS once (coverage-instrumented), then each target --------
echo "fuzz: building with $($CC --version | head -n1)"
build_start=$SECONDS
printf '%s\n' "${SRCS[@]}" | xargs -P "$JOBS" -I{} sh -c \
    "$CC ${CFLAGS[*]} -fsanitize=fuzzer-no-link,$SAN -c {} -o $OUT/obj/\$(basename {} .c).o"
for t in $TARGETS; do
    $CC "${CFLAGS[@]}" -fsanitize=fuzzer,$SAN "tests/fuzz/fuzz_$t.c" "$OUT"/obj/*.o \
        -lpthread -o "$OUT/fuzz_$t"
done
$CC "${CFLAGS[@]}" -fsanitize=$SAN tests/fuzz/regress.c "$OUT"/obj/*.o -lpthread -o "$OUT/regress"
echo "fuzz: built in $((SECONDS - build_start)) s"

# ---- the bugs found so far, as deterministic cases -----------------------
failed=0
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} "$OUT/regress" 2>"$OUT/regress.log" || {
    failed=1
    cat "$OUT/regress.log"
}

# ---- seeds: small valid inputs, generated --------------------------------
# Each line is one seed, as \x escapes for printf.
seeds_journal=(
    '\x00\x00'                                      # empty arena, nothing open
    '\x04\x01\x10\x42\x30\x02\x80\x01\x00\x00'      # a few blocks, no change open
    '\x06\x01\x10\x42\x30\x02\x80\x01\x43\x00\x00\x03\x41\x81\x05\x00\x01\x07\x00'
    '\x03\xc0\x05\x01\x09\x41\x10\x00\x02\x00\x01\x00'   # a large block, freed while open
    '\x02\x01\x10\x02\x01\x03\x01\x02\x01\x00\x01\x00\x05\x08\x00\x06'  # with an edited entry
)
seeds_arena=(
    '\x00\x00\x10\x00\x01\x05\x01\x00\x20\x01\x20\x03\x00\x06\x00'
    '\x01\x00\x10\x20\x02\x01\x40\x01\x01\x02\x99\x00\x03\x00\x03\x01\x06\x00'
    '\xf8\x00\x10\x00\x00\x01\x10\x03\x00\x06\x00\x03\x01\x06\x00'          # large block
    '\x00\x00\x40\x00\x01\x40\x00\x02\x40\x03\x01\x06\x00'                  # merge both ways
    '\x00\x00\x40\x00\x01\x40\x05\x00\x00\x04\x41\x00\x06\x00\x03\x01'      # a corrupted header
)
seeds_frame=(
    '\x01\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x61\x62\x63'  # raw: a frame, no buffers
    '\x00\x00\x10\x00\x02\x00\x64\x00\x05\x20\x00\x40\x00'          # built frame: a buffer, a link
    '\x02\x01\x28\x08\x00\x01\x00\xc8\x00'                          # built payload, json, a buffer
    '\x06\x00\x05\x1e\x00\x01\x00\x46\x00\x00\x08\x00\x01\x05'          # dill; callable length edited
    '\x00\x00\x04\x00\x01\x00\x40\x00\x00\x10\x00\x03\x09\x10\x00'      # an entry edited to a bad link
    '\x08\x06\x00\x01\x02\x03\xff\xff\xff\xff\xff\xff\xff\x7f\x04\x00\x00\x00\x00\x00\x00\x00\x80\x05\x03\x00'  # compact call: None, False, True, INT64_MAX, -0.0, a str
    '\x18\x06\x10\x00'                                              # compact value: 16 bytes
    '\x01\x43\x6d\xff\xff\xff\xff\xff\xff\x01\x01\x03\x2a\x00\x00\x00\x00\x00\x00\x00'  # raw: a compact int 42
)
seeds_ring=(
    '\x02\x10\x00\x20\x00\x00\x00\x00\x00'
    '\x04\x10\x00\x20\x00\x30\x00\x40\x00\x04\x00\x01\x02\x10\x00\x05\x00\x01\x00'
    '\x03\x10\x00\x10\x00\x10\x00\x03\x00\x02\x20\x00\x0c\x02\x00\x01\x01'
    '\x02\x10\x00\x10\x00\x01\x00\x00\x01\x00\x00\x00\x01\x07'              # with an edited entry
)

summary=()
for t in $TARGETS; do
    corpus=$OUT/corpus/$t seeds=$OUT/seeds/$t art=$OUT/artifacts/$t log=$OUT/fuzz_$t.log
    rm -rf "$seeds"
    mkdir -p "$corpus" "$seeds" "$art"
    declare -n list="seeds_$t"
    i=0
    for s in "${list[@]}"; do
        printf "$s" >"$seeds/seed$i"
        i=$((i + 1))
    done
    dirs=("$corpus" "$seeds")
    [[ -d tests/fuzz/corpus/$t ]] && dirs+=("tests/fuzz/corpus/$t")

    echo "fuzz: $t for $SECS s (corpus $corpus)"
    args=(-timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$art/")
    if ((SECS > 0)); then
        args+=(-max_total_time="$SECS")
        ((FORKS > 1)) && args+=(-fork="$FORKS" -ignore_crashes=0)
    else
        args+=(-runs=0)
    fi
    rc=0
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1} \
        "$OUT/fuzz_$t" "${args[@]}" "${dirs[@]}" >"$log" 2>&1 || rc=$?
    execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | awk '{s += $2} END {print s + 0}')
    last=$(grep -E '^#[0-9]+' "$log" | tail -n1 || true)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | awk '{print $2}' || true)
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | awk '{print $2}' || true)
    n=$(find "$corpus" -type f | wc -l)
    line="fuzz_$t: $SECS s, $execs execs, cov ${cov:-?}, ft ${ft:-?}, corpus $n"
    if ((rc != 0)); then
        failed=1
        tail -n 60 "$log"
        crash=$(grep -oE "$art/[^ ]+" "$log" | tail -n1 || true)
        echo "check: $line: FAILED (exit $rc, log $log)"
        [[ -n $crash ]] && echo "  reproduce: $OUT/fuzz_$t $crash"
    else
        echo "check: $line: ok"
    fi
    summary+=("$line")
done

echo "fuzz: summary"
printf '  %s\n' "${summary[@]}"
exit "$failed"
