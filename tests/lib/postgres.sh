# tests/lib/postgres.sh: a throwaway PostgreSQL server for the tests
# (tests/python/test_postgres.py, docs/postgresql.md's program). Sourced by
# tests/run_all.sh and tests/with_postgres.sh; the server package itself is
# one of run_all.sh's prerequisites.
#
#   start_postgres   a private cluster (initdb) in a temporary directory,
#                    owned by the postgres user when run as root, listening
#                    on 127.0.0.1 only, on a free port, trust authentication
#                    (loopback-only and thrown away), fsync off; a role and
#                    a database "multicore"; exports MULTICORE_TEST_PG_DSN.
#                    Stops the server and removes its directory at exit
#                    (also on failure, Ctrl-C or SIGTERM).
#   pg_bindir        the newest /usr/lib/postgresql/N/bin holding initdb
PG_TMP=""
PG_BIN=""
PG_AS=()        # how to run a server binary: as postgres when we are root

pg_bindir() {   # the newest /usr/lib/postgresql/N/bin holding initdb
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
    if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl && -x $dir/postgres ]]; then
        echo "$dir"
    fi
}

free_port() {   # a TCP port nobody listens on at 127.0.0.1 (now)
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

stop_postgres() {
    if [[ -n $PG_TMP && -d $PG_TMP ]]; then
        if [[ -f $PG_TMP/data/postmaster.pid ]]; then
            (cd / && "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -m fast -w -t 30 stop) \
                >/dev/null 2>&1 || true
        fi
        rm -rf "$PG_TMP"
    fi
}

start_postgres() {
    local start=$SECONDS port
    PG_BIN=$(pg_bindir)
    [[ -n $PG_BIN ]] || { echo "error: the PostgreSQL server is not installed (Debian: apt-get install postgresql)" >&2; exit 1; }
    PG_TMP=$(mktemp -d /tmp/multicore-pg.XXXXXX)
    if [[ $(id -u) -eq 0 ]]; then
        # initdb and postgres refuse to run as root
        id postgres >/dev/null 2>&1 || { echo "error: no postgres user" >&2; exit 1; }
        chown postgres: "$PG_TMP"
        PG_AS=(runuser -u postgres --)
    fi
    trap stop_postgres EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    (cd / && "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_TMP/data" -U postgres -A trust \
        -E UTF8 --locale=C --no-sync) >"$PG_TMP/initdb.log" 2>&1 ||
        { cat "$PG_TMP/initdb.log" >&2; exit 1; }
    # The port is free when chosen; if someone takes it before the server
    # binds it, the start fails and we try another.
    local tries
    for tries in 1 2 3; do
        port=$(free_port)
        if (cd / && "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" \
                -w -t 60 -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TMP \
                -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
                start) >/dev/null; then
            break
        fi
        if ((tries == 3)); then
            cat "$PG_TMP/server.log" >&2
            echo "error: PostgreSQL did not start" >&2
            exit 1
        fi
    done
    "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres \
        -c "CREATE ROLE multicore LOGIN" \
        -c "CREATE DATABASE multicore OWNER multicore" >/dev/null
    export MULTICORE_TEST_PG_DSN="postgresql://multicore@127.0.0.1:$port/multicore"
    echo "PostgreSQL $("$PG_BIN/postgres" --version | sed -E 's/^[^0-9]*([0-9.]+).*/\1/') on 127.0.0.1:$port" \
         "(data $PG_TMP/data, log $PG_TMP/server.log), ready in $((SECONDS - start)) s"
    echo "MULTICORE_TEST_PG_DSN=$MULTICORE_TEST_PG_DSN"
}

