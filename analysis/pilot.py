"""The pilot table: does each task × model cell learn, how noisy are its seeds, how many does it need?

Pure (frames in, frame out; no torch). ``study pilot`` runs the first seeds of a protocol and
renders :func:`pilot_table`; the report can show the same frame.

Definitions (per run, from its stored predictions):

- *majority level*: the metric of always predicting the eval split's most frequent label;
  *chance level*: the expected metric of guessing uniformly among the classes (mean over
  ``CHANCE_DRAWS`` draws from ``numpy.random.default_rng(seed)``).
- *collapsed*: :func:`analysis.collapse.collapsed_runs` (the one definition: a single class for
  every example, or an accuracy within noise of the majority class's).

Seeds needed use the paired-t power functions of :mod:`analysis.power` with the paired
differences' SD when a treatment ran beside its baseline (``sd_source = "paired"``); with the
baseline alone the paired SD is taken as √2 × the seed SD (``"sqrt2_seed_sd"``: pairs that
share nothing — conservative, since pairing by seed usually correlates the two runs). With two
pilot seeds an SD has one degree of freedom: the seeds-needed numbers are rough, and say so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from analysis.collapse import collapsed_runs
from analysis.metrics import get_metric
from analysis.power import TARGET_POWER, _upper_tail, seeds_needed

CHANCE_DRAWS = 200
MAX_EQUIVALENCE_SEEDS = 10_000

COLUMNS = ["task", "model", "masker", "baseline", "metric", "n_runs", "mean", "sd_seed", "majority",
           "chance", "n_collapsed", "n_pairs", "sd_diff", "sd_source", "seeds_needed", "seeds_needed_equivalence",
           "planned_seeds", "margin", "level", "run_s", "verdict"]


def _score(metric: str, labels: np.ndarray, predictions: np.ndarray, num_labels: int) -> float:
    fn = get_metric(metric)
    return float(fn(labels, predictions, num_labels) if metric == "macro_f1" else fn(labels, predictions))


def reference_levels(metric: str, labels, num_labels: int | None = None, seed: int = 0) -> tuple[float, float]:
    """(majority, chance) levels of ``metric`` on eval ``labels`` (n,)."""
    y = np.asarray(labels)
    k = num_labels or int(y.max()) + 1
    majority = _score(metric, y, np.full_like(y, np.bincount(y, minlength=k).argmax()), k)
    rng = np.random.default_rng(seed)
    chance = float(np.mean([_score(metric, y, rng.integers(0, k, size=len(y)), k) for _ in range(CHANCE_DRAWS)]))
    return majority, chance


def equivalence_power(margin: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the paired TOST (two one-sided t-tests at ``alpha``) to declare equivalence within
    ±``margin`` when the true difference is 0, for paired-difference SD ``sd`` and ``n`` pairs.

    Each one-sided test rejects with probability P(T > t_{1−α, n−1}), T ~ nct(n − 1, margin·√n/sd);
    both must reject, so power ≥ 1 − 2·(1 − that) (the union bound: the usual approximation, exact
    as the power nears 1 and never optimistic)."""
    if n < 2 or not np.isfinite(sd) or sd <= 0 or not np.isfinite(margin) or margin <= 0:
        return np.nan
    df = n - 1
    one_sided = float(_upper_tail(stats.t.isf(alpha, df), df, margin / sd * np.sqrt(n)))
    return max(0.0, 2 * one_sided - 1)


def seeds_needed_equivalence(margin: float, sd: float, alpha: float = 0.05, power: float = TARGET_POWER) -> float:
    """Smallest n >= 2 with :func:`equivalence_power` >= ``power``; NaN if undefined or huge."""
    if not np.isfinite(sd) or sd <= 0 or not np.isfinite(margin) or margin <= 0:
        return np.nan
    # Start near the normal approximation n ≈ ((z_{1−α} + z_{1−(1−power)/2}) · sd / margin)², then step.
    z = stats.norm.isf(alpha) + stats.norm.isf((1 - power) / 2)
    n = max(2, int((z * sd / margin) ** 2) - 3)
    while equivalence_power(margin, sd, n, alpha) < power:
        n += 1
        if n > MAX_EQUIVALENCE_SEEDS:
            return np.nan
    while n > 2 and equivalence_power(margin, sd, n - 1, alpha) >= power:
        n -= 1
    return float(n)


def _verdict(n_collapsed: int, n_runs: int, needed: list[float], planned: int, margin: float | None) -> str:
    if n_collapsed:
        return f"collapsed ({n_collapsed} of {n_runs} runs)"
    if margin is None:
        return "ok (no margin declared: noise not judged)"
    finite = [x for x in needed if np.isfinite(x)]
    if not finite:
        return "ok (seed SD not measurable)"
    worst = int(max(finite))
    if worst > planned:
        return f"too noisy for the planned seeds ({planned} planned, {worst} needed)"
    return "ok"


def pilot_table(runs: pd.DataFrame, preds: pd.DataFrame, comparisons: list[tuple[str, str]], *,
                margin: float | None, alpha: float = 0.05, planned_seeds: int, power: float = TARGET_POWER,
                seed: int = 0, levels: dict | None = None) -> pd.DataFrame:
    """One row per task × model × masker that ran in the pilot.

    ``runs``: the analysis frame (``run_id, task, model, masker, seed, metric, value, wall_time_s``);
    ``preds``: their predictions (``run_id, label, prediction``); ``comparisons``: (treatment,
    baseline) pairs of the protocol; ``levels``: task → (majority, chance) for tasks whose levels
    come from elsewhere (generation tasks: :func:`study.pilot.generation_levels`). Baseline rows have ``masker == baseline`` and no paired SD.
    ``verdict`` is the cell's (task × model) verdict, repeated on each of its rows: collapsed if
    any of its runs collapsed, too noisy if the planned seeds are fewer than the seeds needed to
    detect ``margin`` at ``power`` or to show equivalence within it, else ok. Columns: :data:`COLUMNS`.
    """
    if runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    flags = collapsed_runs(preds).set_index("run_id")
    levels = levels or {}
    baselines = {b for _, b in comparisons}
    rows = []
    for (task, model), cell in runs.groupby(["task", "model"], sort=False):
        metric = str(cell["metric"].iloc[0])
        if task in levels:  # generation tasks: the trivial systems' scores, computed from the task data
            majority, chance = levels[task]
        else:
            labels_of = preds[preds["run_id"] == cell["run_id"].iloc[0]].sort_values("example_id")["label"].to_numpy()
            k = int(max(preds.loc[preds["run_id"].isin(cell["run_id"]), ["label", "prediction"]].max())) + 1
            majority, chance = reference_levels(metric, labels_of, k, seed)
        by_masker = {m: g.set_index("seed")["value"] for m, g in cell.groupby("masker", sort=False)}
        cell_rows = []
        for masker, g in cell.groupby("masker", sort=False):
            values = g["value"].astype(float)
            sd_seed = float(values.std(ddof=1)) if len(values) >= 2 else np.nan
            pair = next(((t, b) for t, b in comparisons if t == masker and b in by_masker), None)
            if pair is not None:
                diff = (by_masker[pair[0]] - by_masker[pair[1]]).dropna()
                sd_diff = float(diff.std(ddof=1)) if len(diff) >= 2 else np.nan
                n_pairs, source, baseline = len(diff), "paired", pair[1]
            else:
                baseline = masker if masker in baselines else next((b for t, b in comparisons if t == masker), "")
                sd_diff, n_pairs, source = np.sqrt(2) * sd_seed, 0, "sqrt2_seed_sd"
            needed = seeds_needed(margin, sd_diff, alpha, power) if margin else np.nan
            needed_eq = seeds_needed_equivalence(margin, sd_diff, alpha, power) if margin else np.nan
            cell_rows.append({
                "task": task, "model": model, "masker": masker, "baseline": baseline, "metric": metric,
                "n_runs": len(g), "mean": float(values.mean()), "sd_seed": sd_seed, "majority": majority,
                "chance": chance, "n_collapsed": int(flags.loc[g["run_id"], "collapsed"].sum()),
                "n_pairs": n_pairs, "sd_diff": sd_diff, "sd_source": source, "seeds_needed": needed,
                "seeds_needed_equivalence": needed_eq, "planned_seeds": planned_seeds, "margin": margin,
                "level": 1 - alpha, "run_s": float(g["wall_time_s"].median()),
            })
        # A paired SD, where one was measured, is the one the study's tests will face.
        paired = [r for r in cell_rows if r["sd_source"] == "paired"]
        judged = paired or cell_rows
        verdict = _verdict(sum(r["n_collapsed"] for r in cell_rows), sum(r["n_runs"] for r in cell_rows),
                           [x for r in judged for x in (r["seeds_needed"], r["seeds_needed_equivalence"])],
                           planned_seeds, margin)
        rows += [{**r, "verdict": verdict} for r in cell_rows]
    out = pd.DataFrame(rows, columns=COLUMNS)
    for col in ("seeds_needed", "seeds_needed_equivalence"):
        out[col] = out[col].astype("Float64").round().astype("Int64")
    return out


def cell_verdicts(table: pd.DataFrame) -> pd.DataFrame:
    """One row per task × model: ``task, model, verdict`` (the table's verdict column, deduplicated)."""
    return table[["task", "model", "verdict"]].drop_duplicates().reset_index(drop=True)
