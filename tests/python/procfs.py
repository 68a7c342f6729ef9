"""Processes as /proc shows them, for the tests' checks that nothing is
left behind (conftest.py's fixtures, dask_cluster.py's process groups)."""

import os


def processes():
    """(pid, fields) of every process, zombies included; fields are those of
    /proc/PID/stat after "pid (comm)" (state, ppid, pgrp, ...): comm may
    hold spaces and parentheses, so the split is at its last ")"."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        yield int(entry), stat[stat.rfind(")") + 2:].split()


def child_pids(pid=None):
    """Pids of the processes whose parent is `pid` (default: this process),
    zombies included."""
    pid = os.getpid() if pid is None else pid
    return [p for p, fields in processes() if len(fields) >= 2 and int(fields[1]) == pid]


def group_members(pgids):
    """Pids of the processes (zombies too) whose process group is in pgids."""
    return [p for p, fields in processes() if len(fields) >= 3 and int(fields[2]) in pgids]


def exited(pid):
    """True once pid has exited: gone from /proc, or a zombie nobody reaped
    yet (an orphan's new parent may reap late; it has still exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"
