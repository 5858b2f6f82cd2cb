"""analysis.rate_response / rate_interaction (issue 20 §3): the mixed-model fit against
least squares with seed blocks, the optimum's coverage on synthetic sweeps with a known
optimum, the interaction F-test against statsmodels' nested-model ANOVA."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.anova import anova_lm

from analysis.rate import rate_interaction, rate_response

RATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)


def _sweep(curves: dict, n_seeds=5, seed=0, noise=0.005, rates=RATES, n_params=None):
    """Runs of a rate sweep: model -> true curve f(rate); baseline 'none' is rate 0."""
    rng = np.random.default_rng(seed)
    rows = []
    for model, f in curves.items():
        for s in range(n_seeds):
            b = 0.8 + 0.02 * rng.standard_normal()
            for r in rates:
                rows.append({"task": "sent", "model": model, "seed": s, "rate": r,
                             "masker": "none" if r == 0 else f"p{r}",
                             "sweep": "none" if r == 0 else "random-token", "metric": "macro_f1",
                             "value": b + f(r) + noise * rng.standard_normal(),
                             **({"n_params": n_params[model]} if n_params else {})})
    return pd.DataFrame(rows)


def _hill(opt, height=0.04, width=0.3):
    return lambda r: height * (1 - ((r - opt) / width) ** 2)


def test_fit_equals_least_squares_with_seed_blocks():
    """Balanced design: MixedLM's fixed effects are the within-seed least-squares ones, so the
    optimum is -b1 / (2 b2) of the OLS fit with a dummy per seed."""
    runs = _sweep({"m": _hill(0.2)})
    row = rate_response(runs, n_boot=500).iloc[0]
    fit = smf.ols("value ~ C(seed) + rate + I(rate ** 2)", data=runs).fit()
    b1, b2 = fit.params["rate"], fit.params["I(rate ** 2)"]
    assert row.curve == "quadratic"
    assert row.optimum == pytest.approx(-b1 / (2 * b2), rel=1e-5)
    assert row.gain == pytest.approx(b1 * row.optimum + b2 * row.optimum**2, rel=1e-5)
    assert row.p_curvature == pytest.approx(fit.pvalues["I(rate ** 2)"], rel=1e-3)
    assert row.optimum_low < row.optimum < row.optimum_high
    assert (row.n_seeds, row.n_rates, row.metric, row.baseline) == (5, 6, "macro_f1", "none")


def test_monotone_response_puts_the_optimum_at_the_end():
    runs = _sweep({"m": lambda r: 0.06 * r})
    row = rate_response(runs, n_boot=500).iloc[0]
    assert row.curve == "monotone" and row.optimum == 0.5
    fit = smf.ols("value ~ C(seed) + rate", data=runs).fit()
    assert row.gain == pytest.approx(fit.params["rate"] * 0.5, rel=1e-5)
    forced = rate_response(runs, n_boot=500, shape="quadratic").iloc[0]
    assert forced.curve == "quadratic"


def _coverage(n_studies, seed):
    hits = 0
    for i in range(n_studies):
        row = rate_response(_sweep({"m": _hill(0.2)}, seed=seed + i, noise=0.01), n_boot=1000,
                            seed=i).iloc[0]
        hits += row.optimum_low <= 0.2 <= row.optimum_high
    return hits / n_studies


def test_optimum_interval_covers_the_known_optimum():
    assert _coverage(30, seed=100) >= 0.8


@pytest.mark.slow
def test_optimum_interval_coverage_is_nominal():
    n = 300
    assert _coverage(n, seed=1000) >= 0.95 - 2 * np.sqrt(0.05 * 0.95 / n)


def test_interaction_f_test_equals_nested_anova():
    runs = _sweep({"small": _hill(0.15), "mid": _hill(0.2), "big": _hill(0.3)}, noise=0.01,
                  n_params={"small": 22e6, "mid": 33e6, "big": 110e6})
    out = rate_interaction(runs)
    inter = out[out.term == "rate x model"].iloc[0]
    blocks = "C(model):C(seed) + rate + I(rate ** 2)"
    small = smf.ols(f"value ~ {blocks}", data=runs).fit()
    big = smf.ols(f"value ~ {blocks} + C(model):rate + C(model):I(rate ** 2)", data=runs).fit()
    ref = anova_lm(small, big)
    assert inter.df_num == 4 and inter.df_den == int(ref["df_resid"].iloc[1])
    assert inter.f_stat == pytest.approx(ref["F"].iloc[1], rel=1e-8)
    assert inter.p_interaction == pytest.approx(ref["Pr(>F)"].iloc[1], rel=1e-6)
    assert inter.p_interaction < 1e-6  # the optimum moves: 0.15 / 0.2 / 0.3
    size = out[out.term == "rate x log n_params"].iloc[0]
    runs["logn"] = np.log(runs["n_params"]) - np.log(runs["n_params"]).mean()
    trend = smf.ols(f"value ~ {blocks} + rate:logn + I(rate ** 2):logn", data=runs).fit()
    ref = anova_lm(small, trend)
    assert size.df_num == 2 and size.f_stat == pytest.approx(ref["F"].iloc[1], rel=1e-8)


def test_same_curve_in_every_model_is_no_interaction():
    runs = _sweep({"a": _hill(0.2), "b": _hill(0.2), "c": _hill(0.2)}, noise=0.01, seed=3)
    assert rate_interaction(runs).p_interaction.iloc[0] > 0.05


def test_runs_without_a_rate_are_refused_with_the_fix():
    runs = _sweep({"m": _hill(0.2)}).drop(columns="rate")
    with pytest.raises(ValueError, match="lacks column 'rate'.*study analyze"):
        rate_response(runs)


def test_no_sweep_gives_an_empty_table():
    runs = _sweep({"m": _hill(0.2)}, rates=(0.0, 0.1))
    assert rate_response(runs).empty and rate_interaction(runs).empty
