"""A real Dask cluster for the tests: a `dask scheduler` process and `dask
worker --nthreads 1` processes (each a nanny that runs the worker process),
started on 127.0.0.1, every one in a process group of its own so that
stop() can end it with everything it started and check that nothing is
left. tests/python/cluster_modules is the workers' PYTHONPATH; the
scheduler gets none (it must not need the user's modules)."""

import json
import os
import signal
import subprocess
import sys
import time

from procfs import exited, group_members

HERE = os.path.dirname(os.path.abspath(__file__))
TASK_MODULES = os.path.join(HERE, "cluster_modules")
START_TIMEOUT = 60.0


def _alive(pid):
    """Not exited (see procfs.exited)."""
    return not exited(pid)


def _wait_exited(pids, timeout):
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in pids if _alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


class LocalDaskCluster:
    """scheduler + n workers. The processes it starts are this process's
    children: self.children."""

    def __init__(self, workdir, n_workers=2, prefix=(), env=None, host="127.0.0.1"):
        self.workdir = str(workdir)
        self.n_workers = n_workers
        self.prefix = list(prefix)        # e.g. ["ip", "netns", "exec", "ns1"]
        self.env = dict(os.environ if env is None else env)
        self.env.pop("MULTICORE_CLUSTER", None)
        self.host = host
        self.scheduler = None
        self.workers = []
        self.address = None
        self.scheduler_file = os.path.join(self.workdir, "scheduler.json")

    @property
    def children(self):
        return [p.pid for p in [self.scheduler, *self.workers] if p is not None]

    def _popen(self, name, args, env):
        log = open(os.path.join(self.workdir, f"{name}.log"), "wb")
        try:
            proc = subprocess.Popen(self.prefix + args, stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=self.workdir,
                                    start_new_session=True)
        finally:
            log.close()
        # for kill_groups() by whoever started this process, should it die
        with open(os.path.join(self.workdir, "pgids"), "a") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def start_scheduler(self, prefix=None, host=None):
        env = dict(self.env)
        env.pop("PYTHONPATH", None)
        saved = self.prefix
        if prefix is not None:
            self.prefix = list(prefix)
        try:
            self.scheduler = self._popen("scheduler", [
                sys.executable, "-m", "dask", "scheduler", "--host", host or self.host,
                "--port", "0", "--no-dashboard", "--scheduler-file", self.scheduler_file], env)
        finally:
            self.prefix = saved
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.scheduler_file):
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the dask scheduler did not start:\n" + self.log("scheduler"))
            time.sleep(0.05)
        while True:
            try:
                with open(self.scheduler_file) as f:
                    self.address = json.load(f)["address"]
                break
            except (ValueError, KeyError):    # being written
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def start_worker(self, i, prefix=None, host=None):
        env = dict(self.env)
        env["PYTHONPATH"] = TASK_MODULES
        saved = self.prefix
        if prefix is not None:
            self.prefix = list(prefix)
        try:
            proc = self._popen(f"worker{i}", [
                sys.executable, "-m", "dask", "worker", self.address, "--nthreads", "1",
                "--nanny", "--no-dashboard", "--host", host or self.host,
                "--name", f"w{i}", "--death-timeout", "60",
                "--local-directory", os.path.join(self.workdir, f"w{i}")], env)
        finally:
            self.prefix = saved
        self.workers.append(proc)
        return proc

    def start(self):
        self.start_scheduler()
        for i in range(self.n_workers):
            self.start_worker(i)
        self.wait_for_workers(self.n_workers)
        return self

    def client(self, **kwargs):
        from distributed import Client
        return Client(self.address, set_as_default=False, **kwargs)

    def wait_for_workers(self, n, timeout=START_TIMEOUT, gone=()):
        """Until exactly n workers are running (after a kill: the nanny's
        new worker registered and the dead one removed), none of them at
        an address in `gone`: right after a kill the scheduler can still
        list the dead worker as running next to the other one (n, too
        early), so a test that killed one names it."""
        with self.client() as c:
            deadline = time.monotonic() + timeout
            while True:
                info = c.scheduler_info(n_workers=-1)["workers"]
                running = [w for w in info.values() if w.get("status") == "running"]
                if len(info) == n and len(running) == n and not set(info) & set(gone):
                    return sorted(info)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{len(info)} workers, not {n}:\n" +
                                       "\n".join(self.log(f"worker{i}")
                                                 for i in range(len(self.workers))))
                time.sleep(0.1)

    def worker_pids(self):
        """{address: pid} of the worker processes."""
        import os as _os
        with self.client() as c:
            return c.run(_os.getpid)

    def log(self, name):
        try:
            with open(os.path.join(self.workdir, f"{name}.log"), "rb") as f:
                return f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        """End every process the cluster started (SIGTERM, then SIGKILL
        after 10 s), reap them, and return the pids still alive in their
        process groups (must be [])."""
        procs = [p for p in [*self.workers, self.scheduler] if p is not None]
        pgids = {p.pid for p in procs}
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10.0
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        if _wait_exited(group_members(pgids), max(0.1, deadline - time.monotonic())):
            for pgid in pgids:
                try:
                    os.killpg(pgid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in procs:
            p.wait(10)
        left = _wait_exited(group_members(pgids), 5.0)
        self.scheduler, self.workers = None, []
        return left


def kill_groups(workdir):
    """SIGKILL the process groups a LocalDaskCluster in workdir started
    (its owner was killed before stop()); returns their pgids."""
    try:
        with open(os.path.join(workdir, "pgids")) as f:
            pgids = [int(line) for line in f if line.strip()]
    except OSError:
        return []
    for pgid in pgids:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pgids


class ExternalCluster(LocalDaskCluster):
    """A cluster someone else started (the netns suite: in other network
    namespaces); only its address is known here, and no process of it is a
    child of this one."""

    def __init__(self, address):
        super().__init__(workdir=".", n_workers=0)
        self.address = address

    @property
    def children(self):
        return []

    def start(self):
        return self

    def stop(self):
        return []
