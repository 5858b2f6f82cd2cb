"""BCa bootstrap vs scipy.stats.bootstrap (same Generator, same draws); power, MDE and
seeds needed vs statsmodels' TTestPower."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import TTestPower

from analysis.bootstrap import (
    bootstrap_ci,
    bootstrap_means,
    bootstrap_means_loop,
    interval_from_boot,
)
from analysis.power import mde, paired_power, power_table, seeds_needed, seeds_needed_curve


@pytest.mark.parametrize("n", [3, 5, 10, 20])
@pytest.mark.parametrize("alpha", [0.05, 0.1])
@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_bootstrap_ci_matches_scipy(n, alpha, method):
    d = np.random.default_rng(n).gamma(2.0, 0.01, n) - 0.015
    mine = bootstrap_ci(d, 4000, alpha, np.random.default_rng(11), method=method)
    ref = stats.bootstrap((d,), np.mean, n_resamples=4000, confidence_level=1 - alpha,
                          method="BCa" if method == "bca" else "percentile",
                          rng=np.random.default_rng(11), vectorized=True)
    ci = ref.confidence_interval
    assert mine == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_batched_intervals_equal_row_by_row():
    rng = np.random.default_rng(0)
    d = rng.normal(size=(6, 7))
    boot = bootstrap_means(d, 500, rng)
    lo, hi = interval_from_boot(d, boot, 0.05, "bca")
    for i in range(6):
        assert (lo[i], hi[i]) == pytest.approx(interval_from_boot(d[i], boot[i], 0.05, "bca"))


def test_bootstrap_seeded_and_no_global_rng():
    d = np.array([0.01, -0.02, 0.015, 0.03, 0.0, 0.012])
    state = np.random.get_state()[1].copy()
    a = bootstrap_ci(d, 2000, rng=np.random.default_rng(5))
    b = bootstrap_ci(d, 2000, rng=np.random.default_rng(5))
    c = bootstrap_ci(d, 2000, rng=np.random.default_rng(6))
    assert a == b and a != c
    assert np.array_equal(np.random.get_state()[1], state)
    with pytest.raises(ValueError, match="Generator"):
        bootstrap_ci(d, 100)


def test_vectorised_means_equal_loop_with_same_draws():
    d = np.random.default_rng(2).normal(size=9)
    vec = bootstrap_means(d, 300, np.random.default_rng(4))
    # the loop draws one row at a time; rows of an (n_boot, n) draw come out identical
    loop = bootstrap_means_loop(d, 300, np.random.default_rng(4))
    np.testing.assert_allclose(vec, loop, atol=1e-15)


def test_bootstrap_small_and_constant():
    assert all(math.isnan(x) for x in bootstrap_ci([0.1, 0.2], rng=np.random.default_rng(0)))
    lo, hi = bootstrap_ci([0.02] * 5, 1000, rng=np.random.default_rng(0))
    assert lo == pytest.approx(0.02) and hi == pytest.approx(0.02)


@pytest.mark.parametrize("n", [2, 3, 5, 10, 30])
@pytest.mark.parametrize("dz", [0.2, 0.8, 1.5])
@pytest.mark.parametrize("alpha", [0.05, 0.01])
def test_power_matches_statsmodels(n, dz, alpha):
    ref = TTestPower().power(effect_size=dz, nobs=n, alpha=alpha, alternative="two-sided")
    if math.isnan(ref):  # scipy's nct.cdf loses the far lower tail; the upper one is the power
        ref = TTestPower().power(effect_size=dz, nobs=n, alpha=alpha / 2, alternative="larger")
    assert paired_power(dz * 0.013, 0.013, n, alpha) == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("n", [3, 5, 10, 20])
def test_mde_matches_statsmodels(n):
    sd = 0.012
    ref = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.05, power=0.8)
    assert mde(sd, n) == pytest.approx(ref * sd, rel=1e-6)
    assert paired_power(mde(sd, n), sd, n) == pytest.approx(0.8, abs=1e-10)


@pytest.mark.parametrize("dz", [0.25, 0.5, 0.8, 1.2, 2.5])
def test_seeds_needed_is_smallest_integer_reaching_power(dz):
    sd = 0.01
    n = int(seeds_needed(dz * sd, sd))
    assert paired_power(dz * sd, sd, n) >= 0.8
    if n > 2:
        assert paired_power(dz * sd, sd, n - 1) < 0.8
    ref = TTestPower().solve_power(effect_size=dz, nobs=None, alpha=0.05, power=0.8)
    assert n == max(2, math.ceil(ref - 1e-9))


def test_power_edge_cases():
    assert math.isnan(paired_power(0.01, 0.0, 5))
    assert math.isnan(paired_power(0.01, 0.01, 1))
    assert math.isnan(mde(0.01, 1)) and math.isnan(mde(0.0, 5))
    assert math.isnan(seeds_needed(0.0, 0.01)) and math.isnan(seeds_needed(0.01, 0.0))


def test_power_table_rows_and_labels():
    import pandas as pd

    table = pd.DataFrame([
        {"task": "t", "model": "m", "treatment": "a", "baseline": "none", "n_pairs": 5,
         "sd": 0.01, "estimate": 0.004, "level": 0.95},
        {"task": "t", "model": "m", "treatment": "b", "baseline": "none", "n_pairs": 1,
         "sd": np.nan, "estimate": 0.002, "level": 0.95},
    ])
    pt = power_table(table)
    assert len(pt) == 8
    assert list(pt["effect_label"][:4]) == ["0.5 pt", "1 pt", "2 pt", "observed"]
    np.testing.assert_allclose(pt["effect_points"][:3], [0.5, 1.0, 2.0])
    assert pt["seeds_needed"].iloc[1] == seeds_needed(0.01, 0.01)
    assert pt["seeds_needed"].iloc[4:].isna().all()


@pytest.mark.parametrize("sd", [0.003, 0.01, 0.03])
def test_seeds_needed_curve_equals_walk_from_two(sd):
    effects = np.geomspace(0.002, 0.05, 25)
    got = seeds_needed_curve(effects, sd)
    for e, n in zip(effects, got, strict=True):
        k = 2
        while paired_power(e, sd, k) < 0.8:
            k += 1
        assert n == k
