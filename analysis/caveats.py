"""The caveats a reader must see beside the tables, worded once.

``study analyze`` (terminal and ``summary.txt``) and the PDF report print these strings from
:class:`analysis.AnalysisResult`; nothing recomputes them. Plain text, no markup.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.collapse import uninformative_comparisons
from analysis.paired import min_exact_p

# Below this many pairs exact rank tests cannot reach p < 0.05 and bootstrap intervals
# under-cover badly (analysis/README.md, "Which interval to trust").
FEW_PAIRS = 6


def small_n(comparisons: pd.DataFrame) -> list[str]:
    if comparisons.empty or comparisons["n_pairs"].max() >= FEW_PAIRS:
        return []
    n = int(comparisons["n_pairs"].max())
    return [f"With {n} paired seeds, exact rank tests cannot reach p < {min_exact_p(n):.4g} and "
            "bootstrap intervals under-cover; the t-interval is the one to read. A non-significant "
            "result here is weak evidence of no effect: see the power table and, where a margin is "
            "declared, the equivalence tests."]


def unfinished_maskers(runs: pd.DataFrame) -> dict[str, str]:
    """masker -> "<masker>: 0 of <n> runs done — not compared" for every masker of the runs
    frame (all statuses: ``Store.load_grid``) without a single finished run with a value."""
    if "status" not in runs.columns or runs.empty:
        return {}
    value = pd.to_numeric(runs["value"], errors="coerce") if "value" in runs else np.nan
    done = runs["status"].eq("done") & np.isfinite(np.asarray(value, dtype=float))
    out = {}
    for masker, n in runs.groupby("masker", sort=False).size().items():
        if not done[runs["masker"] == masker].any():
            failed = int((runs["status"][runs["masker"] == masker] == "failed").sum())
            why = f" ({failed} failed)" if failed else ""
            out[str(masker)] = f"{masker}: 0 of {n} runs done{why} — not compared"
    return out


def maxt_floor(many: pd.DataFrame, alpha: float) -> list[str]:
    """Max-T by sign flips cannot reject with few seeds: say so once."""
    if many.empty:
        return []
    n = int(many["n_pairs"].max())
    if n < 1 or 2.0 / 2**n < alpha:
        return []
    return [f"With {n} paired seeds the max-T sign-flip p-values (many_to_one) cannot go below "
            f"{2.0 / 2**n:.4g}: no treatment can be declared different from the baseline by them "
            f"at α = {alpha:g}; the simultaneous intervals and Holm's adjusted t-tests still can."]


def collapse(comparisons: pd.DataFrame, runs: pd.DataFrame, collapsed: pd.DataFrame
             ) -> tuple[list[str], list[str]]:
    """(caveats, uninformative comparison names) for collapsed runs (:mod:`analysis.collapse`)."""
    from analysis.collapse import describe

    if collapsed.empty:
        return [], []
    out = [f"{len(collapsed)} of {len(runs)} runs collapsed ({describe(collapsed)}: the model learned "
           "nothing beyond a trivial answer): differences between such runs say "
           "nothing about the maskers. More training data, steps or a larger backbone are needed "
           "before the comparison is informative."]
    dead = uninformative_comparisons(comparisons, runs, collapsed) if len(comparisons) else []
    if dead:
        out.append(f"{len(dead)} of {len(comparisons)} comparisons are between runs that all "
                   f"collapsed ({'; '.join(dead)}): their zero differences, and any 'equivalent' "
                   "verdict for them, are artefacts, not evidence.")
    return out, dead


def multiboot_disagreement(comparisons: pd.DataFrame, mb: pd.DataFrame | None,
                           alpha: float) -> list[str]:
    """Where the multibootstrap and the seed-level t-test reach different verdicts, say so
    and why. Significant only by the multibootstrap: with few seeds, resampling n seeds with
    replacement treats them as the whole population of seeds, so its interval is too narrow
    (as the seed-level bootstrap's measured coverage shows). Significant only by the t-test:
    the example resampling finds the difference within test-set noise."""
    if mb is None or mb.empty or comparisons.empty:
        return []
    keys = ["task", "model", "treatment", "baseline"]
    both = mb[keys + ["p_boot", "n_pairs"]].merge(comparisons[keys + ["p_ttest"]], on=keys)
    both = both[np.isfinite(both["p_boot"]) & np.isfinite(both["p_ttest"])]
    out = []
    only_boot = both[(both["p_boot"] < alpha) & (both["p_ttest"] >= alpha)]
    if len(only_boot):
        out.append(f"The multibootstrap calls {len(only_boot)} of {len(both)} comparisons significant that the "
                   f"seed-level t-test does not ({_example(only_boot.iloc[0])}). With "
                   f"{int(only_boot['n_pairs'].max())} seeds its seed resampling under-covers: drawing n seeds "
                   "with replacement treats them as the whole population of seeds, so its interval is too "
                   "narrow. Trust the seed-level tests.")
    only_t = both[(both["p_ttest"] < alpha) & (both["p_boot"] >= alpha)]
    if len(only_t):
        out.append(f"The multibootstrap does not confirm {len(only_t)} of {len(both)} comparisons the seed-level "
                   f"t-test calls significant ({_example(only_t.iloc[0])}): resampling the evaluation examples "
                   "as well, it finds the difference within test-set noise, so it may not hold on other data.")
    return out


def _example(r) -> str:
    p_boot = "< 0.001" if r["p_boot"] < 0.001 else f"= {r['p_boot']:.3f}"
    p_t = "< 0.001" if r["p_ttest"] < 0.001 else f"= {r['p_ttest']:.3f}"
    return (f"e.g. {r['treatment']} vs {r['baseline']} on {r['task']}/{r['model']}: multibootstrap "
            f"p {p_boot}, paired t-test p {p_t}")


def pairing_verdict(audit: pd.DataFrame, runs: pd.DataFrame) -> str:
    """One sentence on the pairing audit and the fingerprint blocks of the runs."""
    parts = []
    if len(audit):
        ok = int(audit["status"].astype(str).eq("ok").sum())
        parts.append(f"{ok} of {len(audit)} seed pairs audited ok (same data order and head "
                     "initialisation fingerprints).")
    fps = [c for c in ("data_order_fp", "head_init_fp") if c in runs.columns]
    if fps and len(runs):
        blocks = runs.groupby(["task", "model", "seed"])[fps].nunique()
        bad = int((blocks > 1).any(axis=1).sum())
        parts.append(f"{len(blocks)} task × model × seed blocks; " + (
            "every block has one data-order and one head-init fingerprint across its maskers."
            if not bad else f"{bad} block(s) have differing fingerprints (those pairs are refused "
            "by the analysis)."))
    return " ".join(parts) or "No pairing to audit."
