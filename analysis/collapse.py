"""Runs that collapsed to one class, and the comparisons they make uninformative.

A run whose final evaluation predicts the same class for every example has learned only the
label prior. Between two such runs every paired difference is zero, so a t-test is undefined and
TOST declares "equivalence" with zero variance: an artefact, not evidence. The report and
``study analyze`` use these functions to say so.
"""

from __future__ import annotations

import pandas as pd


def single_class_runs(preds: pd.DataFrame) -> pd.DataFrame:
    """Runs whose final evaluation predicted one class for every example.

    ``preds``: the predictions frame (task, model, masker, seed, prediction, ...), one row per
    run × eval example. Returns one row per collapsed run with the class it always predicted.
    """
    if preds.empty or "prediction" not in preds.columns:
        return pd.DataFrame(columns=["task", "model", "masker", "seed", "predicted_class"])
    # Generation runs' rows carry text and stats, not a class (whatever placeholder the
    # store's label/prediction columns hold for them): their collapse is not a class count.
    text_rows = preds["prediction"].isna()
    if "stats" in preds.columns:
        text_rows |= preds["stats"].notna()
    preds = preds[~text_rows]
    per_run = preds.groupby(["task", "model", "masker", "seed"])["prediction"].agg(["nunique", "first"])
    one = per_run[per_run["nunique"] == 1].reset_index()
    return one.rename(columns={"first": "predicted_class"})[["task", "model", "masker", "seed", "predicted_class"]]


def uninformative_comparisons(comparisons: pd.DataFrame, runs: pd.DataFrame, collapsed: pd.DataFrame) -> list[str]:
    """Comparisons whose every treatment and baseline run predicted a single class."""
    dead_runs = set(map(tuple, collapsed[["task", "model", "masker", "seed"]].itertuples(index=False)))
    out = []
    for c in comparisons.itertuples():
        cell = runs[(runs.task == c.task) & (runs.model == c.model) & runs.masker.isin([c.treatment, c.baseline])]
        keys = set(map(tuple, cell[["task", "model", "masker", "seed"]].itertuples(index=False)))
        if keys and keys <= dead_runs:
            out.append(f"{c.task}/{c.model}: {c.treatment} vs {c.baseline}")
    return out
