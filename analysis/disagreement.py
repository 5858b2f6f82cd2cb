"""What a single run would have told you (the Typhoon lesson, quantified).

For each comparison, with the multi-seed mean difference as the reference:

* ``share_sign_disagree``: share of the n single-seed (matched) comparisons
  ``treatment[s] - baseline[s]`` whose sign differs from the multi-seed mean's;
* ``share_sign_disagree_mismatched``: the same over all n(n-1) seed-mismatched pairs
  ``treatment[s] - baseline[s']`` (s != s'), i.e. what an unpaired single-run comparison,
  such as one against a number from another paper, would have shown. Enumerating every
  pair gives the exact expectation over a random mismatched pair, with no RNG;
* ``share_win`` / ``share_win_mismatched``: share whose |difference| >= ``win_threshold``
  (default 0.005 = 0.5 points): how often a single run would have declared a win;
* ``share_win_opposite``: share of matched single runs declaring a win in the direction
  opposite to the multi-seed mean.

Differences that round to zero (``analysis.paired.TIE_DECIMALS``) have sign 0, so a tie
disagrees with any non-zero mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis._frames import check_runs, resolve_comparisons
from analysis.audit import pair_runs
from analysis.paired import TIE_DECIMALS

COLUMNS = [
    "task", "model", "treatment", "baseline", "n_pairs", "estimate", "share_sign_disagree",
    "n_mismatched", "share_sign_disagree_mismatched", "share_win", "share_win_mismatched",
    "share_win_opposite", "win_threshold",
]


def disagreement_stats(treatment, baseline, win_threshold: float = 0.005) -> dict:
    """Disagreement shares for seed-aligned values ``treatment``/``baseline`` (n,)."""
    t = np.asarray(treatment, dtype=float)
    b = np.asarray(baseline, dtype=float)
    n = t.size
    nan = np.nan
    if n == 0:
        return dict.fromkeys(COLUMNS[4:-1], nan) | {"n_pairs": 0, "n_mismatched": 0}
    d = np.round(t - b, TIE_DECIMALS)
    ref = np.sign(np.round(d.mean(), TIE_DECIMALS))
    thr = win_threshold - 10.0**-TIE_DECIMALS  # a 0.5-point win is a win despite float error
    out = {
        "n_pairs": n, "estimate": float((t - b).mean()),
        "share_sign_disagree": float(np.mean(np.sign(d) != ref)),
        "share_win": float(np.mean(np.abs(d) >= thr)),
        "share_win_opposite": float(np.mean((np.abs(d) >= thr) & (np.sign(d) == -ref) & (ref != 0))),
    }
    if n < 2:
        return out | {"n_mismatched": 0, "share_sign_disagree_mismatched": nan,
                      "share_win_mismatched": nan}
    cross = np.round(t[:, None] - b[None, :], TIE_DECIMALS)[~np.eye(n, dtype=bool)]
    return out | {
        "n_mismatched": int(cross.size),
        "share_sign_disagree_mismatched": float(np.mean(np.sign(cross) != ref)),
        "share_win_mismatched": float(np.mean(np.abs(cross) >= thr)),
    }


def single_run_disagreement(
    runs: pd.DataFrame,
    baseline: str | None = None,
    *,
    comparisons: Sequence[tuple[str, str]] | None = None,
    win_threshold: float = 0.005,
    on_mismatch: str = "raise",
) -> pd.DataFrame:
    """One row per comparison (columns ``COLUMNS``); pairing and comparisons as in
    :func:`analysis.compare`. ``win_threshold`` is in metric units (0.005 = 0.5 points)."""
    runs = check_runs(runs)
    pairs = resolve_comparisons(runs, baseline, comparisons)
    paired, _, _ = pair_runs(runs, pairs, on_mismatch=on_mismatch)
    rows = []
    for key, grp in paired.groupby(["task", "model", "masker", "baseline"], sort=False):
        stats = disagreement_stats(grp["value_treatment"], grp["value_baseline"], win_threshold)
        rows.append(dict(zip(("task", "model", "treatment", "baseline"), key, strict=True)) | stats)
    out = pd.DataFrame(rows, columns=COLUMNS)
    out["win_threshold"] = win_threshold
    return out
