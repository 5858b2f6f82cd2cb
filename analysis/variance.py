"""Variance decomposition of the metric across a study's design factors.

A sequential (type I) ANOVA by least squares, with terms entered in this order:

``task``, ``model``, ``task:model`` (the cell of the grid), ``masker``,
``masker:task:model`` (the masker effect varying by cell), ``seed(task:model)`` (the seed
nested in its cell: seed 3 on one task and backbone has nothing to do with seed 3 on
another, but within a cell it is shared by every masker -- the pairing), ``residual``.

Each row reports the term's sum of squares and its share of the total sum of squares. In
a balanced grid the terms are orthogonal and the order does not matter; with missing runs
earlier terms take the shared part. Terms whose factor has one level (one task, say) are
left out. Checked against ``statsmodels`` ``anova_lm(typ=1)`` and hand-computed group means.

Tasks with different primary metrics (macro-F1 and weighted F1, say) are not decomposed
together: a sum of squares in two units has no meaning. Each metric gets its own
decomposition (its rows carry it in the ``metric`` column; shares sum to 1 per metric).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis._frames import check_runs

COLUMNS = ["metric", "component", "description", "df", "sum_sq", "mean_sq", "share"]
TERMS = [
    ("task", ("task",), "differences between tasks"),
    ("model", ("model",), "differences between backbones"),
    ("task:model", ("task", "model"), "task x backbone interaction"),
    ("masker", ("masker",), "differences between maskers"),
    ("masker:task:model", ("masker", "task", "model"), "masker effect varying by task x backbone"),
    ("seed(task:model)", ("seed", "task", "model"), "seed-to-seed variation shared by maskers"),
]


def _rss_rank(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    coef, _, rank, _ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ coef
    return float(resid @ resid), int(rank)


def variance_decomposition(runs: pd.DataFrame) -> pd.DataFrame:
    """Shares of the metric's variance by design factor (columns ``COLUMNS``), per metric.

    ``runs``: one row per run with ``task, model, masker, seed, value`` (and ``metric``).
    Returns, per metric in order of first appearance, one row per included term plus
    ``residual``; ``share`` sums to 1 per metric (NaN if all values are equal). ``metric``
    is None when the runs frame has no ``metric`` column.
    """
    runs = check_runs(runs)
    if "metric" not in runs.columns:
        return _decompose(runs).assign(metric=None)[COLUMNS]
    metrics = runs["metric"].astype(object).where(runs["metric"].notna(), None)
    parts = [_decompose(runs[metrics.map(lambda x, m=m: x == m)]).assign(metric=m)
             for m in pd.unique(metrics)]
    return pd.concat(parts, ignore_index=True)[COLUMNS]


def _decompose(runs: pd.DataFrame) -> pd.DataFrame:
    y = runs["value"].to_numpy(dtype=float)
    n = y.size
    x = np.ones((n, 1))
    rss, rank = _rss_rank(x, y)
    # All-equal values leave float noise in the total sum of squares; no variance, no shares.
    total = rss if y.size and np.ptp(y) > 1e-12 * np.abs(y).max() else 0.0
    rows = []
    for name, factors, desc in TERMS:
        if runs[factors[0]].nunique() < 2:
            continue
        labels = runs[list(factors)].astype(str).agg("\x1f".join, axis=1)
        dummies = pd.get_dummies(labels).to_numpy(dtype=float)
        x_new = np.hstack([x, dummies])
        rss_new, rank_new = _rss_rank(x_new, y)
        if rank_new == rank:
            continue
        ss = max(rss - rss_new, 0.0)
        rows.append({"component": name, "description": desc, "df": rank_new - rank, "sum_sq": ss})
        x, rss, rank = x_new, rss_new, rank_new
    rows.append({"component": "residual", "description": "masker x seed within a cell",
                 "df": n - rank, "sum_sq": max(rss, 0.0)})
    out = pd.DataFrame(rows, columns=COLUMNS[1:])
    with np.errstate(divide="ignore", invalid="ignore"):
        out["mean_sq"] = np.where(out["df"] > 0, out["sum_sq"] / out["df"].clip(lower=1), np.nan)
        out["share"] = out["sum_sq"] / total if total > 0 else np.nan
    out["df"] = out["df"].astype(int)
    return out
