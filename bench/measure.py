"""Child process: run some scenarios for ONE library and write JSON.

    python bench/measure.py --lib multicore --scenarios a,b --out r.json [--quick] [--spin-n N]

run.py starts one of these per (scenario, library) (per library with
--quick), so that libraries never share a process: no thread, module,
signal handler or heap state of one can slow down another. The workloads
module is imported before any pool starts (multicore forks at initialize()).
"""

import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import workloads  # noqa: E402,F401  (before any pool starts)
import peers      # noqa: E402
import scenarios  # noqa: E402
import procs      # noqa: E402


class SharedPool:
    """--quick, for a library with a slow start (Ray: seconds): one pool for
    all the scenarios of this child (start() starts it the first time, stop()
    is deferred to close()), which keeps CI short. (Not for every library:
    an mpire pool that ran apply_async() then fails map() with a TypeError.)"""

    def __init__(self, peer):
        self._peer = peer
        self._started = False

    def __getattr__(self, name):
        return getattr(self._peer, name)

    def start(self, workers):
        if not self._started:
            self._peer.start(workers)
            self._started = True

    def stop(self):
        pass

    def close(self):
        if self._started:
            self._started = False
            self._peer.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True, choices=sorted(peers.PEERS))
    ap.add_argument("--scenarios", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--spin-n", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()

    procs.crash_if_simulated(args.lib)
    cls = peers.PEERS[args.lib]
    cfg = scenarios.Config.make(args.quick, args.spin_n)
    out = {"lib": args.lib, "results": {}}
    available, version, error = cls.probe()
    out.update(available=available, version=version, error=error)
    shared = SharedPool(cls()) if args.quick and cls.slow_start else None
    if available:
        for key in args.scenarios.split(","):
            _, fn = scenarios.SCENARIOS[key]
            t0 = time.perf_counter()
            try:
                res = fn(shared or cls(), args.workers, cfg)
                res["wall_s"] = time.perf_counter() - t0
            except Exception as exc:
                traceback.print_exc()
                res = {"error": f"{type(exc).__name__}: {exc}",
                       "wall_s": time.perf_counter() - t0}
            out["results"][key] = res
            # written after every scenario: a later crash keeps earlier figures
            with open(args.out, "w") as f:
                json.dump(out, f)
    if shared is not None:
        shared.close()
    with open(args.out, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
