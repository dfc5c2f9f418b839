"""The joblib backend through joblib's own API (Parallel, delayed,
parallel_backend) and scikit-learn's n_jobs."""

from __future__ import annotations

import os

import numpy as np
import pytest

joblib = pytest.importorskip("joblib")
from joblib import Parallel, delayed  # noqa: E402

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def shoal_backend(ray):
    from shoal.util.joblib import register_shoal

    register_shoal()
    with joblib.parallel_backend("shoal"):
        yield ray


def square(x):
    return x * x


def where(_):
    return os.getpid()


def checksum(a, offset=0):
    return float(a.sum()) + offset, a.flags.writeable


def fail_on(x, bad):
    if x == bad:
        raise KeyError(f"item {x}")
    return x


def nested(n):
    # A Parallel call inside a task runs on joblib's nested backend.
    return sum(Parallel(n_jobs=2)(delayed(square)(i) for i in range(n)))


def test_results_in_order_on_worker_processes(shoal_backend):
    assert Parallel(n_jobs=-1)(delayed(square)(i) for i in range(100)) == [i * i for i in range(100)]
    pids = set(Parallel(n_jobs=2, batch_size=1)(delayed(where)(i) for i in range(20)))
    assert os.getpid() not in pids
    # One job runs here, as with loky.
    assert set(Parallel(n_jobs=1)(delayed(where)(i) for i in range(3))) == {os.getpid()}


def test_n_jobs_minus_one_means_the_runtimes_cpus(shoal_backend):
    assert joblib.effective_n_jobs(-1) == 2
    assert joblib.effective_n_jobs(-2) == 1


def test_errors_surface_with_their_own_type(shoal_backend):
    with pytest.raises(KeyError, match="item 7"):
        Parallel(n_jobs=2)(delayed(fail_on)(i, 7) for i in range(40))
    # The backend is usable after an aborted call.
    assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(5)) == [0, 1, 4, 9, 16]


def test_large_arrays_are_stored_once_and_read_zero_copy(shoal_backend, monkeypatch):
    from shoal.util.joblib import backend

    puts = []
    real_put = backend.api.put
    monkeypatch.setattr(backend.api, "put", lambda value: puts.append(value.nbytes) or real_put(value))
    big = np.arange(1_000_000, dtype=np.float64)  # 8 MB
    other = np.ones(500_000)
    small = np.ones(10)
    out = Parallel(n_jobs=2)(delayed(checksum)(a, i) for i, a in enumerate([big] * 8 + [other, small]))
    assert [o[0] for o in out[:8]] == [float(big.sum()) + i for i in range(8)]
    assert out[8][0] == 500_008.0 and out[9][0] == 19.0
    assert sorted(puts) == [other.nbytes, big.nbytes], "each large array put once, small ones inline"
    assert not any(w for _, w in out[:9]), "large arrays arrive as read-only views of the store"


def test_max_nbytes_none_sends_arrays_with_each_call(shoal_backend, monkeypatch):
    from shoal.util.joblib import backend

    puts = []
    monkeypatch.setattr(backend.api, "put", lambda value: puts.append(value))
    big = np.ones(300_000)
    out = Parallel(n_jobs=2, max_nbytes=None)(delayed(checksum)(big) for _ in range(3))
    assert [o[0] for o in out] == [300_000.0] * 3 and not puts


def test_generator_output_and_nested_parallel(shoal_backend):
    gen = Parallel(n_jobs=2, return_as="generator")(delayed(square)(i) for i in range(10))
    assert list(gen) == [i * i for i in range(10)]
    assert Parallel(n_jobs=2)(delayed(nested)(n) for n in (3, 4)) == [5, 14]


def nested_on_shoal(n):
    return sum(Parallel(n_jobs=2, backend="shoal")(delayed(square)(i) for i in range(n)))


def test_nested_parallel_on_the_shoal_backend_gives_back_the_cpu(shoal_backend):
    # Both CPUs are held by the outer batches, each waiting for inner ones:
    # without giving their CPU back while they wait, this would never end.
    assert Parallel(n_jobs=2, batch_size=1)(delayed(nested_on_shoal)(n) for n in (3, 4)) == [5, 14]


def test_ray_name_registers_the_same_backend(ray):
    from shoal.util.joblib import register_ray

    register_ray()
    with joblib.parallel_backend("ray"):
        assert Parallel(n_jobs=2)(delayed(square)(i) for i in range(4)) == [0, 1, 4, 9]


def test_scikit_learn_grid_search_and_cross_val_score_unchanged(shoal_backend):
    sklearn = pytest.importorskip("sklearn")  # noqa: F841
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, cross_val_score

    X, y = make_classification(n_samples=600, n_features=10, random_state=0)
    grid = GridSearchCV(LogisticRegression(max_iter=200), {"C": [0.1, 1.0, 10.0]}, n_jobs=-1, cv=3).fit(X, y)
    scores = cross_val_score(LogisticRegression(max_iter=200), X, y, n_jobs=-1, cv=3)
    with joblib.parallel_backend("sequential"):
        expected_grid = GridSearchCV(LogisticRegression(max_iter=200), {"C": [0.1, 1.0, 10.0]}, cv=3).fit(X, y)
        expected_scores = cross_val_score(LogisticRegression(max_iter=200), X, y, cv=3)
    assert grid.best_params_ == expected_grid.best_params_
    assert np.allclose(grid.cv_results_["mean_test_score"], expected_grid.cv_results_["mean_test_score"])
    assert np.allclose(scores, expected_scores)
