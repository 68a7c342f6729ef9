#!/usr/bin/env bash
# tests/stages/exports.sh: the libraries export the public API and nothing
# that looks like it.
#
#   bash tests/stages/exports.sh [LIBMULTICORE.A LIBMULTICORE.SO]
#
# With no arguments it builds both libraries (Release, no tests) into
# $MULTICORE_BUILD_ROOT/exports (default build-ci/exports) and checks those.
#
# The public API is every function include/multicore.h declares MC_EXPORT.
# Checks, one "check: ...: ok/FAILED" line each:
#   - libmulticore.so's dynamic symbols are exactly the public API;
#   - libmulticore.a's global symbols named mc_ (one underscore, then a
#     letter or digit) are exactly the public API: internal functions are
#     named mc__ (src/internal.h), so a user's program and a reader can tell
#     contract from helper;
#   - libmulticore.a defines no global symbol outside the mc_ / mc__
#     namespace (a static library cannot hide its cross-file functions, so
#     their prefix is all that keeps them out of the user's names).
# Exits non-zero if any check failed. Needs nm (binutils) and cmake for the
# build.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

if (($# == 2)); then
    static_lib=$1
    shared_lib=$2
elif (($# == 0)); then
    dir=${MULTICORE_BUILD_ROOT:-$ROOT/build-ci}/exports
    rm -rf "$dir"
    GENERATOR=()
    if command -v ninja >/dev/null 2>&1; then
        GENERATOR=(-G Ninja)
    fi
    cmake -S "$ROOT" -B "$dir" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DMULTICORE_WERROR=ON -DMULTICORE_BUILD_TESTS=OFF -DMULTICORE_BUILD_PYTHON=OFF \
        -DMULTICORE_INSTALL_C=OFF >/dev/null
    cmake --build "$dir" -j "$(nproc 2>/dev/null || echo 2)" >/dev/null
    static_lib=$dir/libmulticore.a
    shared_lib=$dir/libmulticore.so
else
    echo "usage: bash tests/stages/exports.sh [LIBMULTICORE.A LIBMULTICORE.SO]" >&2
    exit 2
fi
for lib in "$static_lib" "$shared_lib"; do
    [[ -f $lib ]] || { echo "no such library: $lib" >&2; exit 2; }
done

declared=$(grep -oE 'MC_EXPORT [^(]*\bmc_[a-z0-9_]+\(' include/multicore.h |
           grep -oE 'mc_[a-z0-9_]+\($' | tr -d '(' | sort -u)
if [[ -z $declared ]]; then
    echo "no MC_EXPORT function found in include/multicore.h" >&2
    exit 2
fi

# Defined global symbols (nm's upper-case types but U); weak ones count.
shared_syms=$(nm -D --defined-only "$shared_lib" | awk 'NF == 3 && $2 ~ /^[A-TV-Z]$/ {print $3}' |
              grep -vE '^(_init|_fini|_edata|_end|__bss_start)$' | sort -u)
static_syms=$(nm -g --defined-only "$static_lib" | awk 'NF == 3 && $2 ~ /^[A-TV-Z]$/ {print $3}' |
              sort -u)

failed=0
same() {   # same NAME EXPECTED ACTUAL
    if [[ $2 == "$3" ]]; then
        echo "check: $1: ok"
    else
        echo "check: $1: FAILED (- header, + library)"
        diff -u <(echo "$2") <(echo "$3") | tail -n +3 || true
        failed=1
    fi
}

same "libmulticore.so exports exactly the header's functions" \
    "$declared" "$shared_syms"
same "libmulticore.a's global mc_ symbols are exactly the header's functions" \
    "$declared" "$(grep -E '^mc_[a-z0-9]' <<<"$static_syms" || true)"
same "libmulticore.a defines no global symbol outside mc_ / mc__" \
    "" "$(grep -vE '^mc_' <<<"$static_syms" || true)"
echo "libmulticore.a: $(wc -l <<<"$static_syms") global symbols," \
     "$(grep -c '^mc__' <<<"$static_syms" || true) of them internal (mc__)"
exit "$failed"
