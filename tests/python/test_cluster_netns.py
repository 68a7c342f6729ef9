"""The cluster suite across hosts (issue 14): the scheduler, two workers and
the caller each in a network namespace of its own, joined by veth pairs to
a bridge in a fifth ("hub") namespace. The addresses are 198.18.0.2-5/24
(the range RFC 2544 sets aside for benchmark networks), used only inside
those namespaces: no interface of the machine's own namespace has one, and
no route leads out.

- test_the_cluster_suite_across_hosts runs the cluster suite
  (tests/python/cluster_suite.py) in the caller's namespace against this
  cluster (MULTICORE_TEST_CLUSTER);
- test_worker_link_down_and_back takes a busy worker's link down for a few
  seconds and up again: every task completes, exactly once, and the worker
  is the same process.

Needs root (ip netns, veth, bridge); every process is started in a process
group, ended and reaped, and the namespaces are deleted at the end."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

# This process never imports distributed (see cluster_suite.py's doc):
# whatever talks to the cluster runs in the caller's namespace.
if importlib.util.find_spec("distributed") is None:
    # CI (tests/run_all.sh sets CI=1) installs the test extra: missing there
    # is a failure, not a skip
    if os.environ.get("CI"):
        pytest.fail("needs Dask distributed (pip install 'multicore[dask]')", pytrace=False)
    pytest.skip("needs Dask distributed (pip install 'multicore[dask]')",
                allow_module_level=True)

# The pyasan stage (the extension under AddressSanitizer, preloaded into
# every process) is left out, as run_all.sh leaves out test_typing,
# test_bench and the conformance suites: this suite runs in the python
# stage, and the C code it drives in the workers is only the import.

from conftest import child_pids  # noqa: E402
from dask_cluster import HERE, LocalDaskCluster  # noqa: E402

pytestmark = pytest.mark.timeout(300)

NET = "198.18.0"
OUTAGE_SECONDS = 3.0


def _ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _can_netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return "needs root and iproute2 (ip netns)"
    probe = f"mcprobe{os.getpid()}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"cannot create network namespaces here: {e}"
    return None


class Netns:
    """hub (a bridge) + one namespace per node, each with eth0 on the bridge."""

    def __init__(self, nodes):
        tag = f"mc{os.getpid() % 100000}"
        self.hub = f"{tag}hub"
        self.ns = {node: f"{tag}{node}" for node in nodes}
        self.addr = {node: f"{NET}.{i}" for i, node in enumerate(nodes, start=2)}
        self.hub_link = {node: f"{tag}{node}h" for node in nodes}   # <= 15 chars
        self.made = []

    def up(self):
        _ip("netns", "add", self.hub)
        self.made.append(self.hub)
        _ip("-n", self.hub, "link", "set", "lo", "up")
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        for node, ns in self.ns.items():
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            outer, inner = self.hub_link[node], f"{self.hub_link[node][:-1]}n"
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", outer, "netns", self.hub)
            _ip("link", "set", inner, "netns", ns)
            _ip("-n", ns, "link", "set", inner, "name", "eth0")
            _ip("-n", ns, "addr", "add", f"{self.addr[node]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", self.hub, "link", "set", outer, "master", "br0")
            _ip("-n", self.hub, "link", "set", outer, "up")
        return self

    def exec_prefix(self, node):
        return ["ip", "netns", "exec", self.ns[node]]

    def link(self, node, state):
        _ip("-n", self.hub, "link", "set", self.hub_link[node], state)

    def down(self):
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made = []


@pytest.fixture(scope="module")
def net_cluster(tmp_path_factory):
    why = _can_netns()
    if why:
        if os.environ.get("CI"):          # CI runs as root with iproute2
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    net = Netns(["sched", "w1", "w2", "call"]).up()
    cluster = LocalDaskCluster(tmp_path_factory.mktemp("dask-netns"), n_workers=2)
    try:
        cluster.start_scheduler(prefix=net.exec_prefix("sched"), host=net.addr["sched"])
        for i, node in ((0, "w1"), (1, "w2")):
            cluster.start_worker(i, prefix=net.exec_prefix(node), host=net.addr[node])
        cluster.net = net
        yield cluster
    finally:
        left = cluster.stop()
        net.down()
        assert left == [], f"cluster processes left: {left}"
        assert child_pids() == []


@pytest.fixture(autouse=True)
def _shutdown_and_check_children(net_cluster):
    """conftest's check, with the cluster's own processes allowed."""
    yield
    deadline = time.monotonic() + 2.0
    while True:
        extra = sorted(set(child_pids()) - set(net_cluster.children))
        if not extra or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert extra == [], f"child processes left: {extra}"


def run_in_caller_ns(cluster, args, timeout, env=None):
    full = dict(os.environ, MULTICORE_TEST_CLUSTER=cluster.address, **(env or {}))
    full.pop("MULTICORE_CLUSTER", None)
    return subprocess.run(cluster.net.exec_prefix("call") + args, capture_output=True,
                          text=True, timeout=timeout, env=full, cwd=HERE)


def wait_for_workers_from_caller(cluster):
    code = ("import sys; from distributed import Client\n"
            f"c = Client({cluster.address!r}, timeout=60)\n"
            "c.wait_for_workers(2, timeout=60); print(sorted(c.nthreads())); c.close()\n")
    proc = run_in_caller_ns(cluster, [sys.executable, "-c", code], timeout=120)
    assert proc.returncode == 0, proc.stderr + cluster.log("scheduler") + cluster.log("worker0")
    return proc.stdout


def test_the_cluster_suite_across_hosts(net_cluster):
    workers = wait_for_workers_from_caller(net_cluster)
    assert f"tcp://{NET}.3:" in workers and f"tcp://{NET}.4:" in workers
    proc = run_in_caller_ns(net_cluster, [
        sys.executable, "-m", "pytest", os.path.join(HERE, "cluster_suite.py"), "-q",
        "-p", "no:cacheprovider", "-o", "addopts="], timeout=280)
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    last = proc.stdout.strip().splitlines()[-1]
    assert " passed" in last and "failed" not in last and "skipped" not in last, tail
    assert int(last.split(" passed")[0].split()[-1]) >= 15, tail


CALLER = textwrap.dedent('''
    import json, os, sys, time
    sys.path.insert(0, {modules!r})
    import cluster_tasks, multicore
    from distributed import Client
    directory = {directory!r}

    def wait_for(name, seconds=90):
        deadline = time.monotonic() + seconds
        while not os.path.exists(os.path.join(directory, name)):
            assert time.monotonic() < deadline, name
            time.sleep(0.01)

    multicore.initialize(cluster=os.environ["MULTICORE_TEST_CLUSTER"])
    session = multicore.cluster.active()
    pids = session.client.run(os.getpid)
    busy = multicore.Task()
    busy.run(cluster_tasks.block, directory, "busy", 60.0)
    deadline = time.monotonic() + 30
    while not [f for f in os.listdir(directory) if f.startswith("busy.")]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (name,) = [f for f in os.listdir(directory) if f.startswith("busy.")]
    pid = int(name.split(".")[1])
    worker = [a for a, p in pids.items() if p == pid][0]
    print(json.dumps({{"worker": worker, "pid": pid}}), flush=True)
    # the test takes that worker's link down, then writes link-is-down
    wait_for("link-is-down")
    others = multicore.Task()           # submitted during the outage
    for i in range(6):
        others.run(cluster_tasks.record, directory, f"other{{i}}")
    wait_for("link-is-back")
    with open(os.path.join(directory, "busy.release"), "w"):
        pass
    print(json.dumps({{"busy": busy.get(timeout=60), "others": others.get(timeout=60),
                      "pids_after": session.client.run(os.getpid)}}), flush=True)
    multicore.shutdown()
''')


def test_worker_link_down_and_back(net_cluster, tmp_path):
    wait_for_workers_from_caller(net_cluster)
    script = tmp_path.parent / f"{tmp_path.name}-caller.py"
    script.write_text(CALLER.format(modules=os.path.join(HERE, "cluster_modules"),
                                    directory=str(tmp_path)))
    full = dict(os.environ, MULTICORE_TEST_CLUSTER=net_cluster.address)
    proc = subprocess.Popen(net_cluster.net.exec_prefix("call") + [sys.executable, str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=full, cwd=HERE)
    try:
        first = json.loads(proc.stdout.readline())
        node = {f"{NET}.3": "w1", f"{NET}.4": "w2"}[first["worker"].split("//")[1].split(":")[0]]
        net_cluster.net.link(node, "down")
        try:
            (tmp_path / "link-is-down").write_text("")
            time.sleep(OUTAGE_SECONDS)     # the outage itself
        finally:
            net_cluster.net.link(node, "up")
        (tmp_path / "link-is-back").write_text("")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["busy"] == [["busy", first["pid"]]]
    assert [tag for tag, _ in result["others"]] == [f"other{i}" for i in range(6)]
    assert first["pid"] in result["pids_after"].values()      # the same worker process
    names = os.listdir(tmp_path)
    assert len([n for n in names if n.startswith("busy.") and n.split(".")[1].isdigit()]) == 1
    for i in range(6):
        assert len([n for n in names if n.startswith(f"other{i}.")]) == 1
