#!/usr/bin/env python3
"""Scenario (i): a scikit-learn grid search, joblib's multicore backend
against its default loky backend, in the same run.

    python bench/joblib_grid.py            # ~1 minute on 2 cores
    python bench/joblib_grid.py --quick    # CI: tiny grid, one repetition (~10 s)
    python bench/joblib_grid.py --json PATH

GridSearchCV(LogisticRegression) over a grid of C values, n_jobs=workers,
under parallel_config(backend=...) for "loky" and "multicore" in turn; each
backend's workers are warmed up by one search first, then the search is
timed `reps` times and the best kept (other load on the machine only ever
slows a run down), every sample kept in the JSON. The scores must equal
those of n_jobs=1 for every backend (checked, as the other scenarios check
their results). Printed: seconds per search and the ratio loky / multicore
(above 1: multicore is faster). Both backends' pools are stopped at the end.
"""

import argparse
import json
import os
import sys
import time


def search(backend, n_jobs, X, y, grid):
    import joblib
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    with joblib.parallel_config(backend=backend, n_jobs=n_jobs):
        gs = GridSearchCV(LogisticRegression(max_iter=300), grid, cv=4, n_jobs=n_jobs)
        t0 = time.perf_counter()
        gs.fit(X, y)
        return time.perf_counter() - t0, list(gs.cv_results_["mean_test_score"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny grid, one repetition (CI)")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import numpy as np
    from sklearn.datasets import make_classification
    import multicore.joblib as mcjoblib
    from joblib.externals.loky import get_reusable_executor

    n_samples, n_c, reps = (400, 6, 1) if args.quick else (2000, 24, 3)
    X, y = make_classification(n_samples=n_samples, n_features=30, random_state=0)
    grid = {"C": list(np.logspace(-3, 2, n_c))}
    _, want = search("sequential", 1, X, y, grid)

    out = {"scenario": "i", "title": "scikit-learn grid search (joblib backend)",
           "workers": args.workers, "fits": 4 * n_c, "quick": args.quick, "results": {}}
    try:
        for backend in ("loky", "multicore"):
            search(backend, args.workers, X, y, grid)          # warm-up
            times = []
            for _ in range(reps):
                dt, got = search(backend, args.workers, X, y, grid)
                if got != want:
                    raise AssertionError(f"{backend}: scores {got} differ from n_jobs=1 {want}")
                times.append(dt)
            out["results"][backend] = {"seconds": times, "best_s": min(times)}
    finally:
        mcjoblib.close()
        get_reusable_executor().shutdown(wait=True)

    loky, mc = out["results"]["loky"]["best_s"], out["results"]["multicore"]["best_s"]
    out["ratio_loky_over_multicore"] = loky / mc
    print(f"(i) {out['title']}: {out['fits']} fits, {args.workers} workers"
          + (" (QUICK RUN: figures are not meaningful)" if args.quick else ""))
    print(f"    loky      {loky:8.3f} s")
    print(f"    multicore {mc:8.3f} s")
    print(f"    loky / multicore = {loky / mc:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
