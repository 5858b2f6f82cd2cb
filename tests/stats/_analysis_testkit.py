"""Shared helpers for the statistics tests: small runs frames with known paired
differences, and a small synthetic study::

    from _analysis_testkit import make_runs, small_study

A plain module imported by name, not a conftest.py (helpers are imported, fixtures are found).
The folder is ``tests/stats``, not ``tests/analysis``, so it never shadows the ``analysis`` package.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd


def runs_from_diffs(diffs: dict, base_values=None, task="t", model="m", baseline="none",
                    metric="f1") -> pd.DataFrame:
    """A runs frame where masker k's value for seed i is base[i] + diffs[k][i]."""
    n = max(len(v) for v in diffs.values())
    base = np.linspace(0.70, 0.74, n) if base_values is None else np.asarray(base_values, float)
    rows = [{"task": task, "model": model, "masker": baseline, "seed": i, "value": float(base[i]),
             "metric": metric} for i in range(n)]
    for masker, d in diffs.items():
        rows += [{"task": task, "model": model, "masker": masker, "seed": i,
                  "value": float(base[i] + d[i]), "metric": metric} for i in range(len(d))]
    return pd.DataFrame(rows)


make_runs = runs_from_diffs


@functools.lru_cache(maxsize=1)
def small_study() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, predictions) of a small synthetic study: 2 tasks x 2 models x 3 maskers x
    5 seeds, 300 examples. Cached: callers copy before mutating."""
    from analysis.synthetic import synthetic_study

    return synthetic_study(models=("bert", "roberta"), n_examples=300, seed=1)
