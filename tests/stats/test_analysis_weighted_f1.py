"""weighted_f1 against scikit-learn's f1_score(average="weighted"), in every form the harness uses."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics import (
    METRICS,
    compute_metrics,
    confusion_matrix,
    metric_from_confusion,
    weighted_f1,
)

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _reference(y, p, k):
    return sklearn_metrics.f1_score(y, p, average="weighted", labels=list(range(k)), zero_division=0)


@pytest.mark.parametrize("k", [2, 3, 5])
def test_weighted_f1_equals_sklearn(k):
    rng = np.random.default_rng(k)
    for trial in range(20):
        y = rng.choice(k, size=60, p=rng.dirichlet(np.ones(k)))  # imbalanced, some classes may be absent
        p = np.where(rng.random(60) < 0.5, y, rng.integers(0, k, 60))
        if trial == 0:
            p[:] = 0  # one predicted class: F1 of the others is 0
        assert weighted_f1(y, p, num_labels=k) == pytest.approx(_reference(y, p, k), abs=1e-12)
        assert metric_from_confusion("weighted_f1", confusion_matrix(y, p, k)) == pytest.approx(
            _reference(y, p, k), abs=1e-12)


def test_weighted_differs_from_macro_on_imbalanced_data():
    y = np.array([0] * 8 + [1] * 2)
    p = np.array([0] * 8 + [0, 1])
    # class 0: P=8/9, R=1 -> F1=16/17; class 1: P=1, R=1/2 -> F1=2/3; supports 8 and 2
    expected = (8 * 16 / 17 + 2 * 2 / 3) / 10
    assert weighted_f1(y, p) == pytest.approx(expected)
    assert compute_metrics(y, p, "weighted_f1", 2)["weighted_f1"] == pytest.approx(expected)
    assert compute_metrics(y, p, "macro_f1", 2)["macro_f1"] == pytest.approx((16 / 17 + 2 / 3) / 2)


def test_batch_axis_matches_rows():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 4, (6, 40))
    p = rng.integers(0, 4, (6, 40))
    rows = [_reference(y[i], p[i], 4) for i in range(6)]
    np.testing.assert_allclose(weighted_f1(y, p, num_labels=4), rows, atol=1e-12)
    assert "weighted_f1" in METRICS
