"""A synthetic study in the store's frame formats, for tests, benchmarks and demos.

Predictions follow a latent model with the correlation structure that makes seed pairing
matter: an example's chance of being right depends on its difficulty, the backbone, a
per-seed effect and per-seed example noise shared by every masker trained with that seed
(same head init and data order), the masker's true effect, and run-level noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis.metrics import accuracy, get_metric


def _fp(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def synthetic_study(
    tasks: Mapping[str, str] | None = None,
    models: Sequence[str] = ("bert", "roberta", "electra"),
    maskers: Mapping[str, float] | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    n_examples: int = 1000,
    seed: int = 0,
    seed_sd: float = 0.15,
    shared_noise_sd: float = 0.8,
    run_noise_sd: float = 0.5,
    study: str = "synthetic",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(runs, predictions)`` for tasks x models x maskers x seeds.

    ``tasks``: task -> primary metric (default ``{"mrpc": "f1", "cola": "mcc"}``, binary).
    ``maskers``: masker -> true effect on the logit of being right (default none 0,
    random 0.02, typhoon 0.02: the Typhoon null). The first masker is named like a baseline.
    """
    tasks = dict(tasks or {"mrpc": "f1", "cola": "mcc"})
    maskers = dict(maskers or {"none": 0.0, "random": 0.02, "typhoon": 0.02})
    rng = np.random.default_rng(seed)
    run_rows, pred_parts = [], []
    for ti, (task, metric) in enumerate(tasks.items()):
        n_classes = 3 if metric == "macro_f1" else 2
        labels = rng.integers(0, n_classes, n_examples)
        difficulty = rng.normal(0, 1.2, n_examples)
        fn = get_metric(metric)
        for mi, model in enumerate(models):
            skill = 1.2 + 0.3 * mi + 0.2 * ti
            for s in seeds:
                seed_effect = rng.normal(0, seed_sd)
                shared = rng.normal(0, shared_noise_sd, n_examples)
                for masker, effect in maskers.items():
                    logit = skill + seed_effect + effect + difficulty + shared
                    logit = logit + rng.normal(0, run_noise_sd, n_examples)
                    p_right = 1 / (1 + np.exp(-logit))
                    right = rng.random(n_examples) < p_right
                    wrong = (labels + rng.integers(1, n_classes, n_examples)) % n_classes
                    pred = np.where(right, labels, wrong)
                    kw = {"num_labels": n_classes} if metric == "macro_f1" else {}
                    run_id = _fp(study, task, model, masker, s)
                    run_rows.append({
                        "study": study, "run_id": run_id, "task": task, "model": model,
                        "masker": masker, "masker_kind": masker, "seed": s, "status": "done",
                        "metric": metric, "value": float(fn(labels, pred, **kw)),
                        "accuracy": float(accuracy(labels, pred)),
                        "data_order_fp": _fp("order", task, s),
                        "head_init_fp": _fp("head", task, model, s),
                        "realised_mask_rate": 0.0 if masker == "none" else 0.15,
                        "wall_time_s": 1.0,
                    })
                    pred_parts.append(pd.DataFrame({
                        "run_id": run_id, "task": task, "model": model, "masker": masker,
                        "seed": s, "example_id": np.arange(n_examples), "label": labels,
                        "prediction": pred, "score": p_right,
                    }))
    return pd.DataFrame(run_rows), pd.concat(pred_parts, ignore_index=True)
