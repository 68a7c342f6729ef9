"""MULTICORE["worker_init"] and ["worker_exit"] of the test site."""

import os

from multicore import worker_id, worker_state


def init():
    worker_state()["init"] = "mcsite.workers.init"


def exit():
    path = os.environ.get("MCSITE_EXIT_LOG")
    if path:
        with open(path, "a") as f:
            f.write(f"{worker_id()} {os.getpid()}\n")
