"""``compare``: the seed-paired comparison table, one row per (task, model, treatment, baseline).

Every p-value and interval comes from :mod:`analysis.paired`, :mod:`analysis.bootstrap` and
:mod:`analysis.power`; this module pairs the runs, runs them per comparison, applies the
multiplicity correction across the whole table and writes the honest caveats into the
``warning`` column.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis._frames import check_runs, ordered_groups, resolve_comparisons, stable_rng, warn
from analysis.audit import pair_runs
from analysis.bootstrap import bootstrap_ci
from analysis.paired import (
    adjust,
    min_exact_p,
    signflip_test,
    snap_ties,
    tost_paired,
    ttest_paired,
    wilcoxon_exact,
)
from analysis.power import mde

# Column meanings: analysis/README.md, "Result tables".
COLUMNS = [
    "task", "model", "treatment", "baseline", "metric", "n_pairs",
    "mean_treatment", "mean_baseline", "estimate", "sd", "se",
    "ci_low", "ci_high", "t_stat", "df", "p_ttest", "p_wilcoxon", "p_signflip",
    "signflip_method", "correction", "p_adj", "significant", "boot_low", "boot_high",
    "d_z", "mde", "margin", "p_tost", "equivalent", "level", "method", "warning",
]
METHOD = "paired t"  # what estimate, ci_low/ci_high and p_adj come from

# Below this many pairs the measured coverage of the 95 % BCa interval falls 1.5-11 points
# short of nominal for normal data (analysis/README.md, bench/analysis.py --coverage).
BOOT_UNDERCOVERS_BELOW = 30


def _one(d: np.ndarray, alpha, margin, n_boot, rng_boot, rng_flip) -> dict:
    n = d.size
    t = ttest_paired(d, alpha)
    out = {
        "n_pairs": n, "estimate": t["mean"], "sd": t["sd"], "se": t["se"],
        "ci_low": t["ci_low"], "ci_high": t["ci_high"], "t_stat": t["t"], "df": t["df"],
        "p_ttest": t["p"], "p_wilcoxon": np.nan, "p_signflip": np.nan,
        "signflip_method": "", "boot_low": np.nan, "boot_high": np.nan,
        "d_z": np.nan, "mde": np.nan, "p_tost": np.nan,
    }
    notes = []
    if n < 2:
        notes.append(f"{n} pair{'' if n == 1 else 's'}: no test possible")
        return out | {"_notes": notes}
    out["p_wilcoxon"] = wilcoxon_exact(d)
    out["p_signflip"], out["signflip_method"] = signflip_test(d, rng=rng_flip)
    if n >= 3:
        out["boot_low"], out["boot_high"] = bootstrap_ci(d, n_boot, alpha, rng_boot)
    sd = t["sd"]
    if sd > 0:
        out["d_z"] = t["mean"] / sd
        out["mde"] = mde(sd, n, alpha)
    elif t["mean"] != 0:
        out["d_z"] = float(np.copysign(np.inf, t["mean"]))
    if margin is not None:
        out["p_tost"] = tost_paired(d, margin)

    rounded = snap_ties(d)
    n_nonzero = int(np.count_nonzero(rounded))
    floor = min_exact_p(n_nonzero)
    if n_nonzero and floor >= alpha:
        pairs_txt = f"{n} pairs" + (f" ({n_nonzero} non-zero)" if n_nonzero < n else "")
        notes.append(f"{pairs_txt}: exact tests cannot reach p<{floor:.4g}")
    if n < 3:
        notes.append("bootstrap CI not computed (n<3)")
    elif n < BOOT_UNDERCOVERS_BELOW:
        notes.append("bootstrap CI under-covers")
    if n_nonzero == 0:
        notes.append("all differences zero (zero variance, typically collapsed runs): "
                     "t-test and TOST undefined, no verdict")
    elif t["degenerate"]:
        notes.append("constant differences (sd=0): t-test and TOST undefined, no verdict")
    elif n_nonzero < n:
        notes.append(f"{n - n_nonzero} zero difference(s) dropped by Wilcoxon")
    if n_nonzero and np.unique(np.abs(rounded[rounded != 0])).size < n_nonzero:
        notes.append("tied |differences|: Wilcoxon exact with midranks")
    return out | {"_notes": notes}


def compare(
    runs: pd.DataFrame,
    baseline: str | None = None,
    alpha: float = 0.05,
    margin: float | None = None,
    correction: str = "holm",
    n_boot: int = 10_000,
    seed: int = 0,
    *,
    comparisons: Sequence[tuple[str, str]] | None = None,
    on_mismatch: str = "raise",
) -> pd.DataFrame:
    """Seed-paired comparison of maskers, one row per task x model x (treatment, baseline).

    ``runs``: one row per run with at least ``task, model, masker, seed, value`` (plus
    optionally ``metric``, ``status`` and the fingerprint columns audited by
    :mod:`analysis.audit`). Pairs come from ``baseline`` (every other masker vs it; default
    ``"none"`` when present) or an explicit ``comparisons`` list of (treatment, baseline).
    Seeds without a partner are dropped with a warning; fingerprint mismatches raise
    :class:`analysis.PairingError` unless ``on_mismatch="drop"``.

    Differences are treatment - baseline in metric units. ``p_adj`` corrects ``p_ttest``
    across the whole table (``correction="holm"``: Holm's step-down, not Holm-Šidák);
    ``significant`` is ``p_adj < alpha``. Bootstrap and Monte Carlo streams derive from
    ``seed`` and the comparison's identity only. Returns a frame with columns ``COLUMNS``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if margin is not None and not (np.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a positive number in metric units, got {margin!r}")
    runs = check_runs(runs)
    pairs = resolve_comparisons(runs, baseline, comparisons)
    paired, _audit, notes = pair_runs(runs, pairs, on_mismatch=on_mismatch)
    metric_of = (
        runs.dropna(subset=["metric"]).groupby("task")["metric"].first().to_dict()
        if "metric" in runs.columns else {}
    )
    rows = []
    for task, model in ordered_groups(runs, ["task", "model"]):
        for treat, base in pairs:
            key = (task, model, treat, base)
            sel = paired[
                (paired["task"] == task) & (paired["model"] == model)
                & (paired["masker"] == treat) & (paired["baseline"] == base)
            ]
            if sel.empty and key not in notes:
                continue  # the pair of maskers was not run on this task x model
            d = sel["diff"].to_numpy(dtype=float)
            res = _one(
                d, alpha, margin, n_boot,
                stable_rng(seed, "bootstrap", *key), stable_rng(seed, "signflip", *key),
            )
            text = notes.get(key, []) + res.pop("_notes")
            rows.append(
                {
                    "task": task, "model": model, "treatment": treat, "baseline": base,
                    "metric": metric_of.get(task), **res,
                    "mean_treatment": float(sel["value_treatment"].mean()) if len(sel) else np.nan,
                    "mean_baseline": float(sel["value_baseline"].mean()) if len(sel) else np.nan,
                    "margin": np.nan if margin is None else float(margin),
                    "level": 1 - alpha, "method": METHOD, "warning": "; ".join(text),
                }
            )
    if not rows:
        raise ValueError("no task x model has runs of both maskers of any comparison")
    table = pd.DataFrame(rows)
    table["correction"] = correction
    table["p_adj"] = adjust(table["p_ttest"].to_numpy(), correction)
    table["significant"] = (table["p_adj"] < alpha).fillna(False).astype(bool)
    if margin is None:
        table["equivalent"] = pd.array([pd.NA] * len(table), dtype="boolean")
    else:
        eq = table["p_tost"] < alpha
        table["equivalent"] = pd.array(
            [pd.NA if np.isnan(p) else bool(e) for p, e in zip(table["p_tost"], eq, strict=True)],
            dtype="boolean",
        )
    # p_ttest and p_tost are NaN on zero-variance differences, so neither flag can rest on them.
    flat = table["n_pairs"].ge(2) & table["sd"].eq(0)
    if flat.any():
        names = ", ".join(f"{r.treatment} vs {r.baseline} ({r.task}/{r.model})"
                          for r in table[flat].itertuples())
        warn(f"{int(flat.sum())} comparison(s) with zero variance of the paired differences "
             f"(typically collapsed runs), no t-test or TOST verdict: {names}")
    untestable = table["n_pairs"] < 2
    if untestable.any():
        warn(f"{int(untestable.sum())} comparison(s) have fewer than 2 pairs: no test possible")
    return table[COLUMNS].reset_index(drop=True)
