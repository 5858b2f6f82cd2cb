"""Paired tests and intervals vs independent references: closed forms, brute-force
enumeration of all 2**n sign patterns, scipy and statsmodels."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from analysis.paired import (
    holm,
    min_exact_p,
    signflip_test,
    tost_paired,
    ttest_paired,
    wilcoxon_exact,
)

CASES = [
    np.array([0.012, -0.004, 0.021, 0.007, 0.015]),
    np.array([0.003, 0.001, -0.002, 0.004, 0.006, 0.002, -0.001, 0.005]),
    np.random.default_rng(3).normal(0.004, 0.01, 12),
    np.random.default_rng(4).standard_t(3, 20) * 0.01,
]


def brute_signflip(d):
    d = np.asarray(d, float)
    obs = abs(d.sum())
    hits = sum(abs(np.dot(s, d)) >= obs - 1e-12 for s in itertools.product((1, -1), repeat=d.size))
    return hits / 2**d.size


def brute_wilcoxon(d, zero_method="wilcox"):
    """Enumerate every sign pattern of the (mid)ranks; two-sided p of W+ around its centre."""
    d = np.round(np.asarray(d, float), 12)
    if zero_method == "wilcox":
        d = d[d != 0]
        r = stats.rankdata(np.abs(d))
    else:
        r = stats.rankdata(np.abs(d))
        r, d = r[d != 0], d[d != 0]
    if d.size == 0:
        return 1.0
    centre = r.sum() / 2
    w_obs = r[d > 0].sum()
    hits = 0
    for signs in itertools.product((0, 1), repeat=d.size):
        w = np.dot(signs, r)
        hits += abs(w - centre) >= abs(w_obs - centre) - 1e-9
    return hits / 2**d.size


@pytest.mark.parametrize("d", CASES)
def test_ttest_and_interval_closed_form(d):
    n = d.size
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    p = 2 * stats.t.sf(abs(t), n - 1)
    q = stats.t.ppf(0.975, n - 1)
    r = ttest_paired(d, alpha=0.05)
    assert r["t"] == pytest.approx(t, abs=1e-10)
    assert r["p"] == pytest.approx(p, abs=1e-10)
    assert r["ci_low"] == pytest.approx(mean - q * sd / math.sqrt(n), abs=1e-12)
    assert r["ci_high"] == pytest.approx(mean + q * sd / math.sqrt(n), abs=1e-12)
    # and scipy's paired test on two samples with these differences
    base = np.linspace(0.6, 0.7, n)
    ref = stats.ttest_rel(base + d, base)
    assert r["p"] == pytest.approx(ref.pvalue, abs=1e-8)
    ci = ref.confidence_interval(0.95)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), abs=1e-8)


def test_ttest_level_follows_alpha():
    d = CASES[2]
    r90, r99 = ttest_paired(d, 0.10), ttest_paired(d, 0.01)
    assert r90["ci_high"] - r90["ci_low"] < r99["ci_high"] - r99["ci_low"]
    q = stats.t.ppf(0.95, d.size - 1)
    assert r90["ci_high"] - r90["mean"] == pytest.approx(q * d.std(ddof=1) / np.sqrt(d.size))


def test_ttest_degenerate_cases():
    r = ttest_paired([0.01])
    assert r["mean"] == 0.01 and np.isnan(r["p"]) and np.isnan(r["ci_low"])
    r = ttest_paired([0.0, 0.0, 0.0])
    assert np.isnan(r["p"]) and np.isnan(r["t"]) and r["sd"] == 0
    r = ttest_paired([0.01, 0.01, 0.01, 0.01])
    assert np.isnan(r["p"]) and np.isnan(r["t"]) and np.isnan(r["ci_low"])  # issue 14: undefined
    assert r["degenerate"] and r["sd"] == 0
    r = ttest_paired([0.01, 0.03])  # n = 2: df = 1, a valid (very wide) test
    assert r["df"] == 1 and 0 < r["p"] < 1


@pytest.mark.parametrize("d", CASES[:3])
def test_signflip_exact_vs_enumeration(d):
    p, method = signflip_test(d)
    assert method == "exact"
    assert p == pytest.approx(brute_signflip(d), abs=1e-12)


def test_signflip_vs_scipy_permutation_test():
    d = CASES[1]
    ref = stats.permutation_test((d,), lambda x, axis: np.sum(x, axis=axis),
                                 permutation_type="samples", n_resamples=np.inf, vectorized=True)
    assert signflip_test(d)[0] == pytest.approx(ref.pvalue, abs=1e-12)


def test_signflip_floor_at_n5_and_zero_differences():
    assert signflip_test([0.01, 0.02, 0.005, 0.03, 0.011])[0] == pytest.approx(0.0625, abs=1e-12)
    assert min_exact_p(5) == 0.0625
    assert signflip_test([0.0] * 5)[0] == 1.0
    # zero differences flip to themselves: the exact law counts them twice, p unchanged
    assert signflip_test([0.01, 0.02, 0.0])[0] == pytest.approx(brute_signflip([0.01, 0.02, 0.0]))


def test_signflip_monte_carlo_matches_exact_and_is_seeded():
    d = np.random.default_rng(9).normal(0.003, 0.01, 22)
    exact, m = signflip_test(d, max_exact=22)
    assert m == "exact"
    p1, m1 = signflip_test(d, rng=np.random.default_rng(1), n_perm=20_000)
    p2, _ = signflip_test(d, rng=np.random.default_rng(1), n_perm=20_000)
    assert m1 == "monte_carlo" and p1 == p2
    assert abs(p1 - exact) < 4 * math.sqrt(exact * (1 - exact) / 20_000) + 1e-4
    with pytest.raises(ValueError, match="rng"):
        signflip_test(d)


@pytest.mark.parametrize("d", CASES[:3])
def test_wilcoxon_exact_vs_enumeration(d):
    assert wilcoxon_exact(d) == pytest.approx(brute_wilcoxon(d), abs=1e-12)


@pytest.mark.parametrize("d", [CASES[0], CASES[2], CASES[3]])
def test_wilcoxon_exact_vs_scipy_without_ties(d):
    # scipy's exact law ignores ties, so it is a reference only for tie-free data
    ref = stats.wilcoxon(d, method="exact")
    assert wilcoxon_exact(d) == pytest.approx(ref.pvalue, abs=1e-12)


@pytest.mark.parametrize(
    "d",
    [
        [0.01, 0.01, -0.01, 0.02, 0.03, 0.0],  # ties and a zero
        [0.005, -0.005, 0.005, 0.0, 0.0, 0.01, 0.02],
        [0.84 - 0.83, 0.83 - 0.82, 0.02, -0.01],  # float ties: 0.010000000000000009 vs 0.01
    ],
)
def test_wilcoxon_ties_and_zeros_vs_enumeration(d):
    for zm in ("wilcox", "pratt"):
        assert wilcoxon_exact(d, zm) == pytest.approx(brute_wilcoxon(d, zm), abs=1e-12)


def test_wilcoxon_edge_cases():
    assert wilcoxon_exact([0.0, 0.0, 0.0]) == 1.0
    assert wilcoxon_exact([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx(0.0625, abs=1e-12)
    with pytest.raises(ValueError):
        wilcoxon_exact([0.1, 0.2], zero_method="zsplit")


@pytest.mark.parametrize("margin", [0.005, 0.01, 0.03])
@pytest.mark.parametrize("d", CASES)
def test_tost_vs_statsmodels(d, margin):
    base = np.linspace(0.5, 0.6, d.size)
    ref = ttost_paired(base + d, base, -margin, margin)[0]
    assert tost_paired(d, margin) == pytest.approx(ref, abs=1e-8)


def test_tost_equivalence_matches_interval_inclusion():
    d = CASES[2]
    r = ttest_paired(d, alpha=0.10)  # TOST at 0.05 <=> 90 % interval inside the margin
    inside = max(abs(r["ci_low"]), abs(r["ci_high"]))
    assert tost_paired(d, inside * 1.0001) < 0.05 < tost_paired(d, inside * 0.9999)


def test_holm_hand_computed():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> running max 0.06
    expected = np.array([0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm(p), expected, atol=1e-15)
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], atol=1e-15)


def test_holm_is_not_holm_sidak_and_caps_at_one():
    p = np.array([0.02, 0.03, 0.2, 0.6])
    sidak = multipletests(p, method="hs")[1]
    assert not np.allclose(holm(p), sidak)
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], atol=1e-15)
    assert holm([0.9, 0.8]).max() == 1.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.random(rng.integers(1, 15)) ** 3
        np.testing.assert_allclose(holm(q), multipletests(q, method="holm")[1], atol=1e-15)


def test_holm_nan_counts_in_family_conservatively():
    adj = holm([0.01, np.nan, 0.02])
    assert np.isnan(adj[1])
    np.testing.assert_allclose(adj[[0, 2]], [0.03, 0.04])
