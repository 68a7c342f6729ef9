"""Scenario (f), one sample: in a FRESH interpreter, import the library,
start a pool, run one trivial task, stop the pool; print the times as JSON.

    python bench/startup_probe.py --lib multicore [--workers N]

run.py runs it several times per library and keeps every sample, so each
start-up is a cold one in a process that never had a pool.
"""

import argparse
import json
import os
import sys
import time

T_PROCESS = time.perf_counter()
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402  (before any pool starts)
import peers      # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True, choices=sorted(peers.PEERS))
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()
    cls = peers.PEERS[args.lib]

    t0 = time.perf_counter()
    available, version, error = cls.probe()          # the import
    t1 = time.perf_counter()
    if not available:
        print(json.dumps({"available": False, "error": error}))
        return
    peer = cls()
    peer.start(args.workers)
    r = peer.call(workloads.inc, 41)
    t2 = time.perf_counter()
    peer.stop()
    t3 = time.perf_counter()
    if r != 42:
        raise SystemExit(f"wrong result {r!r}")
    print(json.dumps({"available": True, "version": version,
                      "import_s": t1 - t0,
                      "start_to_first_result_s": t2 - t1,
                      "shutdown_s": t3 - t2}))


if __name__ == "__main__":
    main()
