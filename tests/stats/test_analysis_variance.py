"""Variance decomposition vs statsmodels' sequential ANOVA and hand-computed group means."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from _analysis_testkit import make_runs, small_study
from statsmodels.stats.anova import anova_lm

from analysis import variance_decomposition


def _one_metric() -> pd.DataFrame:
    """The small study with one metric for both tasks, so every factor is decomposed together."""
    return small_study()[0].assign(metric="score")


def test_matches_statsmodels_type1():
    runs = _one_metric()
    ours = variance_decomposition(runs).set_index("component")
    fit = smf.ols("value ~ C(task) + C(model) + C(task):C(model) + C(masker)"
                  " + C(masker):C(task):C(model) + C(seed):C(task):C(model)", data=runs).fit()
    ref = anova_lm(fit, typ=1)  # patsy puts main effects first; balanced, so order is moot
    names = {"C(task)": "task", "C(model)": "model", "C(task):C(model)": "task:model",
             "C(masker)": "masker", "C(masker):C(task):C(model)": "masker:task:model",
             "C(seed):C(task):C(model)": "seed(task:model)", "Residual": "residual"}
    ref = ref.rename(index=names)
    assert set(ref.index) == set(ours.index)
    np.testing.assert_allclose(ours.loc[ref.index, "sum_sq"], ref["sum_sq"], atol=1e-12)
    np.testing.assert_array_equal(ours.loc[ref.index, "df"], ref["df"].astype(int))
    assert ours["share"].sum() == pytest.approx(1.0)


def test_balanced_sums_of_squares_by_hand():
    runs = _one_metric()
    ours = variance_decomposition(runs).set_index("component")
    y = runs["value"]
    grand = y.mean()

    def ss(cols):
        g = runs.groupby(cols)["value"]
        return float(((g.transform("mean") - grand) ** 2).sum())

    assert ours.loc["task", "sum_sq"] == pytest.approx(ss(["task"]), abs=1e-12)
    assert ours.loc["model", "sum_sq"] == pytest.approx(ss(["model"]), abs=1e-12)
    assert ours.loc["masker", "sum_sq"] == pytest.approx(ss(["masker"]), abs=1e-12)
    cell = ss(["task", "model"])
    assert ours.loc["seed(task:model)", "sum_sq"] == pytest.approx(
        ss(["task", "model", "seed"]) - cell, abs=1e-12)
    assert ((y - grand) ** 2).sum() == pytest.approx(ours["sum_sq"].sum(), abs=1e-12)


def test_single_task_and_constant_values():
    runs = make_runs({"a": [0.01, 0.0, 0.02], "b": [0.0, 0.01, 0.0]})
    vd = variance_decomposition(runs)
    assert "task" not in set(vd.component) and "masker" in set(vd.component)
    const = runs.assign(value=0.5)
    vd = variance_decomposition(const)
    assert vd["share"].isna().all()
    assert isinstance(vd, pd.DataFrame)


def test_unbalanced_matches_nested_statsmodels_fits():
    runs = _one_metric()
    runs = runs.drop(index=[0, 7, 31]).reset_index(drop=True)  # failed runs: unbalanced
    ours = variance_decomposition(runs).set_index("component")
    terms = ["C(task)", "C(model)", "C(task):C(model)", "C(masker)",
             "C(masker):C(task):C(model)", "C(seed):C(task):C(model)"]
    fits = [smf.ols("value ~ 1", data=runs).fit()]
    for i in range(len(terms)):
        fits.append(smf.ols("value ~ " + " + ".join(terms[: i + 1]), data=runs).fit())
    ssr = [f.ssr for f in fits]
    expected = [a - b for a, b in zip(ssr[:-1], ssr[1:], strict=True)] + [ssr[-1]]
    np.testing.assert_allclose(ours["sum_sq"].to_numpy(), expected, atol=1e-10)


def test_metrics_are_decomposed_apart():
    """f1 (mrpc) and mcc (cola) are different units: one decomposition per metric, each
    equal to the single-metric decomposition of its own runs."""
    runs = small_study()[0]
    out = variance_decomposition(runs)
    assert list(pd.unique(out["metric"])) == ["f1", "mcc"]
    for metric, part in out.groupby("metric"):
        alone = variance_decomposition(runs[runs.metric == metric])
        assert "task" not in set(part.component)
        assert part["share"].sum() == pytest.approx(1.0)
        np.testing.assert_allclose(part["sum_sq"], alone["sum_sq"], atol=1e-14)
        sub = runs[runs.metric == metric]
        total = float(((sub.value - sub.value.mean()) ** 2).sum())
        assert part["sum_sq"].sum() == pytest.approx(total, abs=1e-12)
