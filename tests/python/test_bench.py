"""bench/run.py's verdict: the benchmark suite proves that multicore's side
runs, so a peer that fails is a row marked "error" in its tables and the
run still succeeds, while a failure of multicore's own measurements fails
it. The failure is injected with MCBENCH_SIMULATE_CRASH (bench/measure.py):
that library's measuring process dies before it measures, as a peer whose
daemon or session directory vanished would."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_bench(tmp_path, crash, scenarios="a"):
    env = dict(os.environ, MCBENCH_SIMULATE_CRASH=crash)
    out = tmp_path / "q"
    cmd = [sys.executable, os.path.join(ROOT, "bench", "run.py"), "--quick",
           "--scenarios", scenarios, "--libs", "mp_pool", "--no-png",
           "--json", str(out / "q.json"), "--md", str(out / "q.md")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=240)
    data = json.loads((out / "q.json").read_text())
    return r, data, (out / "q.md").read_text()


def test_a_failing_peer_is_reported_and_the_run_passes(tmp_path):
    r, data, md = run_bench(tmp_path, "mp_pool")
    assert r.returncode == 0, r.stdout + r.stderr
    res = data["scenarios"]["a"]["results"]
    assert res["mp_pool"]["error"] == "exit status 3"
    assert "error" not in res["multicore"] and res["multicore"]["p50_us"] > 0
    assert "| mp.Pool | error: exit status 3 |" in md
    assert "Peers that failed" in r.stdout and "mp_pool a: exit status 3" in r.stdout


def test_a_failure_of_multicore_fails_the_run(tmp_path):
    r, data, md = run_bench(tmp_path, "multicore")
    assert r.returncode == 1, r.stdout + r.stderr
    assert data["scenarios"]["a"]["results"]["multicore"]["error"] == "exit status 3"
    assert "FAILED: multicore a: exit status 3" in r.stdout


def test_growth_scenarios_run_and_a_failing_peer_in_them_is_reported(tmp_path):
    # (m) and (n) against mp.Pool, (e) with its copy floors; mp.Pool dies
    # in every one of its children: reported, and multicore's rows are there.
    r, data, md = run_bench(tmp_path, "mp_pool", scenarios="e,m,n")
    assert r.returncode == 0, r.stdout + r.stderr
    sc = data["scenarios"]
    assert sc["m"]["results"]["mp_pool"]["error"] == "exit status 3"
    assert sc["n"]["results"]["mp_pool"] == {"error": "see log"}
    m = sc["m"]["results"]["multicore"]
    assert [x["workers"] for x in m["rows"]] == [1, 2, 8]
    assert all(x["live_workers"] == x["workers"] and x["one_by_one_per_s"] > 0 for x in m["rows"])
    # The target's figures: 2 workers against the most, in alternation.
    pairs = m["pairs"]
    assert pairs["workers"] == 8 and len(pairs["rounds"]) == 1
    rnd = pairs["rounds"][0]
    assert rnd["map_ratio"] == rnd["top"]["map_per_s"] / rnd["two"]["map_per_s"] > 0
    assert pairs["map_ratio"] == rnd["map_ratio"]
    assert "2 workers against 8, alternating rounds" in md
    assert "median of 1 alternating rounds" in md
    n = sc["n"]["results"]["multicore"]
    assert n["parts"]["n"] == 10000 and n["items"]["n"] == 100000
    assert n["parts"]["shm_peak_mib"] > 0
    # Every worker's malloc was warmed for the size, each by its own task.
    e8 = sc["e"]["results"]["multicore"]["8"]
    assert e8["warmed_workers"] == e8["warmed_copy_workers"] == 2
    floors = sc["e"]["results"]["inprocess"]["8"]
    assert floors["send_floor_gb_s"] > 0 and floors["return_warm_floor_gb_s"] > 0
    assert floors["return_build_floor_gb_s"] > 0 and "build floor" in md
    assert "copy floors" in md
    assert "mp_pool e,m: exit status 3" in r.stdout and "mp_pool n: exit status 3" in r.stdout


def test_h_takes_its_targets_from_alternating_rounds(tmp_path):
    # The C scenario: its long runs for the table, then the floors and
    # multicore one after the other, and each target from those rounds.
    r, data, md = run_bench(tmp_path, "mp_pool", scenarios="h")
    assert r.returncode == 0, r.stdout + r.stderr
    h = data["scenarios"]["h"]
    assert {x["name"] for x in h["rows"]} >= {"spin_floor", "futex_floor", "multicore_reused_group"}
    pairs = h["pairs"]
    assert len(pairs["rounds"]) == 1
    rnd = pairs["rounds"][0]
    assert rnd["hot_ratio"] == rnd["hot_ns"] / rnd["spin_ns"] > 0
    assert rnd["sleep_ratio"] == rnd["sleep_ns"] / rnd["futex_sleep_ns"] > 0
    # The floors around the round, and the ratio against their mean.
    assert rnd["spin_ns"] == (rnd["spin_before_ns"] + rnd["spin_after_ns"]) / 2
    steady = max(rnd["spin_before_ns"], rnd["spin_after_ns"]) < \
        pairs["steady_factor"] * min(rnd["spin_before_ns"], rnd["spin_after_ns"])
    assert rnd["steady"] == steady and pairs["steady_rounds"] == int(steady)
    assert pairs["hot_ratio"] == rnd["hot_ratio"]
    assert "and the floors again" in md
    how = "median of 1 steady rounds of 1" if steady else "median of 1 alternating rounds"
    assert f"{rnd['hot_ratio']:.2f}x the spin floor, {how}" in md


def test_h_figures_come_from_the_steady_rounds():
    # A round whose floors moved (the host placed the vCPUs anew during
    # it) compares unlike with unlike: the figure leaves it out, unless no
    # round was steady.
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        from cbench import pair_figures
    finally:
        sys.path.pop(0)

    def rnd(hot, sleep, steady):
        return {"hot_ratio": hot, "sleep_ratio": sleep, "steady": steady}

    got = pair_figures([rnd(1.5, 1.1, True), rnd(9.0, 3.0, False), rnd(1.7, 1.3, True),
                        rnd(0.3, 0.2, False), rnd(1.6, 1.2, True)])
    assert got == {"steady_rounds": 3, "hot_ratio": 1.6, "sleep_ratio": 1.2}
    got = pair_figures([rnd(9.0, 3.0, False), rnd(0.3, 0.2, False), rnd(2.0, 1.0, False)])
    assert got == {"steady_rounds": 0, "hot_ratio": 2.0, "sleep_ratio": 1.0}
