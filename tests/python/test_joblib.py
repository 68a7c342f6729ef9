"""The joblib backend "multicore" (multicore.joblib), with real scikit-learn.

Each test closes the backend's own pool at its end, so the conftest's
no-child-left check holds.
"""

import multiprocessing
import os
import time
import warnings

import joblib  # the test extra has joblib and scikit-learn (CI installs it)
import numpy as np
import pytest

import multicore
import multicore.joblib as mcjoblib
from joblib import Parallel, delayed, parallel_config


@pytest.fixture(autouse=True)
def _close_backend_pool():
    yield
    mcjoblib.close()


def own_pids():
    return set(mcjoblib._own[0]._handle._worker_pids())


def pid_and_square(x):
    return os.getpid(), multicore.worker_id(), x * x


def fail_at(x, at):
    if x == at:
        raise KeyError(x)
    return x


def test_results_in_order_on_multicore_workers():
    with parallel_config(backend="multicore", n_jobs=2):
        out = Parallel(batch_size=1)(delayed(pid_and_square)(i) for i in range(20))
    assert [r for _, _, r in out] == [i * i for i in range(20)]
    pids = {p for p, _, _ in out}
    assert os.getpid() not in pids
    assert pids <= own_pids()
    assert {w for _, w, _ in out} <= {0, 1}


def test_exception_type_and_remote_traceback():
    with parallel_config(backend="multicore", n_jobs=2):
        with pytest.raises(KeyError) as info:
            Parallel()(delayed(fail_at)(i, 7) for i in range(30))
    assert info.value.args == (7,)
    assert "fail_at" in str(info.value.__cause__)


def test_lambda_and_function_defined_after_pool_start():
    with parallel_config(backend="multicore", n_jobs=2):
        Parallel()(delayed(abs)(i) for i in range(2))     # pool started
        def local(x):
            return x + 1
        assert Parallel()(delayed(local)(i) for i in range(5)) == [1, 2, 3, 4, 5]
        assert Parallel()(delayed(lambda x: -x)(i) for i in range(3)) == [0, -1, -2]


def wait_for(path, x):
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
    return x


@pytest.mark.parametrize("return_as", ["generator", "generator_unordered"])
def test_generators(return_as, tmp_path):
    gate = str(tmp_path / "gate")
    with parallel_config(backend="multicore", n_jobs=2):
        gen = Parallel(return_as=return_as, batch_size=1)(
            delayed(wait_for)(gate if i == 0 else "/", i) for i in range(6))
        if return_as == "generator_unordered":
            # task 0 waits for a file written only after 5 others came back
            first = sorted(next(gen) for _ in range(5))
            assert first == [1, 2, 3, 4, 5]
            open(gate, "w").close()
            assert list(gen) == [0]
        else:
            open(gate, "w").close()
            assert list(gen) == list(range(6))


def shared_memory_owner(a):
    """Type names along the chain of owners of an array's memory."""
    names = []
    obj = a
    for _ in range(8):
        obj = getattr(obj, "base", None) if not isinstance(obj, memoryview) else obj.obj
        if obj is None:
            break
        names.append(type(obj).__name__)
    return names


def inspect_array(a):
    return shared_memory_owner(a), float(a.sum()), np.arange(100_000.0)


def test_numpy_through_shared_memory():
    big = np.ones(200_000)
    with parallel_config(backend="multicore", n_jobs=2):
        (owners, total, back), = Parallel()(delayed(inspect_array)(big) for _ in [0])
    assert total == 200_000.0
    assert "SharedMemory" in owners            # received as a view, no copy
    assert "SharedMemory" in shared_memory_owner(back)
    assert back[-1] == 99_999.0


def inner_parallel(backend):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = Parallel(n_jobs=2, backend=backend)(delayed(pid_and_square)(j) for j in range(4))
    return out, [str(w.message) for w in caught]


def test_nested_calls_do_not_deadlock():
    with parallel_config(backend="multicore", n_jobs=2):
        default = Parallel()(delayed(inner_parallel)(None) for _ in range(4))
        explicit = Parallel()(delayed(inner_parallel)("multicore") for _ in range(4))
    for out, caught in default:                # joblib's nested default: threads
        assert [r for _, _, r in out] == [0, 1, 4, 9]
        assert len({p for p, _, _ in out}) == 1 and caught == []
    for out, caught in explicit:               # in a worker: sequential
        assert [r for _, _, r in out] == [0, 1, 4, 9]
        assert len({p for p, _, _ in out}) == 1
        assert any("cannot be nested in a multicore worker" in m for m in caught)


def test_timeout_aborts_running_batches():
    start = time.monotonic()
    with parallel_config(backend="multicore", n_jobs=2):
        with pytest.raises(multiprocessing.TimeoutError):   # as joblib raises it
            Parallel(timeout=0.2)(delayed(time.sleep)(30) for _ in range(4))
        # the stopped workers were replaced: the pool still works
        assert Parallel()(delayed(abs)(-i) for i in range(4)) == [0, 1, 2, 3]
    assert time.monotonic() - start < 25


def test_process_wide_pool_is_used_when_running():
    multicore.initialize(workers=2)
    with parallel_config(backend="multicore", n_jobs=-1):
        out = Parallel(batch_size=1)(delayed(pid_and_square)(i) for i in range(8))
    assert {p for p, _, _ in out} <= set(multicore._multicore._worker_pids())
    assert mcjoblib._own is None


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="initializer"):
        Parallel(n_jobs=2, backend="multicore", initializer=print)(
            delayed(abs)(1) for _ in range(2))


# -- scikit-learn -----------------------------------------------------------

from sklearn.datasets import make_classification  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import (GridSearchCV, cross_val_score,  # noqa: E402
                                     cross_validate)


class PidLogisticRegression(LogisticRegression):
    """Remembers the process that fitted it."""

    def fit(self, X, y, sample_weight=None):
        self.fit_pid_ = os.getpid()
        return super().fit(X, y, sample_weight=sample_weight)


def tasks_done():
    return sum(w["tasks_done"] for w in mcjoblib._own[0].stats()["workers"])


def test_sklearn_cross_val_score_and_grid_search_match_n_jobs_1():
    X, y = make_classification(n_samples=300, n_features=20, random_state=0)
    est = LogisticRegression(max_iter=500)
    grid = {"C": [0.01, 0.1, 1.0, 10.0]}
    serial_scores = cross_val_score(est, X, y, cv=5, n_jobs=1)
    serial_grid = GridSearchCV(est, grid, cv=3, n_jobs=1).fit(X, y)

    with parallel_config(backend="multicore", n_jobs=2):
        scores = cross_val_score(est, X, y, cv=5, n_jobs=2)
        done = tasks_done()
        search = GridSearchCV(est, grid, cv=3, n_jobs=2).fit(X, y)
        assert tasks_done() > done             # the grid search ran there too
        fitted = cross_validate(PidLogisticRegression(max_iter=500), X, y, cv=4,
                                n_jobs=2, return_estimator=True)["estimator"]
        pids = own_pids()
    np.testing.assert_array_equal(scores, serial_scores)
    np.testing.assert_array_equal(search.cv_results_["mean_test_score"],
                                  serial_grid.cv_results_["mean_test_score"])
    assert search.best_params_ == serial_grid.best_params_
    assert {e.fit_pid_ for e in fitted} <= pids and os.getpid() not in pids


def blas_threads():
    import threadpoolctl
    return [m["num_threads"] for m in threadpoolctl.threadpool_info()]


def test_inner_thread_pools_limited_as_loky_does():
    assert blas_threads(), "numpy should load a BLAS threadpoolctl sees"
    with parallel_config(backend="multicore", n_jobs=2, inner_max_num_threads=1):
        limited = Parallel()(delayed(blas_threads)() for _ in range(2))
    with parallel_config(backend="multicore", n_jobs=2):
        default = Parallel()(delayed(blas_threads)() for _ in range(2))
    assert all(n == 1 for out in limited for n in out)
    expected = max(joblib.cpu_count() // 2, 1)
    assert all(n == expected for out in default for n in out)
