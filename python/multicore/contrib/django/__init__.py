"""multicore for Django: the pool starts when Django starts.

    INSTALLED_APPS = [
        ...,
        "multicore.contrib.django",     # last: see below
    ]

    MULTICORE = {                       # optional; these are the defaults
        "workers": None,                # None: one worker per online CPU
        "worker_init": None,            # "dotted.path" of a no-argument
                                        # callable run in each worker first
        "worker_exit": None,            # the same, run in each worker when
                                        # it leaves at shutdown
        "autostart": True,              # False: call start() yourself
        "preload": None,                # modules imported before the fork;
                                        # None: [settings.ROOT_URLCONF]
    }

The app's ready() (MulticoreConfig, in apps.py) calls start(), which

  1. imports the "preload" modules (by default the URLconf, and so the
     views): the task functions they define exist before the fork, and
     every worker has them without importing anything;
  2. closes this process's database connections
     (django.db.connections.close_all()), so that no worker inherits a
     socket of the parent's: a worker that uses the ORM opens its own
     connection, and keeps it for its life;
  3. calls multicore.initialize(workers, worker_init, worker_exit), and
     registers multicore.shutdown() with atexit.

In each worker, worker_exit closes the worker's own Django database
connections after MULTICORE["worker_exit"] has run.

ready() does not start the pool when the environment variable
MULTICORE_AUTOSTART is 0/false/no/off (1/true/yes/on forces it), when
MULTICORE["autostart"] is False, or in the parent process of
`manage.py runserver` with its autoreloader, which only watches files and
restarts the child that serves (the child starts its own pool).

Views take the sequential path when multicore.Task() returns None (no pool
in this process): see docs/django.md.
"""

import atexit
import functools
import os
import sys
import threading
from importlib import import_module

import multicore

__all__ = ["MulticoreConfig", "start", "stop", "get_settings",
           "autostart_enabled", "DEFAULTS"]

DEFAULTS = {
    "workers": None,
    "worker_init": None,
    "worker_exit": None,
    "autostart": True,
    "preload": None,
}

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

_lock = threading.Lock()
_atexit_registered = False


def __getattr__(name):
    # multicore.contrib.django.MulticoreConfig, without importing django.apps
    # when only start() or stop() is wanted.
    if name == "MulticoreConfig":
        from multicore.contrib.django.apps import MulticoreConfig
        return MulticoreConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _improperly_configured(message):
    from django.core.exceptions import ImproperlyConfigured
    return ImproperlyConfigured(message)


def get_settings():
    """settings.MULTICORE over DEFAULTS, checked; "preload" resolved to a
    list of module names."""
    from django.conf import settings

    given = getattr(settings, "MULTICORE", None) or {}
    if not isinstance(given, dict):
        raise _improperly_configured(
            f"settings.MULTICORE must be a dict, not {type(given).__name__}")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise _improperly_configured(
            f"settings.MULTICORE: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"the keys are {', '.join(map(repr, DEFAULTS))}")
    conf = {**DEFAULTS, **given}

    workers = conf["workers"]
    if workers is not None and (isinstance(workers, bool) or
                                not isinstance(workers, int) or workers < 1):
        raise _improperly_configured(
            f"settings.MULTICORE['workers'] must be None or a positive "
            f"integer, not {workers!r}")
    for key in ("worker_init", "worker_exit"):
        value = conf[key]
        if value is not None and not isinstance(value, str) and not callable(value):
            raise _improperly_configured(
                f"settings.MULTICORE[{key!r}] must be None, a dotted path or "
                f"a callable, not {value!r}")

    preload = conf["preload"]
    if preload is None:
        urlconf = getattr(settings, "ROOT_URLCONF", None)
        preload = [urlconf] if urlconf else []
    elif isinstance(preload, str):
        preload = [preload]
    else:
        preload = list(preload)
    if not all(isinstance(m, str) for m in preload):
        raise _improperly_configured(
            "settings.MULTICORE['preload'] must be None or a list of module "
            f"names, not {conf['preload']!r}")
    conf["preload"] = preload
    return conf


def _autoreloader_parent(argv=None):
    """True in the parent process of `manage.py runserver` when it reloads:
    it serves nothing, it restarts the child that does."""
    argv = sys.argv if argv is None else argv
    if len(argv) < 2 or argv[1] != "runserver" or "--noreload" in argv:
        return False
    from django.utils.autoreload import DJANGO_AUTORELOAD_ENV
    return os.environ.get(DJANGO_AUTORELOAD_ENV) != "true"


def autostart_enabled(conf=None):
    """Whether ready() starts the pool in this process (see the module's
    docstring for the rules)."""
    env = os.environ.get("MULTICORE_AUTOSTART", "").strip().lower()
    if env in _TRUE:
        return True
    if env in _FALSE:
        return False
    if env:
        raise _improperly_configured(
            f"MULTICORE_AUTOSTART={os.environ['MULTICORE_AUTOSTART']!r}: "
            f"use one of {', '.join(_TRUE + _FALSE)}")
    conf = get_settings() if conf is None else conf
    if not conf["autostart"]:
        return False
    return not _autoreloader_parent()


def _resolve(value, key):
    if value is None or callable(value):
        return value
    from django.utils.module_loading import import_string
    try:
        return import_string(value)
    except ImportError as e:
        raise _improperly_configured(
            f"settings.MULTICORE[{key!r}] = {value!r} cannot be imported: {e}") from e


def _worker_init(user_init):
    # Runs in each worker before its first task. The parent closed its
    # database connections before forking, so the worker starts with none.
    if user_init is not None:
        user_init()


def _worker_exit(user_exit):
    # Runs in each worker when it leaves at shutdown().
    from django.db import connections
    try:
        if user_exit is not None:
            user_exit()
    finally:
        connections.close_all()


def start(conf=None):
    """Start the pool now, as settings.MULTICORE says: import the preload
    modules, close this process's database connections, initialize().
    Harmless while a pool runs. For MULTICORE_AUTOSTART=0 or
    "autostart": False, e.g. after the test databases were set up, or in a
    server's post-fork hook."""
    global _atexit_registered
    from django.db import connections

    conf = get_settings() if conf is None else conf
    with _lock:
        for module in conf["preload"]:
            import_module(module)
        user_init = _resolve(conf["worker_init"], "worker_init")
        user_exit = _resolve(conf["worker_exit"], "worker_exit")
        # No worker may share a socket with this process: close them all
        # (Django reopens a connection on its next query).
        connections.close_all()
        multicore.initialize(
            workers=conf["workers"],
            worker_init=functools.partial(_worker_init, user_init),
            worker_exit=functools.partial(_worker_exit, user_exit))
        if not _atexit_registered:
            # multicore registers shutdown() at import too; this one runs
            # first (atexit is last in, first out) and is harmless twice.
            atexit.register(stop)
            _atexit_registered = True


def stop():
    """Stop the pool and reap its processes (multicore.shutdown())."""
    multicore.shutdown()
