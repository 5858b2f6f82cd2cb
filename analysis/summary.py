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


def across_sentence(across: pd.DataFrame, bayes: pd.DataFrame) -> str:
    """The across-cell verdict to append to :func:`summary_sentence`: per comparison made in
    >= 2 cells, the pooled difference with its interval, heterogeneity, prediction interval
    and the Bayesian signed-rank probabilities; "" when no comparison spans 2 cells."""
    parts = []
    probs = bayes[bayes["scope"] == "across"].set_index(["treatment", "baseline"]) \
        if len(bayes) else pd.DataFrame()
    for r in across.to_dict("records"):
        name = f"{r['treatment']} vs {r['baseline']}"
        if not np.isfinite(r["estimate"]) or not np.isfinite(r["ci_low"]):
            parts.append(f"across cells, {name}: {int(r['n_cells'])} usable cell(s), "
                         "no across-cell inference")
            continue
        verdict = "includes zero" if r["ci_low"] <= 0 <= r["ci_high"] else "excludes zero"
        txt = (f"across {int(r['n_cells'])} cells, {name}: {_pts(r['estimate'])} pts "
               f"[{_pts(r['ci_low'])}, {_pts(r['ci_high'])}] ({r['level']:.0%} CI, "
               f"{_method(r['method'])}; {verdict}), τ = {np.sqrt(r['tau2']) * 100:.2f} pts, "
               f"I² = {r['i2']:.0%}")
        if np.isfinite(r["pi_low"]):
            txt += f", prediction interval [{_pts(r['pi_low'])}, {_pts(r['pi_high'])}]"
        key = (r["treatment"], r["baseline"])
        if key in probs.index and np.isfinite(probs.loc[key, "p_better"]):
            b = probs.loc[key]
            rope = float(b["rope"])
            txt += f"; P(better) = {b['p_better']:.2f}"
            txt += (f", P(within ±{rope * 100:g} pts) = {b['p_rope']:.2f}" if rope > 0
                    else " (no margin: no rope)")
            txt += f", P(worse) = {b['p_worse']:.2f}"
        parts.append(txt)
    return "".join(f" {p[0].upper()}{p[1:]}." for p in parts)


def _method(method: str) -> str:
    tau, _, interval = str(method).partition("+")
    return f"{tau.upper()}, {'HKSJ' if interval == 'hksj' else interval.capitalize()}"
