"""One PostgreSQL connection per worker, checked from the server's side.

Each worker opens its connection in worker_init and keeps it in
worker_state(); every task the worker runs goes through it; worker_exit
closes it at shutdown(). The server (pg_stat_activity, filtered by an
application_name unique to this run, and pg_backend_pid()) must see exactly
one connection per worker, the same one for every task of that worker, and
none left after shutdown().

The server comes from MULTICORE_TEST_PG_DSN (a libpq connection string);
tests/run_all.sh starts a private one and sets it, and sets CI. Without it the test
skips on a developer machine but FAILS under CI (CI set), so that CI cannot
pass without having run it. See docs/postgresql.md.
"""

import functools
import os
import time
import uuid

import pytest

from multicore import Task, initialize, shutdown, worker_id, worker_state
from multicore.exceptions import WorkerInitError

try:
    import psycopg
    from psycopg import sql
except ImportError as e:   # pragma: no cover - reported by require_server()
    psycopg = None
    PSYCOPG_MISSING = str(e)

DSN = os.environ.get("MULTICORE_TEST_PG_DSN")
WORKERS = 3          # not the CPU count: the number comes from initialize()
N_TASKS = 1000
N_ITEMS = 100


def require_server():
    if psycopg is None:
        why = (f"psycopg is not installed ({PSYCOPG_MISSING}): "
               "pip install '.[test]'")
    elif not DSN:
        why = ("MULTICORE_TEST_PG_DSN is not set, so there is no PostgreSQL "
               "server to test against: run `bash tests/with_postgres.sh python3 -m pytest "
               "tests/python/test_postgres.py` (starts one) or see "
               "docs/postgresql.md")
    else:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {why}", pytrace=False)
    pytest.skip(why)


# ---------------------------------------------------------------------------
# What the workers run: module level, so it exists before initialize().
# ---------------------------------------------------------------------------

def open_connection(dsn, application_name):
    """worker_init: this worker's connection, for all its tasks."""
    conn = psycopg.connect(dsn, application_name=application_name,
                           autocommit=True)
    # Session state lives exactly as long as this connection.
    conn.execute("SELECT set_config('multicore.worker', %s, false)",
                 (str(worker_id()),))
    worker_state()["pg"] = conn


def close_connection(closed_table):
    """worker_exit: say goodbye in a table, then close the connection."""
    conn = worker_state().pop("pg", None)
    if conn is not None:
        conn.execute(sql.SQL("INSERT INTO {} VALUES (pg_backend_pid(), %s)")
                     .format(sql.Identifier(closed_table)), (worker_id(),))
        conn.close()


def wait_for_every_worker(barrier_table, workers, timeout):
    """A barrier: returns once `workers` distinct connections have arrived.
    A worker runs one task at a time, so `workers` of these tasks can only
    finish if every worker takes one: each worker has run a task."""
    conn = worker_state()["pg"]
    conn.execute(sql.SQL("INSERT INTO {} VALUES (pg_backend_pid(), %s)")
                 .format(sql.Identifier(barrier_table)), (worker_id(),))
    count = sql.SQL("SELECT count(DISTINCT backend_pid) FROM {}").format(
        sql.Identifier(barrier_table))
    deadline = time.monotonic() + timeout
    while conn.execute(count).fetchone()[0] < workers:
        if time.monotonic() > deadline:
            raise TimeoutError("not every worker reached the barrier")
        time.sleep(0.005)
    return worker_id(), conn.info.backend_pid


def lookup(items_table, i):
    """A task: a real query through this worker's connection."""
    conn = worker_state()["pg"]
    row = conn.execute(
        sql.SQL("SELECT pg_backend_pid(), current_setting('multicore.worker'), "
                "current_setting('application_name'), name "
                "FROM {} WHERE id = %s").format(sql.Identifier(items_table)),
        (i % N_ITEMS,)).fetchone()
    return (worker_id(),) + tuple(row) + (i,)


# ---------------------------------------------------------------------------

def activity(conn, application_name):
    """{pid: backend_type} of the server's sessions with that name."""
    rows = conn.execute(
        "SELECT pid, backend_type FROM pg_stat_activity "
        "WHERE application_name = %s", (application_name,)).fetchall()
    return dict(rows)


def sessions_abandoned(conn):
    """The server's count of sessions to this database that ended without
    the client closing them (the client process died, say). A backend
    reports it before it leaves pg_stat_activity. None before PostgreSQL 14,
    which does not count them."""
    if conn.info.server_version < 140000:
        return None
    return conn.execute(
        "SELECT sessions_abandoned FROM pg_stat_database "
        "WHERE datname = current_database()").fetchone()[0]


@pytest.fixture
def tables():
    """Three tables unique to this run (dropped afterwards): the items the
    tasks look up, the barrier, and the goodbyes of worker_exit."""
    require_server()
    suffix = uuid.uuid4().hex[:12]
    names = {"items": f"mc_items_{suffix}", "barrier": f"mc_barrier_{suffix}",
             "closed": f"mc_closed_{suffix}"}
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, name text NOT NULL)")
                     .format(sql.Identifier(names["items"])))
        conn.execute(sql.SQL("INSERT INTO {} SELECT i, 'item ' || i FROM generate_series(0, %s) i")
                     .format(sql.Identifier(names["items"])), (N_ITEMS - 1,))
        for name in ("barrier", "closed"):
            conn.execute(sql.SQL("CREATE TABLE {} (backend_pid int, worker int)")
                         .format(sql.Identifier(names[name])))
    # closed before the pool forks: no worker inherits this socket
    yield names
    shutdown()
    with psycopg.connect(DSN, autocommit=True) as conn:
        for name in names.values():
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))


def test_one_connection_per_worker_reused_and_closed(tables):
    app = f"multicore-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    initialize(workers=WORKERS,
               worker_init=functools.partial(open_connection, DSN, app),
               worker_exit=functools.partial(close_connection, tables["closed"]))

    # The observer connects after the fork, so no worker holds its socket.
    with psycopg.connect(DSN, autocommit=True,
                         application_name=app + "-observer") as observer:
        abandoned = sessions_abandoned(observer)

        # The barrier: each worker runs one of these tasks, so every worker
        # (and its connection) shows in the results.
        task = Task()
        for _ in range(WORKERS):
            task.run(wait_for_every_worker, tables["barrier"], WORKERS, 30.0)
        arrived = task.get(timeout=60)
        assert sorted(w for w, _ in arrived) == list(range(WORKERS)), arrived

        before = activity(observer, app)
        task = Task()
        for i in range(N_TASKS):
            task.run(lookup, tables["items"], i)
        results = task.get(timeout=120)
        after = activity(observer, app)

        # Every task got its own row, in submission order.
        assert [r[5] for r in results] == list(range(N_TASKS))
        assert [r[4] for r in results] == [f"item {i % N_ITEMS}" for i in range(N_TASKS)]
        assert {r[3] for r in results} == {app}

        # Client side: every task of worker i went through one backend, the
        # session that worker_init opened (its session setting is there).
        pids_of = {}
        for w, pid, setting, *_ in results + [(w, pid, str(w)) for w, pid in arrived]:
            assert setting == str(w)
            pids_of.setdefault(w, set()).add(pid)
        assert set(pids_of) == set(range(WORKERS))
        assert all(len(p) == 1 for p in pids_of.values()), pids_of
        backend_pids = {w: p.pop() for w, p in pids_of.items()}
        assert len(set(backend_pids.values())) == len(backend_pids), backend_pids
        barrier_pids = {w: pid for w, pid in arrived}
        for w, pid in backend_pids.items():
            assert barrier_pids[w] == pid

        # Server side: exactly these connections, one per worker, before and
        # after the 1,000 tasks (none opened or replaced in between).
        assert set(before) == set(after) == set(barrier_pids.values()), (before, after)
        assert len(after) == WORKERS
        assert set(after.values()) == {"client backend"}

        shutdown()

        # worker_exit said goodbye on each connection and closed it: the
        # server sees none of them any more, and none was abandoned (a
        # worker that exited with its connection open would count there).
        goodbyes = observer.execute(
            sql.SQL("SELECT worker, backend_pid FROM {} ORDER BY worker")
            .format(sql.Identifier(tables["closed"]))).fetchall()
        assert dict(goodbyes) == barrier_pids
        deadline = time.monotonic() + 10
        while activity(observer, app) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert activity(observer, app) == {}, "connections left after shutdown()"
        assert sessions_abandoned(observer) == abandoned, \
            "a worker's connection was dropped, not closed"


def test_worker_init_failing_to_connect_is_reported(tables):
    bad = psycopg.conninfo.make_conninfo(DSN, dbname="multicore_no_such_db",
                                         connect_timeout=10)
    with pytest.raises(WorkerInitError) as info:
        initialize(workers=2, worker_init=functools.partial(open_connection, bad, "x"))
    assert "multicore_no_such_db" in str(info.value)
    assert "OperationalError" in str(info.value)
    assert Task() is None        # no pool: code takes its sequential path
