"""Generation runs in the predictions frame: per-run statistics matrices (what the
multibootstrap resamples) and the paired bootstrap / approximate randomization of one run
against another of the same seed (sacrebleu's ``--paired-bs`` / ``--paired-ar``).

A seq2seq run's predictions are one row per evaluation example with ``example_id``,
``generation`` (the text) and ``stats``: the per-example statistics of the task's primary
metric, :func:`analysis.textmetrics.example_stats` (a list, or its JSON text as the store keeps
it). The runs frame's ``metric`` names that metric.

Units: :mod:`analysis.textmetrics` speaks sacrebleu's points (BLEU 18.93); the analysis frames
speak metric units, fractions, for every metric (F1 0.83, BLEU 0.1893), which is what their
margins (0.005 = half a point), effects, display (x100 "pts") and figures assume. So a
generation run's ``value`` is ``corpus_score(...) / 100`` (:func:`metric_units`), and the
multibootstrap and :func:`paired_run_tests` report in those units too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis._frames import check_runs, metric_map, ordered_groups, resolve_comparisons
from analysis.audit import pair_runs
from analysis.textmetrics import is_text_metric, paired_ar, paired_bootstrap, stats_matrix

GEN_COLUMNS = ("task", "model", "masker", "seed", "example_id", "stats")
PAIRED_COLUMNS = [
    "task", "model", "treatment", "baseline", "seed", "metric", "n_examples",
    "score_treatment", "score_baseline", "estimate", "p_value", "method", "n_samples",
    "warning",
]
TESTS = {"bs": (paired_bootstrap, 1000), "ar": (paired_ar, 10000)}
POINTS = 100.0  # textmetrics' scores are points; analysis frames hold fractions


def metric_units(points):
    """A generation score in points (textmetrics, sacrebleu) -> the analysis frames' unit."""
    return points / POINTS


def generation_tasks(predictions: pd.DataFrame, metric_of: dict) -> set:
    """The tasks of ``predictions`` whose primary metric is a generation metric."""
    return {t for t in pd.unique(predictions["task"]) if is_text_metric(metric_of.get(t))}


def run_stats(predictions: pd.DataFrame, task) -> tuple[dict, list]:
    """Per run of ``task``: {(model, masker, seed): statistics (N, k)}, rows in the order of the
    example ids (N,) returned with it; every run must cover the same examples once each."""
    missing = [c for c in GEN_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"{task}: a generation task's predictions need column(s) {missing} "
                         "(stats: the per-example statistics of the primary metric)")
    sub = predictions[predictions["task"] == task]
    ex = pd.Categorical(sub["example_id"].astype(str))
    n = len(ex.categories)
    sub = sub.assign(_ex=ex.codes)
    runs = {}
    for (model, masker, seed), grp in sub.groupby(["model", "masker", "seed"], sort=False):
        where = f"{task}/{model}/{masker}/seed {seed}"
        codes = grp["_ex"].to_numpy()
        if len(grp) != n or len(np.unique(codes)) != n:
            raise ValueError(f"{where}: predictions cover {len(np.unique(codes))} of the {n} "
                             "evaluation examples of the task (or repeat some); every run needs "
                             "all of them once")
        if grp["stats"].isna().any():
            raise ValueError(f"{where}: {int(grp['stats'].isna().sum())} example(s) without "
                             "stats; re-run it with a version that stores them")
        mat = stats_matrix(list(grp["stats"]))
        out = np.full_like(mat, np.nan)
        out[codes] = mat
        runs[(model, masker, seed)] = out
    return runs, [str(c) for c in ex.categories]


def paired_run_test(stats_by_run: dict, metric: str, model, treatment, baseline, seed,
                    test: str = "bs", n_samples: int | None = None, rng_seed: int = 12345):
    """One run against the baseline run of the same seed (``stats_by_run`` from
    :func:`run_stats`): a :class:`analysis.textmetrics.PairedResult` (system = treatment)."""
    if test not in TESTS:
        raise ValueError(f"test must be one of {sorted(TESTS)}, got {test!r}")
    fn, default = TESTS[test]
    for masker in (treatment, baseline):
        if (model, masker, seed) not in stats_by_run:
            raise KeyError(f"no predictions for {model}/{masker}/seed {seed}")
    return fn(stats_by_run[(model, baseline, seed)], stats_by_run[(model, treatment, seed)],
              metric, n_samples=n_samples or default, seed=rng_seed)


def paired_run_tests(
    predictions: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    *,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] | None = None,
    metric_by_task: dict | None = None,
    test: str = "bs",
    n_samples: int | None = None,
    seed: int = 12345,
    on_mismatch: str = "raise",
) -> pd.DataFrame:
    """Every treatment run against the baseline run of its seed, per generation task
    (``PAIRED_COLUMNS``, one row per task x model x comparison x seed): sacrebleu's paired
    bootstrap (``test="bs"``, 1000 resamples) or approximate randomization (``"ar"``, 10000
    trials), seeded with sacrebleu's default 12345. Scores and ``estimate`` (treatment -
    baseline) in metric units (fractions: BLEU 0.1893), as every analysis table.

    These test one seed's pair of runs: the evaluation examples' sampling noise, not the seed's.
    Identical outputs get sacrebleu's smallest p, 1 / (n_samples + 1) (it counts strictly
    greater differences); the ``warning`` column says so."""
    missing = [c for c in GEN_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions frame lacks column(s) {missing}")
    keys = predictions[["task", "model", "masker", "seed"]].drop_duplicates()
    clean = check_runs(runs) if runs is not None else None
    pairs = resolve_comparisons(clean if clean is not None else keys, baseline, comparisons)
    metric_of = metric_map(clean, metric_by_task, list(pd.unique(predictions["task"])))
    allowed = None
    if clean is not None:
        paired, _, _ = pair_runs(clean, pairs, on_mismatch=on_mismatch)
        allowed = set(map(tuple, paired[["task", "model", "masker", "baseline", "seed"]].values))
    gen = generation_tasks(predictions, metric_of)
    rows = []
    order = clean if clean is not None else keys
    for task, model in ordered_groups(order, ["task", "model"]):
        if task not in gen:
            continue
        stats, ids = run_stats(predictions, task)
        for treat, base in pairs:
            seeds = sorted(s for (mo, m, s) in stats if mo == model and m == treat
                           and (model, base, s) in stats
                           and (allowed is None or (task, model, treat, base, s) in allowed))
            for s in seeds:
                res = paired_run_test(stats, metric_of[task], model, treat, base, s, test,
                                      n_samples, seed)
                same = np.array_equal(stats[(model, treat, s)], stats[(model, base, s)],
                                      equal_nan=True)
                rows.append({
                    "task": task, "model": model, "treatment": treat, "baseline": base,
                    "seed": s, "metric": metric_of[task], "n_examples": len(ids),
                    "score_treatment": metric_units(res.score_system),
                    "score_baseline": metric_units(res.score_baseline),
                    "estimate": metric_units(res.difference), "p_value": res.p_value,
                    "method": f"paired {'bootstrap' if test == 'bs' else 'approximate randomization'}",
                    "n_samples": res.n_samples,
                    "warning": "identical statistics: p is sacrebleu's floor, not evidence" if same else "",
                })
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)
