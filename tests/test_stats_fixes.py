"""Issue 14, "fix first": each test failed on the code before the fix.

Only public functions and column names that survive the comparison-table rename are used
(``mean_diff`` is read through :func:`_estimate`, which also accepts ``estimate``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import analysis
from analysis import AnalysisWarning


def _estimate(row) -> float:
    return float(row["estimate"] if "estimate" in row else row["mean_diff"])


def _runs(diffs: dict, base=None, task="t", model="m", baseline="none") -> pd.DataFrame:
    """Masker k's value for seed i is base[i] + diffs[k][i]."""
    n = max(len(v) for v in diffs.values())
    base = np.linspace(0.70, 0.74, n) if base is None else np.asarray(base, float)
    rows = [{"task": task, "model": model, "masker": baseline, "seed": i, "value": base[i],
             "metric": "f1"} for i in range(n)]
    for masker, d in diffs.items():
        rows += [{"task": task, "model": model, "masker": masker, "seed": i,
                  "value": base[i] + d[i], "metric": "f1"} for i in range(len(d))]
    return pd.DataFrame(rows)


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        return fn(*args, **kw)


@pytest.mark.parametrize("n", [2, 3])
def test_constant_nonzero_differences_are_not_significant(n):
    runs = _runs({"a": [0.01] * n})
    with pytest.warns(AnalysisWarning, match="zero variance"):
        table = analysis.compare(runs, n_boot=200, margin=0.05)
    r = table.iloc[0]
    # the exact tests see n positive differences: p = 2 / 2**n
    assert r.p_wilcoxon == pytest.approx(2.0 ** (1 - n))
    assert r.p_signflip == pytest.approx(2.0 ** (1 - n))
    assert np.isnan(r.p_ttest) and np.isnan(r.p_adj) and not r.significant
    assert pd.isna(r.equivalent)
    assert "t-test and TOST undefined" in r.warning
    assert "0 of 1 comparison significant" in analysis.summary_sentence(table)


def test_scale_of_the_metric_changes_no_p_value():
    d = [0.012, 0.004, 0.02, 0.008, 0.016, 0.004]  # a tie and p_wilcoxon = 0.031
    runs = _runs({"a": d, "b": [0.01] * 6})
    tiny = runs.assign(value=runs["value"] * 1e-12)
    ref = _quiet(analysis.compare, runs, n_boot=300, margin=0.02)
    small = _quiet(analysis.compare, tiny, n_boot=300, margin=0.02e-12)
    assert ref.p_wilcoxon.iloc[0] == pytest.approx(2 / 2**6)  # all six differences positive
    for col in ("p_ttest", "p_wilcoxon", "p_signflip", "p_adj", "p_tost"):
        np.testing.assert_allclose(small[col], ref[col], rtol=1e-6, err_msg=col)
    for col in ("significant", "equivalent"):
        assert list(small[col]) == list(ref[col]), col
    assert _estimate(small.iloc[0]) == pytest.approx(_estimate(ref.iloc[0]) * 1e-12, rel=1e-9)
    assert np.isnan(small.p_ttest.iloc[1])  # the constant one stays undefined, not 0


def test_runs_without_a_seed_are_dropped_and_named():
    runs = _runs({"a": [0.01, 0.02, -0.005, 0.015, 0.01, 0.0, 0.02]})
    extra = pd.DataFrame([
        {"task": "t", "model": "m", "masker": m, "seed": np.nan, "value": 0.5, "metric": "f1",
         "run_id": f"r-{m}"} for m in ("a", "none")])
    runs = pd.concat([runs.assign(run_id=[f"x{i}" for i in range(len(runs))]), extra],
                     ignore_index=True)
    with pytest.warns(AnalysisWarning, match=r"2 run\(s\) without a seed.*r-a, r-none"):
        table = analysis.compare(runs, n_boot=200)
    assert table.n_pairs.iloc[0] == 7


def test_variance_decomposition_of_equal_values_is_nan():
    runs = _runs({"a": [0.0] * 4}, base=[0.1 + 0.2] * 4)
    runs["value"] = [0.1 + 0.2, 0.3] * 4  # equal but for the last bit
    out = analysis.variance_decomposition(runs)
    assert out["share"].isna().all()


def test_all_zero_differences_with_a_margin_are_not_equivalent():
    runs = _runs({"a": [0.0] * 5})
    with pytest.warns(AnalysisWarning, match="collapsed runs"):
        table = analysis.compare(runs, n_boot=200, margin=0.01)
    r = table.iloc[0]
    assert pd.isna(r.equivalent) and np.isnan(r.p_tost)
    assert "zero variance" in r.warning
    summary = analysis.summary_sentence(table)
    assert "equivalent within ±1 pts (TOST, α = 0.05): 0 of 1" in summary
    assert "zero variance" in summary and "collapsed runs" in summary


def test_multibootstrap_without_runs_warns_about_unpaired_seeds():
    rows = []
    for masker, seeds in (("none", [0, 1, 2]), ("a", [0, 1, 2, 3])):
        for s in seeds:
            rows += [{"task": "t", "model": "m", "masker": masker, "seed": s, "example_id": i,
                      "label": i % 2, "prediction": (i + s) % 2} for i in range(20)]
    preds = pd.DataFrame(rows)
    with pytest.warns(AnalysisWarning, match=r"dropped seed\(s\) \[3\]"):
        mb = analysis.multibootstrap(preds, baseline="none", metric_by_task={"t": "accuracy"},
                                     n_boot=50)
    assert mb.n_pairs.iloc[0] == 3


def test_power_table_uses_the_exact_alpha():
    runs = _runs({"a": [0.01, 0.02, -0.005, 0.015, 0.01]})
    table = analysis.compare(runs, n_boot=200)
    pt = analysis.power_table(table)
    assert (pt["alpha"] == 0.05).all()
