#!/usr/bin/env bash
# tests/with_postgres.sh CMD [ARGS...]: runs one command with the throwaway
# PostgreSQL server that tests/run_all.sh gives the Python tests
# (MULTICORE_TEST_PG_DSN exported), then stops it. For example:
#
#   bash tests/with_postgres.sh python3 -m pytest tests/python/test_postgres.py
#
# The server package must be installed (tests/run_all.sh installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
(($#)) || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
# shellcheck source=tests/lib/postgres.sh
. tests/lib/postgres.sh
export CI=${CI:-1}
if [[ -z ${MULTICORE_TEST_PG_DSN:-} ]]; then
    start_postgres
fi
# Not exec: this shell stays to stop the server when the command ends. The
# command runs in the foreground, with SIGINT as it is (a background job of
# a script would start with SIGINT ignored, and the tests send Ctrl-C to
# their subprocesses).
rc=0
"$@" || rc=$?
exit "$rc"
