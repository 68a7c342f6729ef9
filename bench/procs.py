"""Processes: CPU time from /proc/<pid>/stat, descendants, stray reaping.

Works without psutil (it only reads /proc); psutil is not needed.
"""

import ctypes
import os
import signal
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PR_SET_CHILD_SUBREAPER = 36


def _stat_fields(pid):
    """Fields of /proc/<pid>/stat after the command name, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces or ')'.
    return data[data.rindex(b")") + 2:].split()


def ppid_of(pid):
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def cpu_ticks(pid):
    """utime + stime of a process (all its threads), in clock ticks."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # fields[0] is the state (stat field 3): utime is field 14, stime 15.
    return int(fields[11]) + int(fields[12])


def comm_of(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def cmdline_of(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(root):
    """Every live process below root (a ppid walk over /proc)."""
    children = {}
    for pid in all_pids():
        ppid = ppid_of(pid)
        if ppid is not None:
            children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def make_subreaper():
    """Orphans of our descendants are re-parented to us, so that processes a
    library leaves behind are seen (and reaped) instead of escaping to init."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except OSError:
        return False


def reap_strays(grace=2.0):
    """Find processes still below us, wait up to grace seconds for them to
    leave, then kill and reap the rest. Returns [(pid, comm, cmdline)] of the
    ones that had to be killed."""
    deadline = time.monotonic() + grace
    me = os.getpid()
    while True:
        _reap_zombies()
        left = descendants(me)
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    strays = [(pid, comm_of(pid), cmdline_of(pid)[:200]) for pid in left]
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.05)
    _reap_zombies()
    return strays


def _reap_zombies():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def cpu_times():
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)          # idle + iowait
    total = sum(v[:8])                                  # guest time is inside user
    return total - idle, total


def children_cpu_s():
    """CPU seconds (user + system) of our waited-for children and theirs."""
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_quiet(max_busy=0.15, sample=0.5, give_up=30.0):
    """Wait until the machine is nearly idle (all CPUs busy less than max_busy
    over a sample), at most give_up seconds. Returns the last busy fraction."""
    deadline = time.monotonic() + give_up
    while True:
        b0, t0 = cpu_times()
        time.sleep(sample)
        b1, t1 = cpu_times()
        busy = (b1 - b0) / max(1, t1 - t0)
        if busy < max_busy or time.monotonic() >= deadline:
            return busy


def cpu_ns(pid):
    """CPU time of a process's live threads in nanoseconds, from
    /proc/<pid>/task/*/schedstat (finer than the 10 ms ticks of stat), or
    None if unavailable."""
    total, seen = 0, False
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
                seen = True
        except (OSError, ValueError, IndexError):
            pass
    return total if seen else None


def ctxt_switches(pid):
    """Voluntary + involuntary context switches of a process's main thread
    (/proc/<pid>/status), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            n = 0
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    n += int(line.split()[1])
            return n
    except (OSError, ValueError):
        return None


def crash_if_simulated(lib):
    """MCBENCH_SIMULATE_CRASH=mp_pool,...: a measuring child for one of these
    libraries dies before measuring, as a peer whose daemon or session
    directory vanished would (tests the path where a peer fails: reported,
    and the run goes on)."""
    if lib in os.environ.get("MCBENCH_SIMULATE_CRASH", "").split(","):
        print(f"{lib}: simulated crash (MCBENCH_SIMULATE_CRASH)", file=sys.stderr)
        os._exit(3)
