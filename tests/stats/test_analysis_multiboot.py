"""Multibootstrap: the vectorised confusion-matrix route vs a Python loop calling the
metrics module on the same draws; estimates vs the runs' own values; seeding; errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from _analysis_testkit import small_study

from analysis import PairingError, compare, multibootstrap
from analysis._frames import stable_rng
from analysis.metrics import METRICS, confusion_matrix, metric_from_confusion
from analysis.multiboot import (
    example_draws,
    multibootstrap_arrays,
    resample_scores_loop,
)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_metric_from_confusion_equals_metric(metric):
    rng = np.random.default_rng(0)
    k = 3 if metric in ("macro_f1", "accuracy") else 2
    y = rng.integers(0, k, (7, 50))
    p = np.where(rng.random((7, 50)) < 0.6, y, rng.integers(0, k, (7, 50)))
    p[0] = 0  # a degenerate run: one predicted class
    kw = {"num_labels": k} if metric == "macro_f1" else {}
    np.testing.assert_allclose(metric_from_confusion(metric, confusion_matrix(y, p, k)),
                               METRICS[metric](y, p, **kw), atol=1e-14)


@pytest.mark.parametrize("metric", sorted(METRICS))
def test_vectorised_equals_loop_on_same_draws(metric):
    rng = np.random.default_rng(1)
    k = 3 if metric == "macro_f1" else 2
    n, s, b = 120, 4, 300
    y = rng.integers(0, k, n)
    pt = np.where(rng.random((s, n)) < 0.8, y, rng.integers(0, k, (s, n)))
    pb = np.where(rng.random((s, n)) < 0.75, y, rng.integers(0, k, (s, n)))
    res = multibootstrap_arrays(y, pt, pb, metric, n_boot=b, seed=5, key=("task", "x"),
                                num_labels=k)
    ex = np.concatenate(example_draws(5, "task", b, n))
    si = stable_rng(5, "multibootstrap-seeds", "task", "x").integers(0, s, (b, s))
    lt, lb = resample_scores_loop(y, pt, pb, metric, k, si, ex)
    np.testing.assert_allclose(res["deltas"], lt - lb, atol=1e-12)
    kw = {"num_labels": k} if metric == "macro_f1" else {}
    full = METRICS[metric](y[None, :], pt, **kw).mean() - METRICS[metric](y[None, :], pb, **kw).mean()
    assert res["estimate"] == pytest.approx(full, abs=1e-12)
    assert res["ci_low"] == pytest.approx(np.quantile(lt - lb, 0.025), abs=1e-12)
    assert res["p_one_sided"] == pytest.approx(np.mean(lt - lb <= 0))


def test_frame_api_matches_runs_and_is_seeded():
    study = small_study()
    runs, preds = study
    mb = multibootstrap(preds, runs, baseline="none", n_boot=400, seed=2)
    assert len(mb) == 8 and set(mb.metric) == {"f1", "mcc"}
    table = compare(runs, n_boot=100)
    merged = mb.merge(table, on=["task", "model", "treatment", "baseline"], suffixes=("", "_t"))
    # runs' values are the metric of these very predictions, so the estimates coincide
    np.testing.assert_allclose(merged.estimate, merged.estimate_t, atol=1e-12)
    assert (merged.ci_low <= merged.estimate).all() and (merged.estimate <= merged.ci_high).all()
    again = multibootstrap(preds.sample(frac=1, random_state=3), runs, baseline="none",
                           n_boot=400, seed=2)
    pd.testing.assert_frame_equal(mb, again)
    threads = multibootstrap(preds, runs, baseline="none", n_boot=1200, seed=2, n_jobs=2)
    serial = multibootstrap(preds, runs, baseline="none", n_boot=1200, seed=2)
    pd.testing.assert_frame_equal(threads, serial)
    other = multibootstrap(preds, runs, baseline="none", n_boot=400, seed=3)
    assert not np.allclose(other.ci_low, mb.ci_low)


def test_metric_by_task_and_comparisons():
    study = small_study()
    runs, preds = study
    mb = multibootstrap(preds, comparisons=[("typhoon", "random")],
                        metric_by_task={"mrpc": "accuracy", "cola": "accuracy"}, n_boot=200)
    assert set(mb.treatment) == {"typhoon"} and set(mb.baseline) == {"random"}
    assert set(mb.metric) == {"accuracy"}
    with pytest.raises(ValueError, match="no primary metric"):
        multibootstrap(preds, baseline="none", n_boot=10)


def test_bad_predictions_are_refused():
    study = small_study()
    runs, preds = study
    with pytest.raises(ValueError, match="cover"):
        multibootstrap(preds.iloc[1:], runs, baseline="none", n_boot=10)
    bad = preds.copy()
    bad.loc[bad.index[0], "label"] = 1 - bad.loc[bad.index[0], "label"]
    with pytest.raises(ValueError, match="disagree on the label"):
        multibootstrap(bad, runs, baseline="none", n_boot=10)
    with pytest.raises(ValueError, match="lacks column"):
        multibootstrap(preds.drop(columns="label"), runs, n_boot=10)


def test_pairing_audit_applies():
    study = small_study()
    runs, preds = study
    runs = runs.copy()
    runs.loc[runs.index[5], "head_init_fp"] = "different"
    with pytest.raises(PairingError):
        multibootstrap(preds, runs, baseline="none", n_boot=10)
