"""Collapsed runs — one definition, used by the pilot, ``study analyze`` and the report.

A run has *collapsed* when its final evaluation shows it learned nothing beyond a trivial
answer. The criteria are columns of :func:`collapsed_runs`, so every table can say which one fired:

- classification (predictions with ``label`` and ``prediction``):
  ``single_class`` — it predicted the same class for every example; ``near_majority`` — its
  accuracy is not above the majority class's by more than noise,
  ``majority + NOISE_Z · sqrt(m (1 − m) / n)`` (the binomial standard error of an accuracy m on n
  examples);
- generation (generations with ``generation`` text): ``single_output`` — the same text for every
  example (empty included); ``empty_output`` — an empty text for every example.

``collapsed`` is the OR of the criteria. Between two collapsed runs a paired difference says
nothing about the maskers (between two single-class runs it is exactly zero: a t-test is
undefined and TOST declares "equivalence" with zero variance, an artefact). The report and
``study analyze`` use these functions to say so.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

NOISE_Z = 2.0
RUN_KEYS = ("run_id", "task", "model", "masker", "seed")
CLASS_CRITERIA = ("single_class", "near_majority")
GENERATION_CRITERIA = ("single_output", "empty_output")
COLUMNS = ["accuracy", "majority_accuracy", "predicted_class", *CLASS_CRITERIA, *GENERATION_CRITERIA, "collapsed"]


def _keys(frame: pd.DataFrame) -> list[str]:
    return [k for k in RUN_KEYS if k in frame.columns]


def collapsed_runs(preds: pd.DataFrame | None = None, generations: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per run: the run's keys (those of ``run_id, task, model, masker, seed`` the frames
    carry), the criteria columns (NaN/False where a criterion does not apply) and ``collapsed``.

    ``preds``: one row per run × eval example with ``label`` and ``prediction`` (classification) —
    rows of generation runs (a ``stats`` or ``generation`` value; whatever placeholder their label
    and prediction hold) are judged as generations; ``generations``: more generation rows."""
    if preds is not None and not preds.empty:
        text = pd.Series(False, index=preds.index)
        for col in ("stats", "generation"):
            if col in preds.columns:
                text |= preds[col].notna()
        if text.any():
            generations = pd.concat([g for g in (generations, preds[text]) if g is not None and not g.empty],
                                    ignore_index=True)
            preds = preds[~text]
    rows = []
    for frame, judge in ((preds, _judge_classes), (generations, _judge_generations)):
        if frame is None or frame.empty:
            continue
        keys = _keys(frame)
        for key, g in frame.groupby(keys, sort=False):
            key = key if isinstance(key, tuple) else (key,)
            rows.append({**dict(zip(keys, key, strict=True)), **judge(g)})
    keys = _keys(preds if preds is not None and not preds.empty else
                 generations if generations is not None else pd.DataFrame(columns=list(RUN_KEYS)))
    out = pd.DataFrame(rows, columns=[*keys, *COLUMNS])
    for c in (*CLASS_CRITERIA, *GENERATION_CRITERIA, "collapsed"):
        out[c] = out[c].fillna(False).astype(bool)
    return out


def _judge_classes(g: pd.DataFrame) -> dict:
    # integer class ids (a frame that also held text rows carries them as floats)
    y, p = g["label"].to_numpy().astype(np.int64), g["prediction"].to_numpy().astype(np.int64)
    acc = float(np.mean(y == p))
    m = float(np.bincount(y).max() / len(y))
    single = len(np.unique(p)) == 1
    near = bool(acc <= m + NOISE_Z * np.sqrt(m * (1 - m) / len(y)))
    return {"accuracy": acc, "majority_accuracy": m, "predicted_class": p[0] if single else np.nan,
            "single_class": single, "near_majority": near, "collapsed": bool(single or near)}


def _judge_generations(g: pd.DataFrame) -> dict:
    texts = g["generation"].fillna("").astype(str).str.strip()
    single = texts.nunique() == 1
    empty = bool((texts == "").all())
    return {"single_output": single, "empty_output": empty, "collapsed": bool(single or empty)}


def describe(flags: pd.DataFrame) -> str:
    """How many collapsed runs each criterion caught, in words (for caveats and the pilot legend)."""
    parts = [f"{int(flags[c].sum())} {c.replace('_', ' ')}" for c in (*CLASS_CRITERIA, *GENERATION_CRITERIA)
             if c in flags and flags[c].any()]
    return ", ".join(parts)


def uninformative_comparisons(comparisons: pd.DataFrame, runs: pd.DataFrame, collapsed: pd.DataFrame) -> list[str]:
    """Comparisons whose every treatment and baseline run collapsed."""
    dead_runs = set(map(tuple, collapsed[["task", "model", "masker", "seed"]].itertuples(index=False)))
    out = []
    for c in comparisons.itertuples():
        cell = runs[(runs.task == c.task) & (runs.model == c.model) & runs.masker.isin([c.treatment, c.baseline])]
        keys = set(map(tuple, cell[["task", "model", "masker", "seed"]].itertuples(index=False)))
        if keys and keys <= dead_runs:
            out.append(f"{c.task}/{c.model}: {c.treatment} vs {c.baseline}")
    return out
