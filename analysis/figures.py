"""Figures. Each function takes ``ax=None`` (draw on a new figure) and returns the figure.

New figures are bare ``matplotlib.figure.Figure`` objects on an Agg canvas: no pyplot, no
global backend switch, no display needed, nothing kept alive in pyplot's figure registry.
matplotlib is imported on first use so ``import analysis`` stays light.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis._frames import AnalysisWarning, check_runs, ordered_groups, resolve_comparisons
from analysis.power import seeds_needed_curve


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _label(r) -> str:
    return f"{r['task']}/{r['model']}: {r['masker']} vs {r['baseline']}"


def forest_plot(table: pd.DataFrame, margin: float | None = None, ax=None, show_boot: bool = True):
    """Paired mean differences (points) with t-intervals, BCa intervals (thin) and the
    ±margin equivalence band. ``table``: :func:`analysis.compare` output."""
    recs = table.to_dict("records")
    fig, ax = _axes(ax, (7.5, 1.2 + 0.38 * max(len(recs), 1)))
    if margin is None and "margin" in table and table["margin"].notna().any():
        margin = float(table["margin"].dropna().iloc[0])
    if margin is not None:
        ax.axvspan(-margin * 100, margin * 100, color="tab:green", alpha=0.12,
                   label=f"equivalence ±{margin * 100:g} pts")
    ax.axvline(0, color="0.3", lw=0.8)
    y = np.arange(len(recs))[::-1]
    for yi, r in zip(y, recs, strict=True):
        color = "tab:red" if bool(r["significant"]) else "tab:blue"
        if np.isfinite(r["ci_low"]):
            ax.plot([r["ci_low"] * 100, r["ci_high"] * 100], [yi, yi], color=color, lw=2.2)
        if show_boot and np.isfinite(r["boot_ci_low"]):
            ax.plot([r["boot_ci_low"] * 100, r["boot_ci_high"] * 100], [yi - 0.18] * 2,
                    color="0.45", lw=1)
        ax.plot([r["mean_diff"] * 100], [yi], "o", color=color, ms=5)
    ax.set_yticks(y, [_label(r) for r in recs], fontsize=8)
    level = float(table["level"].iloc[0]) if len(table) else 0.95
    ax.set_xlabel(f"treatment − baseline (points); thick: {level:.0%} t-CI, thin grey: BCa; "
                  "red: significant after correction", fontsize=8)
    ax.set_title("Paired differences")
    if margin is not None:
        ax.legend(loc="best", fontsize=8)
    return fig


def slope_plot(runs: pd.DataFrame, baseline: str | None = None, *,
               comparisons: Sequence[tuple[str, str]] | None = None, ax=None):
    """Per-seed paired slopes: for each comparison, one line per seed from the baseline's
    score to the treatment's, centred on the baseline mean (points) so cells share an axis."""
    runs = check_runs(runs)
    pairs = resolve_comparisons(runs, baseline, comparisons)
    from analysis.audit import pair_runs

    with warnings.catch_warnings():  # compare() has already said what pairing dropped
        warnings.simplefilter("ignore", AnalysisWarning)
        paired, _, _ = pair_runs(runs, pairs, on_mismatch="drop")
    groups = list(paired.groupby(["task", "model", "masker", "baseline"], sort=False))
    fig, ax = _axes(ax, (max(6.0, 1.1 * len(groups) + 1), 4.2))
    ticks, labels = [], []
    for i, (key, g) in enumerate(groups):
        centre = g["value_baseline"].mean()
        x0, x1 = 2.5 * i, 2.5 * i + 1
        for vb, vt in zip(g["value_baseline"], g["value_treatment"], strict=True):
            up = vt > vb
            ax.plot([x0, x1], [(vb - centre) * 100, (vt - centre) * 100], "-o", ms=3, lw=1,
                    color="tab:green" if up else "tab:red", alpha=0.8)
        ticks += [x0, x1]
        labels += [f"{key[3]}\n{key[0]}/{key[1]}", key[2]]
    ax.axhline(0, color="0.6", lw=0.6)
    ax.set_xticks(ticks, labels, fontsize=7, rotation=60, ha="right")
    ax.set_ylabel("score − baseline mean (points)")
    ax.set_title("Per-seed pairs (green: treatment higher)")
    return fig


def distribution_plot(runs: pd.DataFrame, ax=None):
    """Score of every run per task × model × masker (dots) with the mean (bar)."""
    runs = check_runs(runs)
    cells = ordered_groups(runs, ["task", "model"])
    maskers = list(pd.unique(runs["masker"]))
    fig, ax = _axes(ax, (max(6.0, 0.5 * len(cells) * len(maskers) + 1.5), 4.2))
    colors = {m: f"C{i % 10}" for i, m in enumerate(maskers)}
    width = 0.8 / max(len(maskers), 1)
    for ci, (task, model) in enumerate(cells):
        cell = runs[(runs["task"] == task) & (runs["model"] == model)]
        for mi, m in enumerate(maskers):
            v = cell.loc[cell["masker"] == m, "value"].to_numpy(float)
            if not v.size:
                continue
            x = ci + (mi - (len(maskers) - 1) / 2) * width
            jitter = np.linspace(-0.25, 0.25, v.size) * width
            ax.plot(x + jitter, v, "o", ms=3.5, color=colors[m], alpha=0.75,
                    label=m if ci == 0 else None)
            ax.plot([x - 0.4 * width, x + 0.4 * width], [v.mean()] * 2, color=colors[m], lw=2)
    ax.set_xticks(range(len(cells)), [f"{t}\n{m}" for t, m in cells], fontsize=8)
    metric = ""
    if "metric" in runs and runs["metric"].nunique() == 1:
        metric = f" ({runs['metric'].iloc[0]})"
    ax.set_ylabel(f"score{metric}")
    ax.set_title("Scores per masker")
    ax.legend(fontsize=8, ncols=min(len(maskers), 4), loc="best")
    return fig


def power_curve(table: pd.DataFrame, effects_points=None, alpha: float | None = None,
                power: float = 0.8, ax=None):
    """Seeds needed for ``power`` vs the true effect (points), one line per comparison,
    from each comparison's observed ``sd_diff``; dotted line: seeds used."""
    if effects_points is None:
        effects_points = np.geomspace(0.1, 5.0, 40)
    fig, ax = _axes(ax, (7.0, 4.5))
    recs = [r for r in table.to_dict("records") if np.isfinite(r["sd_diff"]) and r["sd_diff"] > 0]
    for i, r in enumerate(recs):
        a = alpha if alpha is not None else 1 - float(r["level"])
        n = seeds_needed_curve(np.asarray(effects_points) / 100, r["sd_diff"], a, power)
        ax.plot(effects_points, n, color=f"C{i % 10}", lw=1.3, label=_label(r))
    if len(table):
        ax.axhline(float(table["n_pairs"].max()), color="0.3", ls=":", lw=1,
                   label=f"seeds used ({int(table['n_pairs'].max())})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("true mean difference (points)")
    ax.set_ylabel(f"seed pairs for {power:.0%} power")
    ax.set_title("Seeds needed (paired t-test)")
    ax.legend(fontsize=6, loc="best")
    return fig


def disagreement_heatmap(dis: pd.DataFrame, ax=None):
    """Heat map of :func:`analysis.single_run_disagreement` shares (rows: comparisons)."""
    cols = ["share_sign_disagree", "share_sign_disagree_mismatched", "share_win",
            "share_win_mismatched", "share_win_opposite"]
    names = ["sign ≠ mean\n(same seed)", "sign ≠ mean\n(other seed)", "declares win\n(same seed)",
             "declares win\n(other seed)", "wrong-way win\n(same seed)"]
    recs = dis.to_dict("records")
    fig, ax = _axes(ax, (7.5, 1.4 + 0.36 * max(len(recs), 1)))
    data = dis[cols].to_numpy(dtype=float) if len(dis) else np.zeros((0, len(cols)))
    im = ax.imshow(np.ma.masked_invalid(data), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if v < 0.5 else "black")
    ax.set_xticks(range(len(cols)), names, fontsize=7)
    ax.set_yticks(range(len(recs)), [_label(r) for r in recs], fontsize=7)
    thr = float(dis["win_threshold"].iloc[0]) * 100 if len(dis) else 0.5
    ax.set_title(f"What a single run would have said (win: |Δ| ≥ {thr:g} pts)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig
