"""weighted_f1 against scikit-learn's average="weighted", in both its label and confusion forms."""

import numpy as np
from sklearn.metrics import f1_score

from analysis.metrics import confusion_matrix, metric_from_confusion, weighted_f1


def test_weighted_f1_equals_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    for _ in range(200):
        k, n = int(rng.integers(2, 6)), int(rng.integers(1, 40))
        y, p = rng.integers(0, k, n), rng.integers(0, k, n)
        ref = f1_score(y, p, average="weighted", zero_division=0)
        assert abs(weighted_f1(y, p, k) - ref) < 1e-12
        assert abs(metric_from_confusion("weighted_f1", confusion_matrix(y, p, k)) - ref) < 1e-12


def test_weighted_f1_batched_rows_match_row_by_row():
    rng = np.random.default_rng(1)
    y, p = rng.integers(0, 3, (5, 30)), rng.integers(0, 3, (5, 30))
    expected = [f1_score(a, b, average="weighted", zero_division=0) for a, b in zip(y, p, strict=True)]
    np.testing.assert_allclose(weighted_f1(y, p, 3), expected, rtol=0, atol=1e-12)
