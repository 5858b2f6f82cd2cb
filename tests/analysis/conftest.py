"""Fixtures for the statistics tests: small runs frames with known paired differences."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# pytest puts tests/ on sys.path, where tests/analysis/ (no __init__.py) would otherwise be
# imported as an empty namespace package "analysis" ahead of the editable install's finder.
# With the repository root on sys.path the real package wins the lookup.
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.append(_ROOT)


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


@pytest.fixture
def make_runs():
    return runs_from_diffs


@pytest.fixture(scope="session")
def study():
    """A small synthetic study: 2 tasks x 2 models x 3 maskers x 5 seeds, 300 examples."""
    from analysis.synthetic import synthetic_study

    return synthetic_study(models=("bert", "roberta"), n_examples=300, seed=1)
