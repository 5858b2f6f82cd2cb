"""How result tables read on a page: human headers, points, p-values as ``< 0.001``.

One place turns a result frame (the snake_case vocabulary of analysis/README.md) into a frame
of display strings, so the PDF report and the LaTeX files show the same headers and number
formats. CSV files keep the raw frame; Markdown keeps the column names with light rounding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

# Columns in metric units, shown in points (x100) with two decimals.
POINT_COLUMNS = {
    "estimate", "sd", "se", "ci_low", "ci_high", "boot_low", "boot_high", "mde", "margin",
    "mean_treatment", "mean_baseline", "effect", "win_threshold", "mean", "min", "max",
    "pi_low", "pi_high", "rope", "score_treatment", "score_baseline",
}
SHARE_COLUMNS = {
    "share_sign_disagree", "share_sign_disagree_mismatched", "share_win",
    "share_win_mismatched", "share_win_opposite", "share", "power_at_n", "target_power",
}
# Interval columns shown as one "[low, high]" cell under one header.
INTERVALS = {"ci_low": ("ci_high", "CI"), "boot_low": ("boot_high", "BCa CI"),
             "pi_low": ("pi_high", "PI")}

HEADERS = {
    "task": "Task", "model": "Model", "treatment": "Treatment", "baseline": "Baseline",
    "masker": "Masker", "metric": "Metric", "n_pairs": "Pairs", "n_seeds": "Seeds",
    "n_examples": "Examples", "mean_treatment": "Treatment mean (pts)",
    "mean_baseline": "Baseline mean (pts)", "estimate": "Δ (pts)", "sd": "SD of Δ (pts)",
    "se": "SE of Δ (pts)", "t_stat": "t", "df": "df", "p_ttest": "p (t-test)",
    "p_wilcoxon": "p (Wilcoxon)", "p_signflip": "p (sign-flip)", "p_adj": "adjusted p",
    "p_tost": "p (TOST)", "p_boot": "p (multiboot)", "p_one_sided": "one-sided p",
    "signflip_method": "Sign-flip", "correction": "Correction", "significant": "Significant",
    "equivalent": "Equivalent", "d_z": "Effect d_z", "mde": "MDE (pts)",
    "margin": "Margin (pts)", "level": "Level", "method": "Method", "warning": "Notes",
    "n_mismatched": "Mismatched pairs", "share_sign_disagree": "Sign differs (same seed)",
    "share_sign_disagree_mismatched": "Sign differs (other seed)",
    "share_win": "Claims a win (same seed)", "share_win_mismatched": "Claims a win (other seed)",
    "share_win_opposite": "Wrong-way win (same seed)", "win_threshold": "Win at (pts)",
    "effect_label": "Effect", "effect": "Effect (pts)", "effect_points": "Effect (pts)",
    "power_at_n": "Power now", "seeds_needed": "Seeds for target power", "alpha": "α",
    "target_power": "Target power", "component": "Component", "description": "What it is",
    "sum_sq": "Sum of squares", "mean_sq": "Mean square", "share": "Share", "mean": "Mean (pts)", "min": "Min (pts)",
    "max": "Max (pts)", "seed": "Seed", "status": "Status", "detail": "Detail",
    "predicted_class": "Predicted class", "n_boot": "Resamples",
    "n_cells": "Cells", "p_val": "p", "tau2": "τ² (pts²)", "i2": "I²", "scope": "Scope",
    "rope": "ROPE ± (pts)", "p_better": "P(better)", "p_rope": "P(in ROPE)",
    "p_worse": "P(worse)", "degenerate": "Degenerate",
    "score_treatment": "Treatment (pts)", "score_baseline": "Baseline (pts)",
    "p_value": "p", "n_samples": "Resamples",
}


def fmt_p(p) -> str:
    """A p-value: three decimals, ``< 0.001`` below that; never ``0.0000``."""
    if p is None or p is pd.NA or not np.isfinite(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_points(x, digits: int = 2) -> str:
    """A value in metric units, shown in points (x100)."""
    if x is None or x is pd.NA or not np.isfinite(x):
        return "–"
    return f"{x * 100:.{digits}f}".replace("-", "−")


def fmt_value(col: str, value) -> str:
    """One cell of column ``col`` as display text."""
    if value is None or value is pd.NA:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if col.startswith("p_"):
        return fmt_p(value)
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "–"
        if col in POINT_COLUMNS:
            return fmt_points(value)
        if col in SHARE_COLUMNS:
            return f"{value:.0%}" if col == "target_power" else f"{value:.2f}"
        if col in ("level", "i2"):
            return f"{value:.0%}"
        if col == "tau2":  # a variance in metric units²: points² is x 10^4
            return f"{value * 1e4:.3g}"
        if math.isinf(value):
            return "∞" if value > 0 else "−∞"
        if col in ("alpha", "effect_points"):
            return f"{value:g}"
        if col in ("sum_sq", "mean_sq"):
            return f"{value:.3g}"
        if value == int(value) and abs(value) < 1e6 and col in ("df", "seeds_needed"):
            return str(int(value))
        return f"{value:.2f}".replace("-", "−")
    return str(value)


def display_frame(df: pd.DataFrame, columns: Sequence[str] | None = None,
                  fold: bool = True) -> pd.DataFrame:
    """``df`` as display strings under human headers.

    ``fold``: task/model become one "Task / model" column and treatment/baseline one
    "Comparison" column, so wide tables fit a page. ``ci_low``/``ci_high`` (and the BCa
    pair) become one "95% CI (pts)" column, the level taken from the ``level`` column.
    """
    cols = [c for c in (columns or df.columns) if c in df.columns]
    out = {}
    level = float(df["level"].iloc[0]) if "level" in df and len(df) else 0.95
    if fold and {"task", "model"} <= set(df.columns):
        out["Task / model"] = (df["task"].astype(str) + " / " + df["model"].astype(str)).tolist()
        cols = [c for c in cols if c not in ("task", "model")]
    if fold and {"treatment", "baseline"} <= set(df.columns):
        out["Comparison"] = (df["treatment"].astype(str) + " vs "
                             + df["baseline"].astype(str)).tolist()
        cols = [c for c in cols if c not in ("treatment", "baseline")]
    for col in cols:
        if col in INTERVALS and INTERVALS[col][0] in df.columns:
            high, name = INTERVALS[col]
            out[f"{level:.0%} {name} (pts)"] = [
                "–" if not (np.isfinite(lo) and np.isfinite(hi))
                else f"[{fmt_points(lo)}, {fmt_points(hi)}]"
                for lo, hi in zip(df[col].astype(float), df[high].astype(float), strict=True)]
        elif col in {h for h, _ in INTERVALS.values()}:
            continue
        else:
            out[HEADERS.get(col, col)] = [fmt_value(col, v) for v in df[col].tolist()]
    return pd.DataFrame(out)
