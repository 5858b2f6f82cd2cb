"""analysis.many_to_one and analysis.best (issue 20 §1, §2): against a naive exact enumeration,
Šidák for independent treatments, the family-wise error and the best-set coverage by
simulation."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import analysis
from analysis import AnalysisWarning
from analysis.selection import maxt_pvalues, mcb, simultaneous_crit

pytestmark = pytest.mark.filterwarnings("ignore::analysis.AnalysisWarning")


def _runs(effects: dict, n_seeds: int, rng, sd=0.01, base_sd=0.02, shared=0.0):
    """One cell: baseline 'none' and treatments with the given true effects. ``shared``: sd of
    a per-seed noise every treatment shares (correlated treatments beyond the shared baseline)."""
    rows = []
    for s in range(n_seeds):
        b = 0.8 + base_sd * rng.standard_normal()
        common = shared * rng.standard_normal()
        rows.append({"task": "t", "model": "m", "masker": "none", "seed": s, "value": b})
        rows += [{"task": "t", "model": "m", "masker": k, "seed": s,
                  "value": b + e + common + sd * rng.standard_normal()} for k, e in effects.items()]
    return pd.DataFrame(rows)


def _naive_maxt(d):
    """Exact max-T and Westfall-Young step-down by looping over every sign pattern."""
    n, m = d.shape

    def tstat(x):
        return abs(x.mean()) / (x.std(ddof=1) / np.sqrt(len(x)))

    t_obs = np.array([tstat(d[:, j]) for j in range(m)])
    nulls = np.array([[tstat(np.array(s) * d[:, j]) for j in range(m)]
                      for s in itertools.product([1, -1], repeat=n)])
    single = np.array([np.mean(nulls.max(axis=1) >= t_obs[j] - 1e-12) for j in range(m)])
    order = np.argsort(-t_obs)
    step, running = np.empty(m), 0.0
    for k, j in enumerate(order):
        running = max(running, np.mean(nulls[:, order[k:]].max(axis=1) >= t_obs[j] - 1e-12))
        step[j] = running
    return single, step


def test_maxt_equals_a_naive_exact_enumeration():
    rng = np.random.default_rng(1)
    runs = _runs({"a": 0.015, "b": 0.008, "c": 0.0}, 7, rng)
    out = analysis.many_to_one(runs, baseline="none", n_sim=2000)
    wide = runs.pivot(index="seed", columns="masker", values="value")
    d = (wide[["a", "b", "c"]].to_numpy() - wide[["none"]].to_numpy())
    single, step = _naive_maxt(d)
    assert out.p_maxt.to_numpy() == pytest.approx(single, abs=1e-12)
    assert out.p_adj.to_numpy() == pytest.approx(step, abs=1e-12)
    assert (out.p_adj <= out.p_maxt + 1e-12).all()  # step-down never less powerful
    assert out.method.iloc[0].startswith("max-T sign-flip (exact, 128 patterns)")
    # Holm beside it: Holm on the paired t-tests of the same differences
    p_t = [stats.ttest_1samp(d[:, j], 0).pvalue for j in range(3)]
    assert out.p_holm.to_numpy() == pytest.approx(analysis.holm(p_t))
    assert list(out.columns[:4]) == ["task", "model", "treatment", "baseline"]
    for col in ("estimate", "ci_low", "ci_high", "level", "p_maxt", "p_adj", "n_pairs", "method"):
        assert col in out.columns


def test_monte_carlo_beyond_sixteen_seeds_agrees_with_exact():
    rng = np.random.default_rng(2)
    d = rng.normal(0.004, 0.01, (17, 3))
    exact_single, exact_step = _naive_maxt_fast(d)
    mc_single, mc_step, exact, n_pat = maxt_pvalues(d, n_mc=40_000, rng=np.random.default_rng(0))
    assert not exact and n_pat == 40_000
    for mc, ex in ((mc_single, exact_single), (mc_step, exact_step)):
        se = np.sqrt(ex * (1 - ex) / 40_000)
        assert np.all(np.abs(mc - ex) <= 4 * se + 1e-4)


def _naive_maxt_fast(d):
    from analysis.selection import flipped_t, t_stats

    n = d.shape[0]
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=n)))
    null = flipped_t(d, signs)
    t_obs = np.abs(t_stats(d))
    single = np.array([np.mean(null.max(axis=1) >= t - 1e-9) for t in t_obs])
    order = np.argsort(-t_obs)
    step, running = np.empty(d.shape[1]), 0.0
    for k, j in enumerate(order):
        running = max(running, np.mean(null[:, order[k:]].max(axis=1) >= t_obs[j] - 1e-9))
        step[j] = running
    return single, step


def test_independent_treatments_are_close_to_sidak():
    """Independent columns: max-T's p is close to Šidák's 1 - (1 - p)^m of the per-treatment
    exact sign-flip p-values (the joint flips leave independent t's nearly independent; with
    one column |t| is monotone in |mean| under flips, so that p is the sign-flip test's)."""
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(40):
        d = rng.normal(0.0, 1.0, (16, 3)) + np.array([0.7, 0.3, 0.0])
        single, _step, exact, _ = maxt_pvalues(d)
        p_one = np.array([analysis.signflip_test(d[:, j])[0] for j in range(3)])
        sidak = 1 - (1 - p_one) ** 3
        keep = (sidak > 0.005) & (sidak < 0.5)
        assert exact
        assert np.all(np.abs(single[keep] - sidak[keep]) <= 0.25 * sidak[keep] + 0.005)
        checked += keep.sum()
    assert checked > 20


def test_familywise_error_with_correlated_treatments():
    """All nulls true, 4 treatments sharing seed noise (correlation ~0.8): max-T step-down
    rejects any at most alpha + 2 Monte-Carlo se of the time."""
    rng = np.random.default_rng(4)
    n_sim, alpha = 400, 0.05
    any_reject = 0
    for _ in range(n_sim):
        d = rng.standard_normal((8, 1)) * 2 + rng.standard_normal((8, 4))
        _single, step, _exact, _ = maxt_pvalues(d)
        any_reject += bool((step < alpha).any())
    fwe = any_reject / n_sim
    assert fwe <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / n_sim)


def test_simultaneous_critical_value():
    rng = np.random.default_rng(5)
    d1 = rng.normal(size=(6, 1))
    assert simultaneous_crit(d1, 0.95) == pytest.approx(stats.t.ppf(0.975, 5))
    # three uncorrelated columns (orthogonal, centred): Šidák's t quantile
    h = np.array([[1, 1, 1], [1, -1, 1], [1, 1, -1], [1, -1, -1],
                  [-1, 1, 1], [-1, -1, 1], [-1, 1, -1], [-1, -1, -1]], float)
    d3 = h * np.array([1.0, 2.0, 0.5])
    assert np.abs(np.corrcoef(d3, rowvar=False) - np.eye(3)).max() < 1e-12
    sidak = stats.t.ppf(1 - (1 - 0.95 ** (1 / 3)) / 2, 7)
    assert simultaneous_crit(d3, 0.95, n_sim=200_000) == pytest.approx(sidak, rel=0.015)
    # perfectly correlated columns: one treatment's t quantile
    same = np.hstack([d1, d1 * 2, d1 * 3]) + 1e-9 * rng.normal(size=(6, 3))
    assert simultaneous_crit(same, 0.95, n_sim=100_000) == pytest.approx(
        stats.t.ppf(0.975, 5), rel=0.02)


def test_too_few_seeds_for_max_t_say_so():
    rng = np.random.default_rng(6)
    runs = _runs({"a": 0.05, "b": 0.0}, 5, rng)
    with pytest.warns(AnalysisWarning, match="sign-flip p cannot go below 0.0625"):
        out = analysis.many_to_one(runs, n_sim=1000)
    assert (out.p_maxt >= 0.0625 - 1e-12).all()


def test_dominant_treatment_is_a_best_set_of_one():
    rng = np.random.default_rng(7)
    runs = _runs({"p0.1": 0.06, "p0.2": 0.01, "p0.3": 0.0}, 8, rng, sd=0.005)
    out = analysis.best(runs, baseline="none", n_sim=5000)
    assert out.loc[out.in_best_set, "treatment"].tolist() == ["p0.1"]
    top = out[out.apparent_best].iloc[0]
    assert top.treatment == "p0.1"
    # selection-adjusted (simultaneous) interval is wider than the naive one
    assert top.ci_low < top.naive_low and top.ci_high > top.naive_high


def test_equal_treatments_all_fall_in_the_set():
    """Every masker, the baseline included, has exactly the same mean: all are in the set."""
    rng = np.random.default_rng(8)
    noise = rng.normal(0, 0.01, (6, 4))
    noise -= noise.mean(axis=0)
    rows = [{"task": "t", "model": "m", "masker": name, "seed": s, "value": 0.8 + noise[s, j]}
            for s in range(6) for j, name in enumerate(["none", "a", "b", "c"])]
    out = analysis.best(pd.DataFrame(rows), baseline="none", n_sim=5000)
    assert out.in_best_set.all() and len(out) == 4


def _best_set_coverage(n_studies, n_sim, seed):
    rng = np.random.default_rng(seed)
    mu = np.array([0.0, 0.006, 0.012, 0.02])  # the last is the true best
    hits = 0
    for _ in range(n_studies):
        seeds = rng.standard_normal((6, 1)) * 0.02
        scores = 0.8 + seeds + mu + 0.01 * rng.standard_normal((6, 4))
        in_set, _, _ = mcb(scores, 0.05, n_sim=n_sim, rng=rng)
        hits += bool(in_set[-1])
    return hits / n_studies


def test_best_set_covers_the_true_best():
    cov = _best_set_coverage(150, 3000, seed=9)
    assert cov >= 0.95 - 2 * np.sqrt(0.05 * 0.95 / 150)


@pytest.mark.slow
def test_best_set_coverage_many_studies():
    cov = _best_set_coverage(1500, 5000, seed=10)
    assert cov >= 0.95 - 2 * np.sqrt(0.05 * 0.95 / 1500)


@pytest.mark.slow
def test_selection_adjusted_gain_covers_where_the_naive_one_does_not():
    """Five treatments all +1 pt: the apparent best's naive interval misses +1 pt more often
    than 5 %; the max-T interval of the same treatment holds its level."""
    rng = np.random.default_rng(11)
    effects = {f"p{i}": 0.01 for i in range(5)}
    naive = adjusted = 0
    n_studies = 300
    for _ in range(n_studies):
        out = analysis.best(_runs(effects, 6, rng), baseline="none", n_sim=3000)
        top = out[out.apparent_best].iloc[0]
        naive += top.naive_low <= 0.01 <= top.naive_high
        adjusted += top.ci_low <= 0.01 <= top.ci_high
    se = np.sqrt(0.05 * 0.95 / n_studies)
    assert adjusted / n_studies >= 0.95 - 2 * se
    assert naive < adjusted


def test_collapsed_maskers_do_not_break_the_best_set():
    """Two maskers whose runs collapsed to the same score in every seed (zero spread of their
    differences): the set still forms, and the dominant masker is alone in it."""
    rng = np.random.default_rng(12)
    base = 0.8 + 0.02 * rng.standard_normal(6)
    rows = [{"task": "t", "model": "m", "masker": "none", "seed": s, "value": 0.5} for s in range(6)]
    rows += [{"task": "t", "model": "m", "masker": "dead", "seed": s, "value": 0.5} for s in range(6)]
    rows += [{"task": "t", "model": "m", "masker": "good", "seed": s, "value": base[s]}
             for s in range(6)]
    out = analysis.best(pd.DataFrame(rows), baseline="none", n_sim=2000)
    assert out.loc[out.in_best_set, "treatment"].tolist() == ["good"]
    assert np.isfinite(out.ci_low).sum() == 2


@pytest.mark.slow
def test_simultaneous_intervals_cover_jointly():
    """Four correlated treatments with known effects, 6 seeds: all four intervals contain their
    true effects in >= 1 - alpha - 2 Monte-Carlo se of the studies."""
    rng = np.random.default_rng(13)
    effects = {"a": 0.0, "b": 0.01, "c": 0.02, "d": 0.0}
    n_studies, hits = 300, 0
    for _ in range(n_studies):
        out = analysis.many_to_one(_runs(effects, 6, rng, shared=0.01), baseline="none", n_sim=4000)
        truth = out.treatment.map(effects)
        hits += bool(((out.ci_low <= truth) & (truth <= out.ci_high)).all())
    assert hits / n_studies >= 0.95 - 2 * np.sqrt(0.05 * 0.95 / n_studies)
