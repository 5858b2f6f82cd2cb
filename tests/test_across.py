"""analysis.across: random-effects meta-analysis over cells, against statsmodels, metafor's
published BCG example, a dense grid of the restricted likelihood, and the issue-20 defects
(HKSJ collapse, REML local maximum, cells of different metrics pooled)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from statsmodels.stats.meta_analysis import combine_effects

import analysis
from analysis import AnalysisWarning
from analysis.across import coverage_simulation, random_effects, reml_loglik, tau2_reml

pytestmark = [  # statsmodels' sqrt(<0) and its per-sample intervals, neither of them used here
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
    pytest.mark.filterwarnings("ignore:`use_t=True` requires"),
]

Y = np.array([0.01, 0.02, -0.005, 0.015, 0.03, 0.0])
V = np.array([1, 2, 1.5, 0.5, 3, 1]) * 1e-5
HOMOGENEOUS = (np.array([0.010, 0.012, 0.009, 0.011, 0.010, 0.0105]), V)  # tau2 truncated at 0


def _study(rng, effects, n_seeds=5, sd=0.01):
    """Runs of 6 cells (3 tasks x 2 models) where typhoon - random has the given cell means."""
    rows = []
    cells = [(t, m) for t in ("sst2", "mrpc", "cola") for m in ("bert", "roberta")]
    for (task, model), eff in zip(cells, effects, strict=True):
        for s in range(n_seeds):
            base = 0.8 + 0.02 * rng.standard_normal()
            rows.append({"task": task, "model": model, "masker": "random", "seed": s,
                         "value": base})
            rows.append({"task": task, "model": model, "masker": "typhoon", "seed": s,
                         "value": base + eff + sd * rng.standard_normal()})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("y, v", [(Y, V), HOMOGENEOUS])
def test_dl_wald_equals_statsmodels(y, v):
    sm = combine_effects(y, v, method_re="dl", use_t=False)
    # statsmodels leaves DL's tau2 negative when Q < k - 1; the estimator truncates it at 0,
    # where the random-effects summary is the fixed-effect one.
    row = "random effect" if sm.tau2 > 0 else "fixed effect"
    ref = sm.summary_frame().loc[row]
    r = random_effects(y, v, "dl", "wald")
    assert r["estimate"] == pytest.approx(ref["eff"], abs=1e-8)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ref["ci_low"], ref["ci_upp"]), abs=1e-8)
    assert r["tau2"] == pytest.approx(max(sm.tau2, 0.0), abs=1e-12)
    assert r["i2"] == pytest.approx(max(sm.i2, 0.0), abs=1e-10)  # Higgins truncates at 0
    z = r["estimate"] / ref["sd_eff"]
    assert r["p"] == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-10)


@pytest.mark.parametrize("y, v", [(Y, V), HOMOGENEOUS])
def test_pm_and_hksj_equal_statsmodels(y, v):
    sm = combine_effects(y, v, method_re="pm", use_t=True)
    ref = sm.summary_frame().loc["random effect wls"]  # statsmodels' HKSJ: t(k-1), scaled var
    r = random_effects(y, v, "pm", "hksj")
    assert r["tau2"] == pytest.approx(sm.tau2, rel=1e-6, abs=1e-14)
    assert r["estimate"] == pytest.approx(ref["eff"], abs=1e-8)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ref["ci_low"], ref["ci_upp"]), abs=1e-8)
    sm = combine_effects(y, v, method_re="dl", use_t=True)
    dl = sm.summary_frame().loc["random effect wls" if sm.tau2 > 0 else "fixed effect wls"]
    r = random_effects(y, v, "dl", "hksj")
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((dl["ci_low"], dl["ci_upp"]), abs=1e-8)


@pytest.mark.parametrize("y, v", [(Y, V), HOMOGENEOUS])
def test_modified_hksj_is_hksj_with_q_at_least_one(y, v):
    """mHKSJ = statsmodels' HKSJ when q >= 1, else the Wald se with t(k-1) quantiles."""
    plain = random_effects(y, v, "reml", "hksj")
    mod = random_effects(y, v, "reml", "mhksj")
    w = 1 / (v + plain["tau2"])
    q = np.sum(w * (y - plain["estimate"]) ** 2) / (y.size - 1)
    se = np.sqrt(max(1.0, q) / np.sum(w))
    crit = stats.t.ppf(0.975, y.size - 1)
    assert (mod["ci_low"], mod["ci_high"]) == pytest.approx(
        (plain["estimate"] - crit * se, plain["estimate"] + crit * se), rel=1e-12)
    assert mod["p"] == pytest.approx(2 * stats.t.sf(abs(plain["estimate"]) / se, y.size - 1))
    if q >= 1:
        assert mod["ci_low"] == plain["ci_low"]
    else:
        assert mod["ci_high"] - mod["ci_low"] > plain["ci_high"] - plain["ci_low"]


@pytest.mark.parametrize("y, v", [(Y, V), HOMOGENEOUS, (Y * 1e-3, V * 1e-6)])
def test_reml_maximises_the_restricted_likelihood(y, v):
    r = random_effects(y, v, "reml")
    grid = np.linspace(0, 20 * max(np.var(y), v.max()), 20001)
    best = max(grid, key=lambda t: reml_loglik(t, y, v))
    fine = optimize.minimize_scalar(lambda t: -reml_loglik(t, y, v),
                                    bounds=(max(0, best - grid[1]), best + grid[1]),
                                    method="bounded", options={"xatol": 1e-16})
    expected = 0.0 if best == 0 else fine.x
    assert r["tau2"] == pytest.approx(expected, rel=1e-5, abs=1e-6 * v.max())
    # modified HKSJ by hand with the REML weights
    w = 1 / (v + r["tau2"])
    mu = np.sum(w * y) / np.sum(w)
    se = np.sqrt(max(1.0, np.sum(w * (y - mu) ** 2) / (y.size - 1)) / np.sum(w))
    assert r["estimate"] == pytest.approx(mu, abs=1e-12)
    assert r["ci_high"] - mu == pytest.approx(stats.t.ppf(0.975, y.size - 1) * se, rel=1e-9)
    half_pi = stats.t.ppf(0.975, y.size - 2) * np.sqrt(r["tau2"] + se**2)
    assert (r["pi_low"], r["pi_high"]) == pytest.approx((mu - half_pi, mu + half_pi), rel=1e-9)


def test_across_cells_from_runs():
    rng = np.random.default_rng(4)
    runs = _study(rng, [0.01, 0.02, 0.0, 0.015, 0.005, 0.01])
    out = analysis.across_cells(runs, baseline="random", method="dl", interval="wald")
    assert list(out.columns[:5]) == ["treatment", "baseline", "metric", "n_cells", "estimate"]
    r = out.iloc[0]
    assert (r.treatment, r.baseline, r.n_cells, r.method) == ("typhoon", "random", 6, "dl+wald")
    # independent: per-cell means and variances straight from the frame
    wide = runs.pivot_table(index=["task", "model", "seed"], columns="masker", values="value")
    d = (wide["typhoon"] - wide["random"]).groupby(level=[0, 1], sort=False)
    y, v = d.mean().to_numpy(), (d.var(ddof=1) / d.count()).to_numpy()
    ref = combine_effects(y, v, method_re="dl").summary_frame().loc["random effect"]
    assert r.estimate == pytest.approx(ref["eff"], abs=1e-8)
    assert (r.ci_low, r.ci_high) == pytest.approx((ref["ci_low"], ref["ci_upp"]), abs=1e-8)
    default = analysis.across_cells(runs, comparisons=[("typhoon", "random")]).iloc[0]
    assert default.method == "reml+mhksj" and default.level == 0.95 and default.warning == ""


def test_degenerate_and_small_cells_are_left_out_and_named():
    rng = np.random.default_rng(5)
    runs = _study(rng, [0.01] * 6)
    collapsed = (runs.task == "cola") & (runs.model == "bert")
    runs.loc[collapsed, "value"] = 0.5  # both maskers predict one class: zero differences
    runs = runs[~((runs.task == "mrpc") & (runs.model == "roberta") & (runs.seed > 0))]
    with pytest.warns(AnalysisWarning, match="cola/bert left out: zero variance"):
        out = analysis.across_cells(runs, baseline="random")
    r = out.iloc[0]
    assert r.n_cells == 4 and "mrpc/roberta left out: 1 pair(s)" in r.warning


def test_bad_method_is_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        random_effects(Y, V, "sj")


def test_hksj_coverage_beats_dl_with_few_cells():
    """Fast version of the README's table (the slow one below uses 4,000 studies)."""
    c = coverage_simulation(n_sim=400, tau=0.01, seed=1)
    assert c["reml+mhksj"] > 0.9 and c["dl+wald"] < c["reml+mhksj"] - 0.04
    assert c["reml+mhksj"] >= c["reml+hksj"]  # never narrower


@pytest.mark.slow
def test_coverage_table_figures():
    # README, "Across cells": REML + modified HKSJ against DL + Wald
    # (with 5 seeds per cell the within-cell variances are estimates: no interval is exact)
    for tau, lo in ((0.0, 0.90), (0.01, 0.93), (0.02, 0.93)):
        c = coverage_simulation(n_sim=4000, tau=tau, seed=0)
        assert c["reml+mhksj"] > lo and c["dl+wald"] < c["reml+mhksj"] - 0.01


# -- issue 20, section 5 --------------------------------------------------------------------


def _cells(diffs_by_cell, metric_of=None):
    """Runs whose typhoon - random differences per (task, model) cell are the given lists."""
    rows = []
    for (task, model), diffs in diffs_by_cell.items():
        for s, d in enumerate(diffs):
            metric = (metric_of or {}).get(task, "accuracy")
            rows += [{"task": task, "model": model, "masker": "random", "seed": s,
                      "value": 0.8, "metric": metric},
                     {"task": task, "model": model, "masker": "typhoon", "seed": s,
                      "value": 0.8 + d, "metric": metric}]
    return pd.DataFrame(rows)


def test_hksj_does_not_collapse_when_cells_agree():
    """Three cells x 2 seeds with differences {0.01, 0.03} each: plain HKSJ's q is 0, so its
    interval is [0.02, 0.02]; the modified HKSJ keeps max(1, q) = 1."""
    runs = _cells({("a", "m"): [0.01, 0.03], ("b", "m"): [0.01, 0.03], ("c", "m"): [0.01, 0.03]})
    row = analysis.across_cells(runs, baseline="random").iloc[0]
    v = np.var([0.01, 0.03], ddof=1) / 2
    se = np.sqrt(v / 3)  # tau2 = 0, equal weights, q = 0 -> max(1, q) = 1
    crit = stats.t.ppf(0.975, 2)
    assert row.tau2 == 0 and row.estimate == pytest.approx(0.02)
    assert (row.ci_low, row.ci_high) == pytest.approx((0.02 - crit * se, 0.02 + crit * se))
    assert row.p_hksj == pytest.approx(2 * stats.t.sf(0.02 / se, 2))  # 0.074, not 1e-30
    assert row.ci_high - row.ci_low > 0.04
    cell = analysis.compare(runs, baseline="random", n_boot=100).p_ttest
    assert cell.to_numpy() == pytest.approx([stats.ttest_1samp([0.01, 0.03], 0).pvalue] * 3)
    assert cell.iloc[0] == pytest.approx(0.295, abs=1e-3)
    y = np.full(3, 0.02)
    plain = random_effects(y, np.full(3, v), "reml", "hksj")
    assert plain["ci_high"] - plain["ci_low"] == pytest.approx(0, abs=1e-15)  # the defect


LOCAL_Y = np.array([0.010860, -0.029123, -0.021708])
LOCAL_V = np.array([2.5095e-4, 6.3501e-5, 2.8422e-6])


def test_reml_takes_the_global_maximum_at_the_boundary():
    """Fisher scoring from the DL start stopped at tau2 = 1.333e-4 (estimate -0.0186,
    p 0.20); tau2 = 0 has the higher restricted likelihood."""
    assert reml_loglik(0.0, LOCAL_Y, LOCAL_V) > reml_loglik(1.333e-4, LOCAL_Y, LOCAL_V)
    r = random_effects(LOCAL_Y, LOCAL_V)
    assert r["tau2"] == 0.0
    w = 1 / LOCAL_V
    mu = np.sum(w * LOCAL_Y) / np.sum(w)
    q = np.sum(w * (LOCAL_Y - mu) ** 2) / 2
    se = np.sqrt(max(1, q) / np.sum(w))
    assert r["estimate"] == pytest.approx(mu, rel=1e-12) and r["estimate"] == pytest.approx(
        -0.0217, abs=5e-5)
    assert r["p"] == pytest.approx(2 * stats.t.sf(abs(mu) / se, 2), rel=1e-9)
    assert r["p"] == pytest.approx(0.014, abs=5e-4)


def test_reml_is_the_global_maximum_on_random_data():
    """Against a dense log grid of the restricted likelihood on 500 random data sets (the old
    scoring failed on about 1 in 500)."""
    rng = np.random.default_rng(20)
    grid = np.concatenate([[0.0], np.geomspace(1e-12, 1.0, 20001)])
    for _ in range(500):
        k = int(rng.integers(2, 8))
        y = rng.normal(0, 0.02, k)
        v = np.exp(rng.uniform(np.log(1e-6), np.log(1e-3), k))
        t = tau2_reml(y, v)
        assert reml_loglik(t, y, v) >= reml_loglik(grid, y, v).max() - 1e-9
    assert tau2_reml(LOCAL_Y, LOCAL_V) == 0.0


def test_bcg_example_as_published_by_metafor():
    """metafor's documented ``rma(measure="RR", ai=tpos, bi=tneg, ci=cpos, di=cneg,
    data=dat.bcg)`` (REML): tau2 0.3132, estimate -0.7145, se 0.1798, CI [-1.0669, -0.3622];
    with ``test="knha"``: se 0.1808, CI [-1.1084, -0.3206], p 0.0019."""
    tpos, tneg, cpos, cneg = np.array([
        [4, 119, 11, 128], [6, 300, 29, 274], [3, 228, 11, 209], [62, 13536, 248, 12619],
        [33, 5036, 47, 5761], [180, 1361, 372, 1079], [8, 2537, 10, 619],
        [505, 87886, 499, 87892], [29, 7470, 45, 7232], [17, 1699, 65, 1600],
        [186, 50448, 141, 27197], [5, 2493, 3, 2338], [27, 16886, 29, 17825]], float).T
    y = np.log(tpos / (tpos + tneg)) - np.log(cpos / (cpos + cneg))
    v = 1 / tpos - 1 / (tpos + tneg) + 1 / cpos - 1 / (cpos + cneg)
    wald = random_effects(y, v, "reml", "wald")
    assert wald["tau2"] == pytest.approx(0.3132, abs=5e-5)
    assert (wald["estimate"], wald["se"]) == pytest.approx((-0.7145, 0.1798), abs=5e-5)
    assert (wald["ci_low"], wald["ci_high"]) == pytest.approx((-1.0669, -0.3622), abs=5e-5)
    knha = random_effects(y, v, "reml", "mhksj")  # q = 1.01 > 1: modified = plain here
    assert knha["se"] == pytest.approx(0.1808, abs=5e-5)
    assert (knha["ci_low"], knha["ci_high"]) == pytest.approx((-1.1084, -0.3206), abs=5e-5)
    assert knha["p"] == pytest.approx(0.0019, abs=5e-5)


def test_cells_of_different_metrics_are_not_pooled():
    rng = np.random.default_rng(7)
    cells = {(t, m): list(0.01 + 0.01 * rng.standard_normal(4))
             for t in ("sentiment", "lid") for m in ("m1", "m2", "m3")}
    runs = _cells(cells, {"sentiment": "macro_f1", "lid": "weighted_f1"})
    out = analysis.across_cells(runs, baseline="random")
    assert list(out.metric) == ["macro_f1", "weighted_f1"] and list(out.n_cells) == [3, 3]
    for row in out.itertuples():
        task = "sentiment" if row.metric == "macro_f1" else "lid"
        alone = analysis.across_cells(runs[runs.task == task], baseline="random").iloc[0]
        assert (row.estimate, row.ci_low, row.ci_high, row.tau2) == pytest.approx(
            (alone.estimate, alone.ci_low, alone.ci_high, alone.tau2))
