"""Evaluation metrics, defined once and used everywhere (training, store, analysis).

Every metric takes integer arrays ``labels`` and ``predictions`` of shape (n,) and returns a
float. They are pure numpy so that ``analysis`` imports without torch, and they accept a
leading batch axis (shape (b, n)) so the multibootstrap can evaluate thousands of resamples
at once without a Python loop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

# Token classification: positions labelled IGNORE_INDEX (later subwords of a word, special
# tokens, padding) carry no label. A token-level metric is the metric over the labelled
# positions only, pooled over all sentences (what the Token Masking reference reports).
IGNORE_INDEX = -100


def _counts(labels: np.ndarray, predictions: np.ndarray, positive: int = 1):
    y = np.asarray(labels)
    p = np.asarray(predictions)
    tp = np.sum((p == positive) & (y == positive), axis=-1).astype(float)
    fp = np.sum((p == positive) & (y != positive), axis=-1).astype(float)
    fn = np.sum((p != positive) & (y == positive), axis=-1).astype(float)
    tn = np.sum((p != positive) & (y != positive), axis=-1).astype(float)
    return tp, fp, fn, tn


def _safe_div(num, den):
    num = np.asarray(num, dtype=float)
    den = np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)
    return out


def accuracy(labels, predictions):
    """Share of exact matches."""
    return np.mean(np.asarray(labels) == np.asarray(predictions), axis=-1)


def f1(labels, predictions):
    """Binary F1 of class 1 (GLUE MRPC's metric); 0 when there are no true or predicted positives."""
    tp, fp, fn, _ = _counts(labels, predictions)
    return _safe_div(2 * tp, 2 * tp + fp + fn)


def macro_f1(labels, predictions, num_labels: int | None = None):
    """Unweighted mean of per-class F1 over the classes 0..num_labels-1.

    ``num_labels`` defaults to the largest class seen plus one; pass it so that a resample
    missing a class still averages over every class (as the full-data metric does).
    """
    y = np.asarray(labels)
    p = np.asarray(predictions)
    k = num_labels if num_labels is not None else int(max(y.max(), p.max())) + 1
    scores = []
    for c in range(k):
        tp, fp, fn, _ = _counts(y, p, positive=c)
        scores.append(_safe_div(2 * tp, 2 * tp + fp + fn))
    return np.mean(np.stack(scores, axis=0), axis=0)


def weighted_f1(labels, predictions, num_labels: int | None = None):
    """Per-class F1 averaged with weights = each class's support (its count in ``labels``).

    Equal to scikit-learn's ``f1_score(average="weighted")``: a class with no true examples
    weighs nothing; 0 when ``labels`` is empty. ``num_labels`` as in :func:`macro_f1`.
    """
    y = np.asarray(labels)
    p = np.asarray(predictions)
    k = num_labels if num_labels is not None else int(max(y.max(), p.max())) + 1
    return metric_from_confusion("weighted_f1", confusion_matrix(y, p, k))


def matthews_corrcoef(labels, predictions):
    """Binary Matthews correlation (GLUE CoLA's metric); 0 when undefined, as scikit-learn does."""
    tp, fp, fn, tn = _counts(labels, predictions)
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return _safe_div(tp * tn - fp * fn, den)


METRICS: dict[str, MetricFn] = {
    "accuracy": accuracy,
    "f1": f1,
    "macro_f1": macro_f1,
    "weighted_f1": weighted_f1,
    "mcc": matthews_corrcoef,
}


PER_CLASS = frozenset({"macro_f1", "weighted_f1"})  # averages over classes: take num_labels


def get_metric(name: str) -> MetricFn:
    try:
        return METRICS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known: {sorted(METRICS)}") from None


def compute_metrics(labels, predictions, primary: str, num_labels: int | None = None,
                    extra: tuple[str, ...] = ()) -> dict:
    """The primary metric, accuracy and the ``extra`` metrics, as plain floats (what every run
    records). Positions labelled ``IGNORE_INDEX`` are left out (token classification)."""
    y, p = np.asarray(labels), np.asarray(predictions)
    keep = y != IGNORE_INDEX
    y, p = y[keep], p[keep]
    out = {"accuracy": float(accuracy(y, p))}
    for name in (primary, *extra):
        fn = get_metric(name)
        out[name] = float(fn(y, p, num_labels) if name in PER_CLASS else fn(y, p))
    return out


# --- confusion-matrix form -------------------------------------------------------------
# The multibootstrap reweights examples, so it needs each metric as a function of the
# confusion matrix, which resampling turns into a weighted count. These agree with the
# label/prediction forms above (tests/stats/test_analysis_multiboot.py checks it).


def confusion_matrix(labels, predictions, num_labels: int) -> np.ndarray:
    """Counts ``cm[..., y, p]``; ``labels``/``predictions`` (..., n) -> (..., K, K)."""
    y = np.asarray(labels)
    p = np.asarray(predictions)
    y, p = np.broadcast_arrays(y, p)
    k = num_labels
    code = y.astype(np.int64) * k + p.astype(np.int64)
    lead = code.shape[:-1]
    flat = code.reshape(-1, code.shape[-1]) + (np.arange(int(np.prod(lead)))[:, None] * k * k)
    counts = np.bincount(flat.ravel(), minlength=flat.shape[0] * k * k)
    return counts.reshape(*lead, k, k).astype(float)


def _binary_from_confusion(cm: np.ndarray, positive: int = 1):
    tp = cm[..., positive, positive]
    fp = cm[..., :, positive].sum(axis=-1) - tp
    fn = cm[..., positive, :].sum(axis=-1) - tp
    tn = cm.sum(axis=(-2, -1)) - tp - fp - fn
    return tp, fp, fn, tn


def metric_from_confusion(name: str, cm: np.ndarray) -> np.ndarray:
    """The metric ``name`` of confusion matrices ``cm`` (..., K, K) -> (...).

    ``macro_f1`` averages over all K classes, i.e. ``macro_f1(..., num_labels=K)``;
    ``weighted_f1`` weighs each class's F1 by its row total (support).
    """
    cm = np.asarray(cm, dtype=float)
    get_metric(name)  # the same unknown-name error everywhere
    if name == "accuracy":
        total = cm.sum(axis=(-2, -1))
        return _safe_div(np.trace(cm, axis1=-2, axis2=-1), total)
    if name == "f1":
        tp, fp, fn, _ = _binary_from_confusion(cm)
        return _safe_div(2 * tp, 2 * tp + fp + fn)
    if name == "mcc":
        tp, fp, fn, tn = _binary_from_confusion(cm)
        return _safe_div(tp * tn - fp * fn, np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    k = cm.shape[-1]
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    fp = cm.sum(axis=-2) - diag
    fn = cm.sum(axis=-1) - diag
    per_class = _safe_div(2 * diag, 2 * diag + fp + fn)
    if name == "weighted_f1":
        support = cm.sum(axis=-1)
        return _safe_div((per_class * support).sum(axis=-1), support.sum(axis=-1))
    return per_class.sum(axis=-1) / k
