"""The one-paragraph verdict of a study, built from the comparison table."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _name(r) -> str:
    return f"{r['treatment']} vs {r['baseline']} ({r['task']}/{r['model']})"


def _pts(x: float) -> str:
    return f"{x * 100:+.2f}"


def summary_sentence(table: pd.DataFrame, alpha: float | None = None) -> str:
    """"k of m comparisons significant after Holm at α; all/not all CIs include zero;
    equivalent within ±margin: ..." for a :func:`analysis.compare` table."""
    m = len(table)
    if m == 0:
        return "No comparisons could be made."
    if alpha is None:
        alpha = float(1 - table["level"].iloc[0])
    level = 1 - alpha
    corr = str(table["correction"].iloc[0]) if "correction" in table else "holm"
    corr_txt = {"holm": "after Holm", "bonferroni": "after Bonferroni", "none": "uncorrected"}.get(
        corr, f"after {corr}"
    )
    recs = table.to_dict("records")
    sig = [r for r in recs if bool(r["significant"])]
    parts = [f"{len(sig)} of {m} comparison{'s' if m != 1 else ''} significant {corr_txt} "
             f"at α = {alpha:g} (paired t-test)"]
    if sig:
        parts[0] += ": " + ", ".join(f"{_name(r)} {_pts(r['estimate'])} pts" for r in sig)
    with_ci = [r for r in recs if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"])]
    excl = [r for r in with_ci if r["ci_low"] > 0 or r["ci_high"] < 0]
    no_ci = m - len(with_ci)
    if not with_ci:
        parts.append("no confidence interval could be computed")
    elif not excl:
        parts.append(f"all {level:.0%} CIs include zero")
    else:
        parts.append(
            f"not all {level:.0%} CIs include zero ({len(excl)} exclude it: "
            + ", ".join(_name(r) for r in excl) + ")"
        )
    if no_ci:
        parts[-1] += f" ({no_ci} comparison(s) too small for an interval)"
    margins = table["margin"].dropna() if "margin" in table else pd.Series(dtype=float)
    if margins.empty:
        parts.append("equivalence not tested (no margin declared)")
    else:
        margin = float(margins.iloc[0])
        eq = [r for r in recs if pd.notna(r["equivalent"]) and bool(r["equivalent"])]
        txt = f"equivalent within ±{margin * 100:g} pts (TOST, α = {alpha:g}): {len(eq)} of {m}"
        if eq and len(eq) < m:
            txt += " (" + ", ".join(_name(r) for r in eq) + ")"
        parts.append(txt)
    untested = int((table["n_pairs"] < 2).sum())
    if untested:
        parts.append(f"{untested} comparison(s) with fewer than 2 seed pairs could not be tested")
    flat = int((table["n_pairs"].ge(2) & table["sd"].eq(0)).sum())
    if flat:
        parts.append(f"{flat} comparison(s) with zero variance of the paired differences "
                     "(typically collapsed runs): no t-test or TOST verdict")
    n = table["n_pairs"].to_numpy()
    floored = np.unique(n[(n >= 2) & (2.0 ** (1 - n.clip(min=1)) >= alpha)])
    if floored.size:
        top = int(floored.max())
        at = f"{top}" if floored.size == 1 else f"≤ {top}"
        parts.append(f"with {at} seed pairs the exact tests cannot reach p < {2.0 ** (1 - top):.4g}")
    return "; ".join(parts) + "."


def across_sentence(across: pd.DataFrame, bayes: pd.DataFrame,
                    comparisons: pd.DataFrame | None = None) -> str:
    """The across-cell verdict to append to :func:`summary_sentence`: per comparison and
    metric pooled over >= 2 cells, the pooled difference with its interval, heterogeneity,
    prediction interval and the Bayesian signed-rank probabilities; "" when no comparison
    spans 2 cells of one metric.

    A pooled interval over 2 or 3 cells that is wider than every one of its cells' own
    t-intervals (``comparisons``) says less than the cells do: it is not summarised, only
    pointed to."""
    parts, wide = [], []
    probs = bayes[bayes["scope"] == "across"] if len(bayes) else pd.DataFrame()
    for r in across.to_dict("records"):
        metric = r.get("metric")
        name = f"{r['treatment']} vs {r['baseline']}"
        of = f" ({metric})" if isinstance(metric, str) and metric else ""
        if not np.isfinite(r["estimate"]) or not np.isfinite(r["ci_low"]):
            parts.append(f"across cells, {name}: {int(r['n_cells'])} usable cell(s), "
                         "no across-cell inference")
            continue
        widest = _widest_cell_interval(comparisons, r)
        if r["n_cells"] <= 3 and np.isfinite(widest) and r["ci_high"] - r["ci_low"] > widest:
            wide.append(f"{name} over {int(r['n_cells'])} cells{of}")
            continue
        verdict = "includes zero" if r["ci_low"] <= 0 <= r["ci_high"] else "excludes zero"
        txt = (f"across {int(r['n_cells'])} cells{of}, {name}: {_pts(r['estimate'])} pts "
               f"[{_pts(r['ci_low'])}, {_pts(r['ci_high'])}] ({r['level']:.0%} CI, "
               f"{_method(r['method'])}; {verdict}), τ = {np.sqrt(r['tau2']) * 100:.2f} pts, "
               f"I² = {r['i2']:.0%}")
        if np.isfinite(r["pi_low"]):
            txt += f", prediction interval [{_pts(r['pi_low'])}, {_pts(r['pi_high'])}]"
        b = probs[(probs["treatment"] == r["treatment"]) & (probs["baseline"] == r["baseline"])
                  & (probs["metric"].fillna("") == (metric or ""))] if len(probs) else probs
        if len(b) and np.isfinite(b["p_better"].iloc[0]):
            b = b.iloc[0]
            rope = float(b["rope"])
            txt += f"; P(better) = {b['p_better']:.2f}"
            txt += (f", P(within ±{rope * 100:g} pts) = {b['p_rope']:.2f}" if rope > 0
                    else " (no margin: no rope)")
            txt += f", P(worse) = {b['p_worse']:.2f}"
        parts.append(txt)
    if wide:
        many = len(wide) > 1
        which = "; ".join(wide) if len(wide) <= 3 else f"{len(wide)} comparisons over 2–3 cells"
        parts.append(f"the pooled interval{'s' if many else ''} of {which} "
                     f"{'are' if many else 'is'} wider than every one of the pooled cells' own "
                     f"intervals and add{'' if many else 's'} nothing to the per-cell results (see the across table)")
    return "".join(f" {p[0].upper()}{p[1:]}." for p in parts)


def _widest_cell_interval(comparisons: pd.DataFrame | None, row: dict) -> float:
    """The widest per-cell t-interval among the cells an across row pooled (NaN if unknown)."""
    if comparisons is None or comparisons.empty:
        return np.nan
    c = comparisons[(comparisons["treatment"] == row["treatment"])
                    & (comparisons["baseline"] == row["baseline"])]
    if isinstance(row.get("metric"), str) and "metric" in c:
        c = c[c["metric"] == row["metric"]]
    width = (c["ci_high"] - c["ci_low"]).dropna()
    return float(width.max()) if len(width) else np.nan


_INTERVAL_NAMES = {"mhksj": "modified HKSJ", "hksj": "HKSJ", "wald": "Wald"}


def _method(method: str) -> str:
    tau, _, interval = str(method).partition("+")
    return f"{tau.upper()}, {_INTERVAL_NAMES.get(interval, interval)}"


def selection_sentences(many: pd.DataFrame, best: pd.DataFrame, rate: pd.DataFrame,
                        interaction: pd.DataFrame, alpha: float) -> str:
    """One sentence each for the many-to-one table, the best set and the rate response (""
    for a table that is empty)."""
    out = []
    if len(many):
        sig = many[many["p_adj"] < alpha]
        holm = int((many["p_holm"] < alpha).sum())
        n_cells = len(many[["task", "model"]].drop_duplicates())
        txt = (f"Max-T over the treatments of each cell (Westfall–Young step-down, family-wise "
               f"α = {alpha:g} per cell): {len(sig)} of {len(many)} treatment-cell comparisons "
               f"in {n_cells} cell{'s' if n_cells != 1 else ''} significant")
        if len(sig):
            txt += " (" + ", ".join(f"{r.treatment} on {r.task}/{r.model}"
                                    for r in sig.itertuples()) + ")"
        out.append(txt + f"; Holm on the paired t-tests: {holm}")
    if len(best):
        level = float(best["level"].iloc[0])
        cells = []
        for (task, model), g in best.groupby(["task", "model"], sort=False):
            members = g.loc[g["in_best_set"], "treatment"].tolist()
            top = g[g["apparent_best"]].iloc[0]
            cells.append(f"{task}/{model} {{{', '.join(map(str, members))}}}, apparent best "
                         f"{top.treatment} {_pts(top.estimate)} pts (naive "
                         f"[{_pts(top.naive_low)}, {_pts(top.naive_high)}], selection-adjusted "
                         f"[{_pts(top.ci_low)}, {_pts(top.ci_high)}])")
        out.append(f"Could be best ({level:.0%} set, Hsu's MCB): " + "; ".join(cells))
    if len(rate):
        fitted = rate[np.isfinite(rate["optimum"].astype(float))]
        if len(fitted):
            level = float(fitted["level"].iloc[0])
            txt = (f"Rate response ({level:.0%} intervals): optimum rate "
                   + "; ".join(f"{r.task}/{r.model} {r.optimum:.2f} [{r.optimum_low:.2f}, "
                               f"{r.optimum_high:.2f}] ({r.curve}), gain {_pts(r.gain)} pts "
                               f"[{_pts(r.gain_low)}, {_pts(r.gain_high)}]"
                               for r in fitted.itertuples()))
            question = {"rate x model": "does the response differ between models",
                        "rate x log n_params": "does it move with log model size"}
            for r in interaction.itertuples():
                txt += (f"; {r.task}: {question.get(r.term, r.term)}? F({r.df_num}, {r.df_den}) = "
                        f"{r.f_stat:.2f}, p = {r.p_interaction:.3g}")
            out.append(txt)
    return "".join(f" {s}." for s in out)
