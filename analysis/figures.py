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


def _axes(ax, figsize, nrows: int = 1):
    """(figure, first axes): ``ax``'s figure, or a new one with ``nrows`` stacked axes."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, 1, sharey=True, squeeze=False)[:, 0]
    return fig, axes[0]


def _label(r) -> str:
    return f"{r['task']}/{r['model']}: {r['treatment']} vs {r['baseline']}"


def _row_layout(n: int) -> tuple[float, float]:
    """(inches per row, font size) so that 1-12 rows read at 8 pt and 40 rows still fit an
    A4 page at 6.5 pt instead of being shrunk to an unreadable height."""
    if n <= 16:
        return 0.34, 8.0
    return max(0.21, 8.6 / n), (7.0 if n <= 30 else 6.5)


def forest_plot(table: pd.DataFrame, margin: float | None = None, ax=None, show_boot: bool = True):
    """Paired mean differences (points) with t-intervals, BCa intervals (thin) and the
    ±margin equivalence band; the right margin prints each estimate and its t-interval, and
    thin rules separate task x model cells. ``table``: :func:`analysis.compare` output."""
    recs = table.to_dict("records")
    per_row, font = _row_layout(len(recs))
    fig, ax = _axes(ax, (7.5, 1.3 + per_row * max(len(recs), 1)))
    if margin is None and "margin" in table and table["margin"].notna().any():
        margin = float(table["margin"].dropna().iloc[0])
    if margin is not None:
        ax.axvspan(-margin * 100, margin * 100, color="tab:green", alpha=0.12,
                   label=f"equivalence ±{margin * 100:g} pts")
    ax.axvline(0, color="0.3", lw=0.8)
    y = np.arange(len(recs))[::-1]
    for i, (yi, r) in enumerate(zip(y, recs, strict=True)):
        color = "tab:red" if bool(r["significant"]) else "tab:blue"
        if np.isfinite(r["ci_low"]):
            ax.plot([r["ci_low"] * 100, r["ci_high"] * 100], [yi, yi], color=color, lw=2.2)
        if show_boot and np.isfinite(r["boot_low"]):
            ax.plot([r["boot_low"] * 100, r["boot_high"] * 100], [yi - 0.22] * 2,
                    color="0.45", lw=1)
        ax.plot([r["estimate"] * 100], [yi], "o", color=color, ms=4.5)
        if i and (r["task"], r["model"]) != (recs[i - 1]["task"], recs[i - 1]["model"]):
            ax.axhline(yi + 0.5, color="0.8", lw=0.6)
    ax.set_yticks(y, [_label(r) for r in recs], fontsize=font)
    ax.set_ylim(-0.7, len(recs) - 0.3)
    ax.tick_params(axis="x", labelsize=font)
    right = ax.twinx()  # the numbers beside each row, so no one reads them off the axis
    right.set_ylim(ax.get_ylim())
    right.set_yticks(y, [_interval_text(r) for r in recs], fontsize=font, family="monospace")
    right.tick_params(axis="y", length=0)
    level = float(table["level"].iloc[0]) if len(table) else 0.95
    ax.set_xlabel(f"treatment − baseline (points); thick: {level:.0%} t-CI, thin grey: BCa; "
                  "red: significant after correction", fontsize=font)
    ax.set_title("Paired differences", fontsize=font + 2)
    if margin is not None:
        ax.legend(loc="lower right", fontsize=font - 1, framealpha=0.9)
    return fig


def _interval_text(r) -> str:
    if not np.isfinite(r["ci_low"]):
        return f"{r['estimate'] * 100:+.2f}"
    return f"{r['estimate'] * 100:+.2f} [{r['ci_low'] * 100:+.2f}, {r['ci_high'] * 100:+.2f}]"


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
    if ax is not None:
        _slopes(ax, groups)
        return ax.figure
    # At most SLOPES_PER_ROW comparisons side by side: more rows, not ever smaller labels.
    rows = max(1, -(-len(groups) // SLOPES_PER_ROW))
    per_row = -(-len(groups) // rows) if groups else 1
    fig, _ = _axes(None, (max(6.0, 0.95 * per_row + 1.2), 3.6 * rows), nrows=rows)
    for r, a in enumerate(fig.axes):
        _slopes(a, groups[r * per_row:(r + 1) * per_row], title=r == 0)
    return fig


SLOPES_PER_ROW = 8


def _slopes(ax, groups, title: bool = True) -> None:
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
    ax.set_ylabel("score − baseline mean (points)", fontsize=8)
    if title:
        ax.set_title("Per-seed pairs (green: treatment higher)")


def distribution_plot(runs: pd.DataFrame, ax=None):
    """Score of every run per task × model × masker (dots) with the mean (bar).

    On its own figure: one small panel per cell, DISTRIBUTION_PANELS_PER_ROW to a row, each
    with its own y-axis (cells differ in level and metric; one shared axis squashed 12 cells
    into a strip where no masker difference showed). On a given ``ax``: every cell on it."""
    runs = check_runs(runs)
    cells = ordered_groups(runs, ["task", "model"])
    maskers = list(pd.unique(runs["masker"]))
    colors = {m: f"C{i % 10}" for i, m in enumerate(maskers)}
    if ax is not None:
        _distribution_panel(ax, runs, cells, maskers, colors)
        ax.set_title("Scores per masker")
        ax.legend(fontsize=8, ncols=min(len(maskers), 4), loc="best")
        return ax.figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = max(1, min(len(cells), DISTRIBUTION_PANELS_PER_ROW))
    nrows = max(1, -(-len(cells) // ncols))
    width = max(6.0, ncols * max(1.9, 0.35 * len(maskers) + 0.6))
    fig = Figure(figsize=(width, 2.1 * nrows + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for a, cell in zip(axes, cells, strict=False):
        _distribution_panel(a, runs, [cell], maskers, colors)
        a.set_xticks([])
        a.set_title(f"{cell[0]} / {cell[1]}", fontsize=8)
    for a in axes[len(cells):]:
        a.set_axis_off()
    handles = [axes[0].plot([], [], "o", color=colors[m], label=m)[0] for m in maskers]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(maskers), 6),
               fontsize=8, frameon=False)
    fig.suptitle("Scores per masker (dots: seeds; bar: mean)", fontsize=10)
    return fig


DISTRIBUTION_PANELS_PER_ROW = 4


def _distribution_panel(ax, runs, cells, maskers, colors):
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
    metrics = runs.loc[runs["task"].isin([t for t, _ in cells]), "metric"] \
        if "metric" in runs else pd.Series(dtype=str)
    label = f"score ({metrics.iloc[0]})" if metrics.nunique() == 1 else "score"
    ax.set_ylabel(label, fontsize=8)
    ax.tick_params(axis="y", labelsize=7)


def power_curve(table: pd.DataFrame, effects_points=None, alpha: float | None = None,
                power: float = 0.8, ax=None):
    """Seeds needed for ``power`` vs the true effect (points), one line per comparison,
    from each comparison's observed ``sd``; dotted line: seeds used."""
    if effects_points is None:
        effects_points = np.geomspace(0.1, 5.0, 40)
    n_lines = len(table)
    fig, ax = _axes(ax, (7.0, 4.5 + 0.09 * max(n_lines - 6, 0)))
    recs = [r for r in table.to_dict("records") if np.isfinite(r["sd"]) and r["sd"] > 0]
    for i, r in enumerate(recs):
        a = alpha if alpha is not None else 1 - float(r["level"])
        n = seeds_needed_curve(np.asarray(effects_points) / 100, r["sd"], a, power)
        ax.plot(effects_points, n, color=f"C{i % 10}", lw=1.3, label=_label(r),
                ls=("-", "--", "-.", ":")[(i // 10) % 4])  # beyond 10 lines colours repeat
    if len(table):
        ax.axhline(float(table["n_pairs"].max()), color="0.3", ls=":", lw=1,
                   label=f"seeds used ({int(table['n_pairs'].max())})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("true mean difference (points)")
    ax.set_ylabel(f"seed pairs for {power:.0%} power")
    ax.set_title("Seeds needed (paired t-test)")
    # Below the axes, so many comparisons never hide the curves.
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.14),
              ncols=1 if n_lines <= 6 else 2, frameon=False)
    return fig


def disagreement_heatmap(dis: pd.DataFrame, ax=None):
    """Heat map of :func:`analysis.single_run_disagreement` shares (rows: comparisons)."""
    cols = ["share_sign_disagree", "share_sign_disagree_mismatched", "share_win",
            "share_win_mismatched", "share_win_opposite"]
    names = ["sign ≠ mean\n(same seed)", "sign ≠ mean\n(other seed)", "declares win\n(same seed)",
             "declares win\n(other seed)", "wrong-way win\n(same seed)"]
    recs = dis.to_dict("records")
    per_row, font = _row_layout(len(recs))
    fig, ax = _axes(ax, (7.5, 1.5 + per_row * max(len(recs), 1)))
    data = dis[cols].to_numpy(dtype=float) if len(dis) else np.zeros((0, len(cols)))
    im = ax.imshow(np.ma.masked_invalid(data), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(data):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=font - 1,
                    color="white" if v < 0.5 else "black")
    ax.set_xticks(range(len(cols)), names, fontsize=7)
    ax.set_yticks(range(len(recs)), [_label(r) for r in recs], fontsize=font - 1)
    thr = float(dis["win_threshold"].iloc[0]) * 100 if len(dis) else 0.5
    ax.set_title(f"What a single run would have said (win: |Δ| ≥ {thr:g} pts)", fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


def across_forest_plot(across: pd.DataFrame, comparisons: pd.DataFrame,
                       margin: float | None = None, ax=None):
    """Per comparison of :func:`analysis.across_cells` (``across``): each cell's paired
    difference with its t-interval (``comparisons``: :func:`analysis.compare` rows), the
    pooled estimate as a diamond spanning its interval, and the prediction interval for a new
    cell as a bar under the diamond. Points on the x axis."""
    rows = []  # (label, kind, record)
    for a in across.to_dict("records"):
        cells = comparisons[(comparisons["treatment"] == a["treatment"])
                            & (comparisons["baseline"] == a["baseline"])]
        metric = a.get("metric")
        of = ""
        if isinstance(metric, str) and metric and "metric" in cells:  # pooled within a metric
            cells = cells[cells["metric"] == metric]
            of = f", {metric}" if comparisons["metric"].nunique() > 1 else ""
        rows += [(f"{r['task']}/{r['model']}", "cell", r) for r in cells.to_dict("records")]
        rows.append((f"{a['treatment']} vs {a['baseline']}: pooled ({int(a['n_cells'])} cells{of})",
                     "pooled", a))
    per_row, font = _row_layout(len(rows))
    fig, ax = _axes(ax, (7.5, 1.4 + per_row * max(len(rows), 1)))
    if margin is not None:
        ax.axvspan(-margin * 100, margin * 100, color="tab:green", alpha=0.12,
                   label=f"equivalence ±{margin * 100:g} pts")
    ax.axvline(0, color="0.3", lw=0.8)
    y = np.arange(len(rows))[::-1]
    texts, pi_labelled = [], False
    for yi, (_, kind, r) in zip(y, rows, strict=True):
        est, lo, hi = r["estimate"] * 100, r["ci_low"] * 100, r["ci_high"] * 100
        if kind == "cell":
            if np.isfinite(lo):
                ax.plot([lo, hi], [yi, yi], color="tab:blue", lw=1.6)
            ax.plot([est], [yi], "s", color="tab:blue", ms=4)
        else:
            if np.isfinite(r["pi_low"]):
                ax.plot([r["pi_low"] * 100, r["pi_high"] * 100], [yi - 0.3] * 2, color="tab:red",
                        lw=1, label=None if pi_labelled else "prediction interval")
                pi_labelled = True
            if np.isfinite(lo):
                ax.fill([lo, est, hi, est], [yi, yi + 0.28, yi, yi - 0.28], color="black")
            else:
                ax.plot([est], [yi], "D", color="black", ms=5)
            ax.axhline(yi - 0.5, color="0.8", lw=0.6)
        texts.append(_interval_text(r) if np.isfinite(est) else "–")
    ax.set_yticks(y, [lab for lab, _, _ in rows], fontsize=font)
    ax.set_ylim(-0.7, max(len(rows), 1) - 0.3)
    ax.tick_params(axis="x", labelsize=font)
    right = ax.twinx()
    right.set_ylim(ax.get_ylim())
    right.set_yticks(y, texts, fontsize=font, family="monospace")
    right.tick_params(axis="y", length=0)
    level = float(across["level"].iloc[0]) if len(across) else 0.95
    method = (str(across["method"].iloc[0]).upper().replace("+", ", ").replace("MHKSJ", "modified HKSJ")
              if len(across) else "")
    ax.set_xlabel(f"treatment − baseline (points); squares: cells with {level:.0%} t-CI; "
                  f"diamond: pooled {level:.0%} CI ({method}); red bar: prediction interval",
                  fontsize=font)
    ax.set_title("Across tasks and models (random effects)", fontsize=font + 2)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="lower right", fontsize=font - 1, framealpha=0.9)
    return fig


def rate_response_plot(runs: pd.DataFrame, rate: pd.DataFrame, curves: pd.DataFrame, ax=None):
    """Per task (one panel each): every model's fitted gain over rate 0 with its pointwise
    band (:func:`analysis.rate_response` curves), the observed mean paired gain per rate
    (dots: mean over seeds of masker - baseline), and the optimum with its interval (a bar
    at the top). Points on the y axis."""
    import matplotlib.pyplot as plt

    tasks = list(pd.unique(rate["task"]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 0.8, 3.2), squeeze=False,
                             sharey=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    base = str(rate["baseline"].iloc[0])
    for ax_, task in zip(axes[0], tasks, strict=True):
        ax_.axhline(0, color="0.3", lw=0.8)
        rows = rate[rate["task"] == task]
        for i, r in enumerate(rows.itertuples()):
            c = colors[i % len(colors)]
            cv = curves[(curves["task"] == task) & (curves["model"] == r.model)]
            if len(cv):
                ax_.fill_between(cv["rate"], cv["fit_low"] * 100, cv["fit_high"] * 100, color=c,
                                 alpha=0.15, lw=0)
                ax_.plot(cv["rate"], cv["fit"] * 100, color=c, lw=1.6,
                         label=f"{r.model} ({r.curve})")
            cell = runs[(runs["task"] == task) & (runs["model"] == r.model)]
            wide = cell.pivot_table(index="seed", columns="rate", values="value")
            if 0.0 in wide.columns:
                gain = wide.sub(wide[0.0], axis=0).mean() * 100
                ax_.plot(gain.index, gain.to_numpy(), "o", color=c, ms=3.5)
            if np.isfinite(r.optimum):
                top = (cv["fit_high"].max() * 100 if len(cv) else 0) * 1.05
                ax_.errorbar([r.optimum], [top], xerr=[[r.optimum - r.optimum_low],
                                                       [r.optimum_high - r.optimum]],
                             fmt="v", color=c, ms=5, capsize=3, lw=1.2)
        ax_.set_title(f"{task} ({rows['metric'].iloc[0]})" if rows["metric"].notna().any()
                      else task, fontsize=9)
        ax_.set_xlabel("masking rate", fontsize=8)
        ax_.tick_params(labelsize=8)
        ax_.legend(fontsize=7, loc="lower left", framealpha=0.9)
    # the legend of the marks (band, dots, triangle) is in the caption the report puts above
    axes[0][0].set_ylabel(f"gain over {base} (points)", fontsize=8)
    fig.tight_layout()
    return fig
