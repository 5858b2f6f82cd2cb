"""Input checks shared by every analysis entry point: the runs frame, the comparison list,
and the per-comparison random streams.

Kept separate so that every public function validates its input the same way and the
error messages name the offending column, masker or task.
"""

from __future__ import annotations

import difflib
import hashlib
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

REQUIRED_RUN_COLUMNS = ("task", "model", "masker", "seed", "value")


class AnalysisWarning(UserWarning):
    """Something the analysis did to the data, or a limit of a result, that a reader must know."""


def warn(message: str) -> None:
    warnings.warn(message, AnalysisWarning, stacklevel=3)


def check_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Validate and clean a runs frame (one row per run).

    Keeps only completed runs (``status == "done"`` when a ``status`` column exists) with a
    finite ``value`` and a ``seed`` (runs without one are named in the warning); refuses
    duplicated (task, model, masker, seed) cells, since averaging them silently would break
    the one-run-per-seed pairing. Returns a new frame.
    """
    if not isinstance(runs, pd.DataFrame):
        raise TypeError(f"runs must be a pandas DataFrame, got {type(runs).__name__}")
    missing = [c for c in REQUIRED_RUN_COLUMNS if c not in runs.columns]
    if missing:
        raise ValueError(
            f"runs frame lacks column(s) {missing}; it needs {list(REQUIRED_RUN_COLUMNS)}"
        )
    df = runs.copy()
    if "study" in df.columns and df["study"].nunique(dropna=True) > 1:
        raise ValueError(
            f"runs holds several studies {sorted(map(str, df['study'].unique()))}; "
            "analyse one study at a time"
        )
    if "status" in df.columns:
        not_done = df["status"] != "done"
        if not_done.any():
            warn(f"ignoring {int(not_done.sum())} run(s) whose status is not 'done'")
            df = df[~not_done]
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    bad = ~np.isfinite(df["value"].to_numpy(dtype=float))
    if bad.any():
        warn(f"ignoring {int(bad.sum())} run(s) without a finite value")
        df = df[~bad]
    # A missing seed cannot be paired; left in, the merge would pair NaN with NaN.
    no_seed = df["seed"].isna().to_numpy()
    if no_seed.any():
        cols = ["run_id"] if "run_id" in df.columns else ["task", "model", "masker"]
        who = ", ".join("/".join(map(str, r)) for r in df.loc[no_seed, cols].itertuples(index=False))
        warn(f"ignoring {int(no_seed.sum())} run(s) without a seed (they cannot be paired): {who}")
        df = df[~no_seed]
    dup = df.duplicated(subset=["task", "model", "masker", "seed"], keep=False)
    if dup.any():
        cells = df.loc[dup, ["task", "model", "masker", "seed"]].drop_duplicates()
        first = cells.iloc[0].to_dict()
        raise ValueError(
            f"{len(cells)} (task, model, masker, seed) cell(s) have more than one run, "
            f"e.g. {first}; a seed-paired analysis needs exactly one run per cell"
        )
    if "metric" in df.columns:
        per_task = df.groupby("task", sort=False)["metric"].nunique(dropna=True)
        if (per_task > 1).any():
            raise ValueError(
                f"task(s) {list(per_task[per_task > 1].index)} mix several primary metrics"
            )
    return df.reset_index(drop=True)


def _did_you_mean(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def resolve_comparisons(
    runs: pd.DataFrame,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] | None = None,
) -> list[tuple[str, str]]:
    """The list of (treatment, baseline) masker pairs a study compares.

    Either ``baseline`` (every other masker against it) or an explicit ``comparisons`` list
    (the Typhoon replication compares typhoon vs random and typhoon vs whole-word). With
    neither, a masker called ``"none"`` is the baseline when one exists.
    """
    maskers = list(pd.unique(runs["masker"]))
    if baseline is not None and comparisons is not None:
        raise ValueError("give either baseline or comparisons, not both")
    if comparisons is None:
        if baseline is None:
            if "none" not in maskers:
                raise ValueError(
                    f"no baseline given and no masker called 'none'; maskers are {maskers}"
                )
            baseline = "none"
        if baseline not in maskers:
            raise ValueError(
                f"baseline {baseline!r} not among the maskers {maskers}"
                + _did_you_mean(baseline, maskers)
            )
        pairs = [(m, baseline) for m in maskers if m != baseline]
    else:
        pairs = []
        for item in comparisons:
            if len(item) != 2:
                raise ValueError(f"a comparison is a (treatment, baseline) pair, got {item!r}")
            treat, base = item
            for name in (treat, base):
                if name not in maskers:
                    raise ValueError(
                        f"comparison {item!r}: masker {name!r} not in the runs {maskers}"
                        + _did_you_mean(name, maskers)
                    )
            if treat == base:
                raise ValueError(f"comparison {item!r} compares a masker with itself")
            if (treat, base) not in pairs:
                pairs.append((treat, base))
    if not pairs:
        raise ValueError(f"nothing to compare: maskers are {maskers}")
    return pairs


def stable_rng(seed: int, *key: object) -> np.random.Generator:
    """A Generator determined by ``seed`` and a comparison's identity.

    Hashing the key (rather than spawning streams in table order) keeps a comparison's
    bootstrap identical when other comparisons are added or removed, or run in parallel.
    """
    digest = hashlib.sha256(repr(tuple(str(k) for k in key)).encode()).digest()
    words = np.frombuffer(digest[:16], dtype=np.uint32).tolist()
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def ordered_groups(df: pd.DataFrame, cols: Sequence[str]) -> list[tuple]:
    """Distinct values of ``cols`` in order of first appearance (the protocol's order)."""
    return [tuple(r) for r in df[list(cols)].drop_duplicates().itertuples(index=False)]


def metric_map(runs: pd.DataFrame | None, metric_by_task: dict | None, tasks) -> dict:
    """task -> its primary metric: the runs frame's ``metric`` column, overridden by
    ``metric_by_task``. A classification metric (analysis.metrics) or a generation metric
    (analysis.textmetrics); an unknown name raises KeyError naming both lists."""
    from analysis.metrics import METRICS
    from analysis.textmetrics import TEXT_METRICS

    found = {}
    if runs is not None and "metric" in runs.columns:
        found = runs.dropna(subset=["metric"]).groupby("task")["metric"].first().to_dict()
    found.update(metric_by_task or {})
    missing = [t for t in tasks if t not in found]
    if missing:
        raise ValueError(
            f"no primary metric for task(s) {missing}: pass runs with a 'metric' column "
            "or metric_by_task={task: 'f1' | 'mcc' | 'accuracy' | 'macro_f1' | 'bleu' | ...}"
        )
    for t in tasks:
        if found[t] not in METRICS and found[t] not in TEXT_METRICS:
            known = sorted(METRICS) + TEXT_METRICS.names()
            raise KeyError(f"task {t!r}: unknown metric {found[t]!r}"
                           f"{_did_you_mean(found[t], known)}; known: {known}")
    return found
