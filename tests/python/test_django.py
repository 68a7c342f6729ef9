"""multicore.contrib.django on a small real Django site
(tests/python/django_project/mcsite): the pool starts in the app's ready(),
after the parent's database connections are closed; a view renders a list
on the workers with Task and ranges, through Django's test client, and gets
exactly the sequential rendering; the pool is gone when the process exits.

Django runs in a fresh interpreter (DJANGO_SETTINGS_MODULE set), so that
django.setup() and its pool do not leak into the other tests. Django is a
test requirement (pip install ".[test]"): a missing Django fails here under
CI, and skips elsewhere.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import child_pids, exited

PROJECT = Path(__file__).resolve().parent / "django_project"

try:
    import django  # noqa: F401
except ImportError as e:    # pragma: no cover
    if os.environ.get("CI"):
        raise ImportError(f"CI is set but Django is not installed ({e}): "
                          "pip install '.[test]'") from e
    pytest.skip(f"Django is not installed ({e}): pip install '.[test]'",
                allow_module_level=True)


SITE_SCRIPT = r"""
import json, os, sys, threading

import django
django.setup()                       # ready(): the pool starts here (or not)

import multicore
from multicore import _multicore
from django.core import checks
from django.db import connections
from django.test import Client

import mcsite.views as views

out = {
    "pid": os.getpid(),
    "pool": ([_multicore._zygote_pid()] + _multicore._worker_pids()
             if _multicore._zygote_pid() is not None else []),
    "workers": multicore.NUMBER_OF_WORKERS,
    # the connection mcsite's ready() opened was closed before the fork
    "parent_connections_open": [c.alias for c in connections.all()
                                if c.connection is not None],
    # the views were imported before initialize(), in this process
    "views_loaded_in_pid": views.LOADED_IN_PID,
    "pool_running_at_views_import": views.POOL_RUNNING_AT_IMPORT,
    "task_functions": [[f.__module__, f.__qualname__,
                        getattr(sys.modules[f.__module__], f.__qualname__, None) is f]
                       for f in views.TASK_FUNCTIONS],
    "checks": [m.id for m in checks.run_checks()],
}

client = Client()
response = client.get("/items/")
out["status"] = response.status_code
out["mode"] = response["X-Multicore"]
out["used"] = response["X-Multicore-Workers"]
out["content"] = response.content.decode()
out["sequential"] = "<ul>\n" + views.render_items(0, len(views.ITEMS)) + "</ul>\n"

# four request threads at once, as a threaded server would
contents = [None] * 4
def get(i):
    contents[i] = Client().get("/items/?n=%d" % (500 + i)).content.decode()
threads = [threading.Thread(target=get, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join(60)
out["threaded_ok"] = [
    c == "<ul>\n" + views.render_items(0, 500 + i) + "</ul>\n"
    for i, c in enumerate(contents)]

response = client.get("/workers/?n=8")
out["probes"] = json.loads(response.content)

print("RESULT " + json.dumps(out), flush=True)
# no shutdown(): atexit stops the pool
"""


def wait_exited(pids, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not all(exited(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.01)
    return [p for p in pids if not exited(p)]


def site_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MULTICORE_AUTOSTART", "RUN_MAIN")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "mcsite.settings",
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
        "MCSITE_DB": str(tmp_path / "db.sqlite3"),
        "MCSITE_EXIT_LOG": str(tmp_path / "worker_exit.log"),
        "MCSITE_WORKERS": "2",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def run_site(tmp_path, **extra):
    script = tmp_path / "site.py"
    script.write_text(SITE_SCRIPT)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                          env=site_env(tmp_path, **extra),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    assert len(lines) == 1, proc.stdout + proc.stderr
    return json.loads(lines[0][len("RESULT "):]), proc


def test_view_renders_in_parallel_like_sequentially(tmp_path):
    out, proc = run_site(tmp_path)

    # ready() started the pool: a zygote and two workers
    assert out["workers"] == 2
    assert len(out["pool"]) == 3, out["pool"]
    assert out["parent_connections_open"] == []
    assert "multicore.W001" not in out["checks"]

    # the task functions are module level in mcsite.views, which was
    # imported (by the URLconf that ready() preloads) before initialize()
    assert out["views_loaded_in_pid"] == out["pid"]
    assert out["pool_running_at_views_import"] is False
    for module, qualname, found in out["task_functions"]:
        assert module == "mcsite.views" and "<locals>" not in qualname, qualname
        assert found, f"{module}.{qualname} is not reachable by name"

    # the view ran on the workers and rendered what a plain loop renders
    assert out["status"] == 200
    assert out["mode"] == "parallel"
    assert set(out["used"].split(",")) <= {"0", "1"}
    assert out["content"] == out["sequential"]
    assert out["content"].count("<li ") == 1000
    assert "item &lt;999&gt; &amp; co: 999 squared is 998001" in out["content"]
    assert out["threaded_ok"] == [True] * 4

    # in the workers: worker_init ran, mcsite.views was inherited (not
    # imported again), and Django opened the worker's own connection
    probes = out["probes"]
    assert probes["mode"] == "parallel"
    assert len(probes["probes"]) == 8
    for p in probes["probes"]:
        assert p["worker"] in (0, 1)
        assert p["pid"] not in (out["pid"], out["pool"][0])
        assert p["pid"] in out["pool"][1:]
        assert p["init"] == "mcsite.workers.init"
        assert p["views_loaded_in_pid"] == out["pid"]
        assert p["answer"] == 42
    # a worker takes tasks in submission order: its first probe is its first
    # database use, and it found no connection (the parent's was closed)
    firsts = {}
    for p in probes["probes"]:
        firsts.setdefault(p["worker"], p)
    assert not any(p["inherited_connection"] for p in firsts.values())

    # the process exited (no shutdown() call: atexit); worker_exit ran in
    # both workers, and none of the pool's processes is left
    assert wait_exited(out["pool"]) == []
    exits = (tmp_path / "worker_exit.log").read_text().split()
    assert sorted(exits[0::2]) == ["0", "1"]
    assert sorted(map(int, exits[1::2])) == sorted(out["pool"][1:])


def test_autostart_off_takes_the_sequential_path(tmp_path):
    out, _ = run_site(tmp_path, MULTICORE_AUTOSTART="0")
    assert out["pool"] == []
    assert out["mode"] == "sequential"
    assert out["content"] == out["sequential"]
    assert out["threaded_ok"] == [True] * 4
    assert out["probes"] == {"mode": "sequential", "probes": []}
    assert not (tmp_path / "worker_exit.log").exists()


def test_not_last_in_installed_apps_is_a_warning(tmp_path):
    out, _ = run_site(tmp_path, MCSITE_MULTICORE_FIRST="1")
    assert "multicore.W001" in out["checks"]
    assert out["mode"] == "parallel"      # a warning: the pool still runs
    assert wait_exited(out["pool"]) == []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_items(port, n=10, timeout=60, proc=None):
    """GET /items/ from the runserver on port, retrying until it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/items/?n={n}", timeout=10) as r:
                return r.headers["X-Multicore"], r.read().decode()
        except OSError:
            if (proc is not None and proc.poll() is not None) or \
                    time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def server_and_pool(reloader_pid):
    """The reloader's only child (the server), and the server's pool:
    [zygote, worker, worker]."""
    children = child_pids(reloader_pid)
    assert len(children) == 1, children        # the server, no zygote
    server = children[0]
    zygotes = child_pids(server)
    assert len(zygotes) == 1, zygotes
    workers = child_pids(zygotes[0])
    assert len(workers) == 2, workers
    return server, zygotes + workers


def test_runserver_autoreloader_parent_has_no_pool(tmp_path):
    """manage.py runserver with its autoreloader: the parent only restarts
    the child, so only the child (the server) starts a pool; a reload
    replaces the child, and its pool goes with it."""
    site = tmp_path / "site"
    shutil.copytree(PROJECT, site,
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = site_env(tmp_path, PYTHONPATH=str(site))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(site / "manage.py"), "runserver",
         f"127.0.0.1:{port}"],
        cwd=tmp_path, env=env, start_new_session=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    everything = []
    try:
        mode, body = get_items(port, proc=proc)
        assert mode == "parallel"
        assert body.count("<li ") == 10
        first_server, first_pool = server_and_pool(proc.pid)
        everything += [first_server] + first_pool

        # Edit a view: the reloader restarts the server.
        views = site / "mcsite" / "views.py"
        deadline = time.monotonic() + 60
        touched = 0
        while child_pids(proc.pid) in ([first_server], []):
            assert time.monotonic() < deadline, "runserver did not reload"
            touched += 1                       # a newer mtime each time
            os.utime(views, (time.time() + touched, time.time() + touched))
            time.sleep(0.5)
        mode, body = get_items(port, n=20, proc=proc)
        assert mode == "parallel"
        assert body.count("<li ") == 20
        server, pool = server_and_pool(proc.pid)
        everything += [server] + pool
        assert server != first_server
        assert wait_exited([first_server] + first_pool) == [], \
            "the old server's pool outlived the reload"
    finally:
        # runserver exits on SIGTERM (sys.exit(0): atexit runs). Not SIGINT:
        # a shell script's background job starts with SIGINT ignored.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert wait_exited(everything) == [], out


def test_autostart_rules(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    import multicore.contrib.django as mc_django

    reloader = mc_django._autoreloader_parent
    monkeypatch.delenv("RUN_MAIN", raising=False)
    assert reloader(["manage.py", "runserver"])
    assert not reloader(["manage.py", "runserver", "--noreload"])
    assert not reloader(["manage.py", "migrate"])
    assert not reloader(["gunicorn", "mysite.wsgi"])
    monkeypatch.setenv("RUN_MAIN", "true")      # the reloader's child
    assert not reloader(["manage.py", "runserver"])

    # the environment variable wins (settings are not even read)
    for value, expected in [("0", False), ("off", False), ("False", False),
                            ("1", True), ("yes", True)]:
        monkeypatch.setenv("MULTICORE_AUTOSTART", value)
        assert mc_django.autostart_enabled() is expected
    monkeypatch.setenv("MULTICORE_AUTOSTART", "maybe")
    with pytest.raises(ImproperlyConfigured):
        mc_django.autostart_enabled()
