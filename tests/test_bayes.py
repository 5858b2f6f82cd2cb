"""analysis.bayes: the t posterior against numerical integration of the joint posterior's
marginal, the signed-rank test against baycomp within Monte Carlo error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import integrate

import analysis
from analysis import AnalysisWarning
from analysis.bayes import posterior_probs, signed_rank_probs

baycomp = pytest.importorskip("baycomp")

D = np.array([0.012, -0.004, 0.02, 0.008, 0.001])


def _marginal_probs(d, rope):
    """P(mu > r), P(|mu| <= r), P(mu < -r) by quadrature of the marginal posterior kernel.

    With p(mu, s²) ∝ 1/s² and normal data, integrating s² out of the joint posterior leaves
    p(mu | d) ∝ (S + n (mu - m)²)^(-n/2), S = sum (d - m)²: written here from scratch, not
    through scipy's t law.
    """
    n, m = d.size, d.mean()
    scale = np.sqrt(np.sum((d - m) ** 2) / n)
    # in u = (mu - m) / scale the kernel is (1 + u²)^(-n/2) whatever the metric's scale
    kernel = lambda u: (1 + u**2) ** (-n / 2)  # noqa: E731
    lo, hi = (-rope - m) / scale, (rope - m) / scale
    q = dict(epsabs=1e-14, epsrel=1e-13, limit=500)
    parts = [integrate.quad(kernel, -np.inf, lo, **q)[0],
             integrate.quad(kernel, lo, hi, **q)[0] if rope > 0 else 0.0,
             integrate.quad(kernel, hi, np.inf, **q)[0]]
    z = sum(parts)
    return {"p_worse": parts[0] / z, "p_rope": parts[1] / z, "p_better": parts[2] / z}


@pytest.mark.parametrize("d, rope", [(D, 0.005), (D, 0.0), (D[:3], 0.01), (D * 1e-6, 1e-9),
                                     (np.array([0.03, 0.01]), 0.002)])
def test_posterior_equals_numerical_integration(d, rope):
    got = posterior_probs(d, rope)
    ref = _marginal_probs(d, rope)
    for k in ("p_better", "p_rope", "p_worse"):
        assert got[k] == pytest.approx(ref[k], abs=1e-10), k
    assert got["p_better"] + got["p_rope"] + got["p_worse"] == pytest.approx(1.0, abs=1e-12)


def test_degenerate_cells_are_flagged_not_certain():
    for d in ([0.0] * 5, [0.01] * 3):
        r = posterior_probs(d, 0.005)
        assert r["degenerate"] and np.isnan(r["p_better"]) and np.isnan(r["p_rope"])
    assert not posterior_probs([0.01], 0.005)["degenerate"]


@pytest.mark.parametrize("z, rope", [
    ([0.01, 0.004, -0.002, 0.015, 0.006, 0.0], 0.005),
    ([0.01, 0.004, -0.002, 0.015, 0.006, 0.0], 0.0),
    ([-0.003, 0.001, -0.006, 0.002, -0.001, 0.0005], 0.004),
])
def test_signed_rank_matches_baycomp(z, rope):
    z = np.asarray(z)
    n = 50_000
    ours = signed_rank_probs(z, rope, n_samples=n, rng=np.random.default_rng(7))
    x = np.zeros(z.size)  # y - x == z exactly: pair sums on the rope's edge stay ties
    ref = baycomp.SignedRankTest.probs(x, z, rope, nsamples=n, random_state=3)
    ref = dict(zip(("p_worse", "p_rope", "p_better"), ref if rope > 0 else (ref[0], 0, ref[1]),
                   strict=True))
    for k in ("p_worse", "p_rope", "p_better"):
        se = np.sqrt(max(ref[k] * (1 - ref[k]), 1 / n) / n)
        assert abs(ours[k] - ref[k]) < 4 * np.sqrt(2) * se, (k, ours[k], ref[k])


def _runs(rng, effects, n_seeds=5, sd=0.01):
    rows = []
    for c, eff in enumerate(effects):
        for s in range(n_seeds):
            base = 0.8 + 0.02 * rng.standard_normal()
            rows += [{"task": f"t{c // 2}", "model": f"m{c % 2}", "masker": "random", "seed": s,
                      "value": base},
                     {"task": f"t{c // 2}", "model": f"m{c % 2}", "masker": "typhoon", "seed": s,
                      "value": base + eff + sd * rng.standard_normal()}]
    return pd.DataFrame(rows)


def test_bayes_paired_table():
    runs = _runs(np.random.default_rng(0), [0.01, 0.02, 0.0, 0.015, 0.005, 0.01])
    runs.loc[(runs.task == "t1") & (runs.model == "m0"), "value"] = 0.5  # collapsed cell
    with pytest.warns(AnalysisWarning, match="t1/m0"):
        out = analysis.bayes_paired(runs, baseline="random", rope=0.005, n_samples=20_000)
    cells, across = out[out.scope == "cell"], out[out.scope == "across"]
    assert len(cells) == 6 and len(across) == 1
    flat = cells[(cells.task == "t1") & (cells.model == "m0")].iloc[0]
    assert flat.degenerate and np.isnan(flat.p_better) and "collapsed runs" in flat.warning
    ok = cells[~cells.degenerate].iloc[0]
    sel = runs[(runs.task == ok.task) & (runs.model == ok.model)]
    d = (sel[sel.masker == "typhoon"].value.to_numpy() - sel[sel.masker == "random"].value.to_numpy())
    assert ok.p_better == pytest.approx(_marginal_probs(d, 0.005)["p_better"], abs=1e-10)
    a = across.iloc[0]
    assert a.n_cells == 5 and a.method == "bayes_signed_rank" and "t1/m0" in a.warning
    means = cells[~cells.degenerate].estimate.to_numpy()
    x = np.zeros(means.size)
    ref = baycomp.SignedRankTest.probs(x, means, 0.005, nsamples=20_000, random_state=1)
    assert a.p_better == pytest.approx(ref[2], abs=0.03)
    with pytest.warns(AnalysisWarning, match="t1/m0"):
        again = analysis.bayes_paired(runs, baseline="random", rope=0.005, n_samples=20_000)
    pd.testing.assert_frame_equal(out, again)  # seeded
    with pytest.raises(ValueError, match="rope must be a positive number"):
        analysis.bayes_paired(runs, baseline="random", rope=-1)
