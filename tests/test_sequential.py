"""analysis.sequential: boundaries against an independent simulation of paired t-tests,
the decision rule's semantics, and family-wise error / power on the Typhoon family."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from analysis import SequentialDesign
from analysis.sequential import boundaries_for, simulate, spent, typhoon_family

LOOKS = (3, 5, 8, 12)


def test_spending_functions_spend_alpha_by_the_last_look():
    t = np.array([0.25, 0.5, 1.0])
    for sp in ("obf", "pocock"):
        a = spent(t, 0.05, sp)
        assert a[-1] == pytest.approx(0.05, abs=1e-15) and np.all(np.diff(a) > 0)
    assert spent([0.25], 0.05, "obf")[0] < spent([0.25], 0.05, "pocock")[0]
    with pytest.raises(ValueError, match="spending must be one of"):
        spent(t, 0.05, "haybittle")


@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_boundaries_hold_for_the_paired_t_test(spending):
    """First-crossing probabilities of fresh null paths, tested with scipy's one-sample t,
    match the alpha spent at each look (within Monte Carlo error)."""
    level = 0.05
    q = boundaries_for(LOOKS, level, spending)
    rng = np.random.default_rng(99)  # not the calibration stream
    n = 100_000
    d = rng.standard_normal((n, LOOKS[-1])) * 0.013 + 0.0  # any sd: t is scale-free
    p = np.stack([stats.ttest_1samp(d[:, :k], 0.0, axis=1).pvalue for k in LOOKS], axis=1)
    crossed = p <= q
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    cum = spent(np.array(LOOKS) / LOOKS[-1], level, spending)
    inc = np.diff(np.concatenate([[0], cum]))
    for j, target in enumerate(inc):
        got = np.mean(first == j)
        se = np.sqrt(max(target, 1 / n) * (1 - target) / n)
        assert got <= target + 4 * se, (j, got, target)
        # increments too small to calibrate keep the conservative boundary q = increment
        calibrated = j > 0 and target * 400_000 >= 40
        assert got >= (target - 4 * se if calibrated else 0), (j, got, target)
    total = np.mean(first >= 0)
    assert total == pytest.approx(level, abs=4 * np.sqrt(level * (1 - level) / n))


def test_boundaries_table():
    rows = SequentialDesign().boundaries(n_comparisons=12)
    assert [r["n_pairs"] for r in rows] == list(LOOKS)
    assert rows[-1]["alpha_spent"] == pytest.approx(0.05 / 12)
    assert rows[0]["p_boundary"] == pytest.approx(rows[0]["alpha_spent"])  # look 1 is exact
    for r in rows:  # the t boundary is the p boundary on the t scale with n - 1 df
        assert 2 * stats.t.sf(r["t_boundary"], r["n_pairs"] - 1) == pytest.approx(r["p_boundary"])


def test_decisions_and_purity():
    rng = np.random.default_rng(1)
    design = SequentialDesign()
    big = 0.02 + 0.002 * rng.standard_normal(12)
    diffs = {"up": big[:8], "down": -big[:8], "null": 0.01 * rng.standard_normal(8)}
    out = design.replay(diffs)
    assert out["up"][0] == "better" and out["down"][0] == "worse"
    assert out["up"][1] <= 8
    # a comparison stopped at n keeps its verdict when only its first n values are passed
    n_up = out["up"][1]
    again = design.decide({**diffs, "up": big[:n_up]})
    assert again["up"] == "better"
    assert design.decide(diffs) == design.decide(dict(diffs))  # a pure function
    # between looks: no new decision until the next look's seeds are in
    assert design.decide({"a": [0.01, 0.0, 0.02, 0.01]})["a"] == "continue"
    # the last look ends every undecided comparison
    flat = {"a": 0.01 * rng.standard_normal(12)}
    assert design.decide(flat)["a"] in ("futile", "better", "worse")


def test_futility_and_equivalence():
    rng = np.random.default_rng(2)
    noise = np.array([0.01, -0.01, 0.005, -0.004, 0.0001, 0.002, -0.003, 0.0005])
    assert stats.ttest_1samp(noise[:5], 0).pvalue > 0.5
    d = SequentialDesign(futility=True)
    assert d.replay({"a": noise[:3]})["a"] == ("continue", 3)  # no futility at the first look
    assert d.replay({"a": noise})["a"] == ("futile", 5)
    no_fut = SequentialDesign(futility=False)
    assert no_fut.decide({"a": noise})["a"] == "continue"
    eq = SequentialDesign(margin=0.05, futility=False)
    tight = 0.001 * rng.standard_normal(12)
    dec, n = eq.replay({"a": tight})["a"]
    assert dec == "equivalent" and n in LOOKS
    # collapsed runs (all-zero differences) are never "equivalent"
    assert eq.decide({"a": np.zeros(12)})["a"] == "futile"
    assert SequentialDesign().decide({"a": np.full(5, 0.01)})["a"] == "continue"


def test_holm_step_raises_the_level_of_the_others():
    """Two comparisons at the last look: one overwhelming, one with p between the
    level-alpha/2 and level-alpha boundaries: rejected only thanks to the Holm step."""
    design = SequentialDesign(futility=False)
    q1, q2 = boundaries_for(LOOKS, 0.05, "obf")[-1], boundaries_for(LOOKS, 0.025, "obf")[-1]
    rng = np.random.default_rng(3)
    for _ in range(1000):
        x = rng.standard_normal(12) + 0.9
        p_all = [stats.ttest_1samp(x[:k], 0).pvalue for k in LOOKS]
        p_early = [stats.ttest_1samp(x[:k], 0).pvalue for k in LOOKS[:-1]]
        early = boundaries_for(LOOKS, 0.05, "obf")[:-1]
        if q2 < p_all[-1] <= q1 and all(p > b for p, b in zip(p_early, early, strict=True)):
            break
    else:
        pytest.fail("no suitable vector found")
    strong = np.full(12, 5.0) + 0.01 * rng.standard_normal(12)
    assert design.decide({"x": x, "strong": strong}) == {"x": "better", "strong": "better"}
    assert design.decide({"x": x, "other": rng.standard_normal(12) * 0.01})["x"] == "futile"


def test_bad_designs_and_inputs_are_refused():
    for kw, msg in (({"looks": (3, 3, 5)}, "increasing"), ({"looks": (1, 4)}, "increasing"),
                    ({"alpha": 1.5}, "alpha"), ({"spending": "haybittle"}, "spending"),
                    ({"margin": -0.01}, "margin"), ({"futility_p": (0.5, 0.5)}, "futility_p")):
        with pytest.raises(ValueError, match=msg):
            SequentialDesign(**kw)
    with pytest.raises(ValueError, match="must be finite"):
        SequentialDesign().decide({"a": [0.01, np.nan, 0.02]})


def test_family_wise_error_fast():
    """1,500 null Typhoon studies (the slow test runs 10,000)."""
    h0 = simulate(SequentialDesign(), 0.0, n_studies=1500, seed=11)
    assert h0["fwer"] <= 0.05 + 3 * h0["fwer_se"]
    assert h0["expected_seeds"] < 9  # futility stops most null comparisons early


@pytest.mark.slow
@pytest.mark.parametrize("spending", ["obf", "pocock"])
def test_family_wise_error_10000_studies(spending):
    h0 = simulate(SequentialDesign(spending=spending), 0.0, n_studies=10_000, seed=0)
    assert h0["fwer"] <= 0.05 + 2 * h0["fwer_se"]


@pytest.mark.slow
def test_power_and_seeds_against_the_fixed_design():
    h1 = simulate(SequentialDesign(), 1.0, n_studies=10_000, seed=1)
    assert h1["power_fixed"] - h1["power"] <= 0.05
    assert h1["wrong_sign"] == 0
    # measured 9.6 % fewer seeds (README): the 30 % is not reached, see there why
    assert h1["expected_seeds"] <= 0.92 * h1["n_max"]


def test_strong_control_under_a_partial_null():
    """Half the family with large effects (their rejections raise the others' level through
    the Holm step), half null: the error on the null half stays under alpha."""
    rng = np.random.default_rng(12)
    n_studies = 2000
    d = typhoon_family(rng, n_studies, 12, 0.0)
    d[:, :6] += 1.5  # typhoon vs random truly better in every cell
    design = SequentialDesign()
    false = 0
    for s in range(n_studies):
        out = design.decide({i: d[s, i] for i in range(12)})
        false += any(out[i] in ("better", "worse") for i in range(6, 12))
    rate = false / n_studies
    assert rate <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / n_studies), rate
