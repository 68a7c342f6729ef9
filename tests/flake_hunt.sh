#!/usr/bin/env bash
# tests/flake_hunt.sh: runs the whole suite (bash .ci/run, i.e. the README's
# test command) N times, each in a fresh clone of this repository's HEAD,
# and prints every failure with its run, stage and test.
#
#   bash tests/flake_hunt.sh [-n RUNS] [--hog] [--keep] [-- STAGES...]
#
#   -n RUNS   how many runs (default 3), one after another
#   --hog     a CPU hog (a busy loop) on the last CPU for the whole hunt,
#             so that timing assumptions meet a loaded machine
#   --keep    keep the clones and their logs (default: only the logs)
#   STAGES    only these stages (MULTICORE_STAGES), e.g. -- gcc python
#
# Only what is committed is cloned. Logs: /tmp/multicore-flakes.<pid>/.
# Exit status 0 if every run passed. The last lines are "N passed, N failed"
# counting runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

runs=3 hog=0 keep=0 stages=""
while (($#)); do
    case $1 in
    -n) runs=$2; shift 2 ;;
    --hog) hog=1; shift ;;
    --keep) keep=1; shift ;;
    --) shift; stages="$*"; break ;;
    *) echo "usage: $0 [-n RUNS] [--hog] [--keep] [-- STAGES...]" >&2; exit 2 ;;
    esac
done
[[ $runs =~ ^[1-9][0-9]*$ ]] || { echo "-n needs a positive number, not '$runs'" >&2; exit 2; }

out=/tmp/multicore-flakes.$$
mkdir -p "$out"
hog_pid="" run_pid=""
cleanup() {
    if [[ -n $hog_pid ]]; then
        kill "$hog_pid" 2>/dev/null || true
        wait "$hog_pid" 2>/dev/null || true
    fi
}
# A signal to the hunt ends the run in progress too: each run is a process
# group of its own (setsid below), so the whole group gets the signal, and
# the hunt waits for it before it exits.
interrupted() {
    trap - INT TERM
    if [[ -n $run_pid ]]; then
        echo "flake hunt: interrupted, stopping the run in progress (process group $run_pid)" >&2
        kill -TERM -- "-$run_pid" 2>/dev/null || true
        wait "$run_pid" 2>/dev/null || true
    fi
    exit 130
}
trap cleanup EXIT
trap interrupted INT TERM
if ((hog)); then
    cpu=$(($(nproc) - 1))
    taskset -c "$cpu" bash -c 'while :; do :; done' &
    hog_pid=$!
    echo "CPU hog: pid $hog_pid on CPU $cpu"
fi

# failures LOGDIR: one line per failed test, "stage: test", from the
# runners' own lines in each stage's log.
failures() {
    local log stage
    for log in "$1"/*.log; do
        [[ -f $log ]] || continue
        stage=$(basename "$log" .log)
        {
            grep -E '^FAIL [A-Za-z_]' "$log" | sed -E 's/^FAIL ([^ ]+).*/C case \1/' || true
            grep -E '^[0-9]+/[0-9]+ Test +#[0-9]+: [^ ]+ .*(Failed|Timeout|Exception|\*\*\*)' "$log" |
                sed -E 's/^.*Test +#[0-9]+: ([^ ]+) .*/ctest \1/' || true
            grep -E '^(FAILED|ERROR) [^ ]+' "$log" | sed -E 's/^(FAILED|ERROR) ([^ ]+).*/pytest \2/' || true
            grep -E '^check: .*: FAILED$' "$log" | sed -E 's/^check: (.*): FAILED$/check \1/' || true
            grep -E '^-- stage [a-z]+: FAILED' "$log" | sed -E 's/^-- stage ([a-z]+).*/stage \1 failed/' || true
        } | sed "s/^/$stage: /"
    done
}

passed=0 failed=0
for ((i = 1; i <= runs; i++)); do
    dir=$out/run$i
    git clone --quiet "$ROOT" "$dir/src"
    start=$SECONDS
    rc=0
    # Started in the background (as from a script), the run has SIGINT and
    # SIGQUIT ignored, which bash cannot undo and every program would
    # inherit: CI's run has them as a terminal does, so python restores
    # them before it becomes the run.
    (
        cd "$dir/src"
        [[ -z $stages ]] || export MULTICORE_STAGES=$stages
        export MULTICORE_BUILD_ROOT="$dir/build"
        exec setsid python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
signal.signal(signal.SIGQUIT, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])' bash .ci/run
    ) >"$dir/run.log" 2>&1 </dev/null &
    run_pid=$!
    wait "$run_pid" || rc=$?
    run_pid=""
    secs=$((SECONDS - start))
    total=$(grep -E '^total: ' "$dir/run.log" | tail -n1 || true)
    if ((rc == 0)); then
        passed=$((passed + 1))
        echo "run $i: passed in $secs s ($total)"
    else
        failed=$((failed + 1))
        echo "run $i: FAILED (exit $rc) in $secs s ($total); log $dir/run.log"
        list=$(failures "$dir/build/logs")
        if [[ -n $list ]]; then
            sed 's/^/    /' <<<"$list"
        else
            tail -n 20 "$dir/run.log" | sed 's/^/    | /'
        fi
    fi
    if ((!keep)); then
        mkdir -p "$dir/logs"
        cp -r "$dir/build/logs/." "$dir/logs/" 2>/dev/null || true
        rm -rf "$dir/src" "$dir/build"
    fi
done
echo "flake hunt: $runs runs$( ((hog)) && echo ' under a CPU hog'), logs in $out"
echo "$passed passed, $failed failed"
((failed == 0))
