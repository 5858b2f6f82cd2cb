"""analysis.across: random-effects meta-analysis over cells, against statsmodels and a
numerical maximisation of the restricted likelihood."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats
from statsmodels.stats.meta_analysis import combine_effects

import analysis
from analysis import AnalysisWarning
from analysis.across import coverage_simulation, random_effects, reml_loglik

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
    r = random_effects(y, v, "dl", hksj=False)
    assert r["estimate"] == pytest.approx(ref["eff"], abs=1e-8)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ref["ci_low"], ref["ci_upp"]), abs=1e-8)
    assert r["tau2"] == pytest.approx(max(sm.tau2, 0.0), abs=1e-12)
    assert r["i2"] == pytest.approx(max(sm.i2, 0.0), abs=1e-10)  # Higgins truncates at 0
    z = r["estimate"] / ref["sd_eff"]
    assert r["p_val"] == pytest.approx(2 * stats.norm.sf(abs(z)), abs=1e-10)


@pytest.mark.parametrize("y, v", [(Y, V), HOMOGENEOUS])
def test_pm_and_hksj_equal_statsmodels(y, v):
    sm = combine_effects(y, v, method_re="pm", use_t=True)
    ref = sm.summary_frame().loc["random effect wls"]  # statsmodels' HKSJ: t(k-1), scaled var
    r = random_effects(y, v, "pm", hksj=True)
    assert r["tau2"] == pytest.approx(sm.tau2, rel=1e-6, abs=1e-14)
    assert r["estimate"] == pytest.approx(ref["eff"], abs=1e-8)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ref["ci_low"], ref["ci_upp"]), abs=1e-8)
    sm = combine_effects(y, v, method_re="dl", use_t=True)
    dl = sm.summary_frame().loc["random effect wls" if sm.tau2 > 0 else "fixed effect wls"]
    r = random_effects(y, v, "dl", hksj=True)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((dl["ci_low"], dl["ci_upp"]), abs=1e-8)


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
    # HKSJ by hand with the REML weights
    w = 1 / (v + r["tau2"])
    mu = np.sum(w * y) / np.sum(w)
    se = np.sqrt(np.sum(w * (y - mu) ** 2) / (y.size - 1) / np.sum(w))
    assert r["estimate"] == pytest.approx(mu, abs=1e-12)
    assert r["ci_high"] - mu == pytest.approx(stats.t.ppf(0.975, y.size - 1) * se, rel=1e-9)
    half_pi = stats.t.ppf(0.975, y.size - 2) * np.sqrt(r["tau2"] + se**2)
    assert (r["pi_low"], r["pi_high"]) == pytest.approx((mu - half_pi, mu + half_pi), rel=1e-9)


def test_across_cells_from_runs():
    rng = np.random.default_rng(4)
    runs = _study(rng, [0.01, 0.02, 0.0, 0.015, 0.005, 0.01])
    out = analysis.across_cells(runs, baseline="random", method="dl", hksj=False)
    assert list(out.columns[:4]) == ["treatment", "baseline", "n_cells", "estimate"]
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
    assert default.method == "reml+hksj" and default.level == 0.95 and default.warning == ""


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
    assert c["reml+hksj"] > 0.9 and c["dl+wald"] < c["reml+hksj"] - 0.04


@pytest.mark.slow
def test_coverage_table_figures():
    # README, "Across cells": 0.915 / 0.937 / 0.947 for REML-HKSJ, 0.898 / 0.860 / 0.867 for DL
    # (with 5 seeds per cell the within-cell variances are estimates: no interval is exact)
    for tau, lo in ((0.0, 0.90), (0.01, 0.93), (0.02, 0.93)):
        c = coverage_simulation(n_sim=4000, tau=tau, seed=0)
        assert c["reml+hksj"] > lo and c["dl+wald"] < c["reml+hksj"] - 0.01
