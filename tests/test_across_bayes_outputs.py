"""The across-cell and Bayesian tables inside AnalysisResult: numbers against independent
computations, the summary's across-cell verdict, and when the tables are (not) made."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from analysis import analyze

CELLS = [(t, m) for t in ("sst2", "mrpc", "cola") for m in ("bert", "roberta")]


def _runs(effects, cells=CELLS, n_seeds=5, seed=3):
    rng = np.random.default_rng(seed)
    rows = []
    for (task, model), eff in zip(cells, effects, strict=True):
        for s in range(n_seeds):
            base = 0.8 + 0.02 * rng.standard_normal()
            rows += [{"task": task, "model": model, "masker": "random", "seed": s, "value": base},
                     {"task": task, "model": model, "masker": "typhoon", "seed": s,
                      "value": base + eff + 0.01 * rng.standard_normal()}]
    return pd.DataFrame(rows)


def _cell_diffs(runs):
    wide = runs.pivot_table(index=["task", "model", "seed"], columns="masker", values="value")
    return (wide["typhoon"] - wide["random"]).groupby(level=[0, 1], sort=False)


def _reml_hksj(y, v, level):
    """Independent REML (direct maximisation of the restricted likelihood) + modified HKSJ
    interval (variance factor max(1, q))."""
    def neg_restricted(t):
        w = 1 / (v + t)
        mu = np.sum(w * y) / np.sum(w)
        return 0.5 * (np.sum(np.log(v + t)) + np.log(np.sum(w)) + np.sum(w * (y - mu) ** 2))
    tau2 = optimize.minimize_scalar(neg_restricted, bounds=(0, 1e-2), method="bounded",
                                    options={"xatol": 1e-14}).x
    w = 1 / (v + tau2)
    mu = np.sum(w * y) / np.sum(w)
    k = y.size
    se = np.sqrt(max(1.0, np.sum(w * (y - mu) ** 2) / (k - 1)) / np.sum(w))
    half = stats.t.ppf(1 - (1 - level) / 2, k - 1) * se
    pi = stats.t.ppf(1 - (1 - level) / 2, k - 2) * np.sqrt(tau2 + se**2)
    return mu, mu - half, mu + half, tau2, mu - pi, mu + pi


def test_result_carries_across_and_bayes_tables_checked_independently():
    runs = _runs([0.01, 0.02, 0.0, 0.015, 0.005, 0.01])
    res = analyze(runs, baseline="random", alpha=0.1, margin=0.005, n_boot=200)
    assert list(res.tables())[:3] == ["comparisons", "bayes", "across"]
    d = _cell_diffs(runs)
    y, v = d.mean().to_numpy(), (d.var(ddof=1) / d.count()).to_numpy()
    mu, lo, hi, tau2, pi_lo, pi_hi = _reml_hksj(y, v, 0.9)
    a = res.across.iloc[0]
    assert (a.treatment, a.baseline, a.n_cells, a.method, a.level) == (
        "typhoon", "random", 6, "reml+mhksj", pytest.approx(0.9))
    assert (a.estimate, a.ci_low, a.ci_high) == pytest.approx((mu, lo, hi), rel=1e-6)
    assert a.tau2 == pytest.approx(tau2, rel=1e-4, abs=1e-10)
    assert (a.pi_low, a.pi_high) == pytest.approx((pi_lo, pi_hi), rel=1e-5)
    # per-cell posterior: Student t(n-1, mean, sd/sqrt(n)); rope = the margin
    cells = res.bayes[res.bayes.scope == "cell"]
    assert len(cells) == 6 and set(cells.rope) == {0.005}
    for (task, model), diffs in d:
        row = cells[(cells.task == task) & (cells.model == model)].iloc[0]
        x = diffs.to_numpy()
        post = stats.t(x.size - 1, x.mean(), x.std(ddof=1) / np.sqrt(x.size))
        assert row.p_better == pytest.approx(post.sf(0.005), rel=1e-9)
        assert row.p_rope == pytest.approx(post.cdf(0.005) - post.cdf(-0.005), rel=1e-9)
    across_b = res.bayes[res.bayes.scope == "across"].iloc[0]
    assert across_b.n_cells == 6
    assert across_b.p_better + across_b.p_rope + across_b.p_worse == pytest.approx(1)
    # the summary states the across-cell verdict with the same numbers
    assert (f"Across 6 cells, typhoon vs random: {mu * 100:+.2f} pts [{lo * 100:+.2f}, "
            f"{hi * 100:+.2f}] (90% CI, REML, modified HKSJ;") in res.summary
    assert f"P(better) = {across_b.p_better:.2f}, P(within ±0.5 pts) = " in res.summary
    assert res.text().startswith(res.summary)


def test_one_cell_has_no_across_table_and_no_margin_means_no_rope():
    runs = _runs([0.01], cells=[("sst2", "bert")])
    res = analyze(runs, baseline="random", n_boot=200)
    assert "across" not in res.tables() and res.across.empty
    assert "Across" not in res.summary
    assert list(res.bayes.scope) == ["cell"]  # one cell is not a population of cells
    row = res.bayes.iloc[0]
    assert row.rope == 0 and row.p_rope == 0
    assert row.p_better + row.p_worse == pytest.approx(1)


def test_without_margin_summary_says_there_is_no_rope():
    res = analyze(_runs([0.01, 0.0, 0.02, 0.01, 0.0, 0.01]), baseline="random", n_boot=200)
    assert "Across 6 cells, typhoon vs random" in res.summary
    assert "(no margin: no rope)" in res.summary and "P(within" not in res.summary


def test_across_forest_plot_draws_cells_diamond_and_prediction_interval():
    from analysis.figures import across_forest_plot

    res = analyze(_runs([0.01, 0.02, 0.0, 0.015, 0.005, 0.01]), baseline="random", n_boot=200)
    fig = across_forest_plot(res.across, res.comparisons)
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-1] == "typhoon vs random: pooled (6 cells)" and len(labels) == 7
    assert len(ax.patches) == 1  # the diamond
    diamond = ax.patches[0].get_xy()[:, 0]
    a = res.across.iloc[0]
    assert (diamond.min(), diamond.max()) == pytest.approx((a.ci_low * 100, a.ci_high * 100))
    assert any(line.get_label() == "prediction interval" for line in ax.lines)


def test_bayesian_probabilities_do_not_display_as_p_values():
    from analysis.display import display_frame
    from analysis.tables import to_markdown

    b = pd.DataFrame({"treatment": ["t"], "baseline": ["b"], "p_better": [0.9996],
                      "p_rope": [0.0], "p_worse": [0.0004], "p_ttest": [0.0004]})
    shown = display_frame(b).iloc[0]
    assert (shown["P(better)"], shown["P(in ROPE)"], shown["P(worse)"]) == ("1.000", "0.000", "0.000")
    assert shown["p (t-test)"] == "< 0.001"  # a p-value still is one
    md = to_markdown(b)
    assert md.count("< 0.001") == 1 and "0.0004" in md


def test_audit_pairing_names_the_treatment():
    from analysis import audit_pairing

    runs = _runs([0.01, 0.0], cells=CELLS[:2])
    audit = audit_pairing(runs, baseline="random")
    assert "treatment" in audit.columns and "masker" not in audit.columns
    assert set(audit.treatment) == {"typhoon"} and set(audit.baseline) == {"random"}
    res = analyze(runs, baseline="random", n_boot=100)
    assert list(res.audit.columns[:4]) == ["task", "model", "treatment", "baseline"]


def test_two_cells_of_different_metrics_are_not_pooled_in_points():
    """The independent check's study: sentiment (macro-F1) and a token task (weighted F1), one
    backbone: no across row, no "Across 2 cells" in the summary, a metric on every row."""
    runs = _runs([0.03, 0.01], cells=[("sentiment", "bert"), ("lid", "bert")])
    runs["metric"] = runs["task"].map({"sentiment": "macro_f1", "lid": "weighted_f1"})
    res = analyze(runs, baseline="random", n_boot=100)
    assert res.across.empty and "across" not in res.tables()
    assert "Across" not in res.summary
    assert list(res.bayes.scope) == ["cell", "cell"]
    assert list(res.bayes.metric) == ["macro_f1", "weighted_f1"]
    assert list(pd.unique(res.variance.metric)) == ["macro_f1", "weighted_f1"]
