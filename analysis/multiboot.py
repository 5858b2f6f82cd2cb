"""Multibootstrap (Sellam et al. 2022, "The MultiBERTs"): a paired bootstrap over seeds x
evaluation examples from the stored per-example predictions.

Each resample draws seeds with replacement (the same seeds for treatment and baseline,
since runs are paired by seed) and evaluation examples with replacement (the same
examples for every run, since they share the evaluation set), scores every drawn run on
the drawn examples, averages over the drawn seeds, and takes treatment - baseline.

Vectorisation: every supported metric is a function of the confusion matrix, and an
example resample is a count vector ``w`` (N,), so the confusion matrices of all R runs of
a task under a chunk of resamples are one matrix product ``W @ X`` with ``W`` (b, N)
resample counts and ``X`` (N, ~R x K x (K-1)) indicators of (label, prediction) cells.
Each run's metric under each resample is computed once per task; a comparison then only
gathers and averages the drawn seeds' scores. There is no Python loop over resamples, and
the example resamples of a task are drawn once and shared by all its comparisons (each
still a valid paired bootstrap; their Monte Carlo errors are merely correlated). Seed
resamples are drawn per comparison. ``n_jobs`` spreads resample chunks over joblib
threads.

Streams: example resamples come from ``(seed, task, chunk number)`` and seed resamples from
``(seed, comparison)``, so a comparison's result does not depend on which other
comparisons are analysed or on ``n_jobs``.

Generation (seq2seq) tasks, those whose primary metric is an :mod:`analysis.textmetrics`
metric: predictions carry per-example ``stats`` instead of label and prediction
(:mod:`analysis.generation`). A drawn set of examples is scored by recomputing each run's
corpus metric from the drawn rows' statistics (BLEU from summed n-gram counts, one product per
chunk of draws, as for confusion matrices); the example draws are the same streams as for
classification. Scores in metric units (BLEU 0.1893), as the runs' values of those tasks.
``n_jobs`` does not apply there (BLAS products do the work); GLEU, which is not a sum over
examples, costs about 500 corpus evaluations per resample.

Token classification: predictions are stored per scored word with ``example_id =
"<sentence id>:<word index>"`` (every id of a task in that form). The resampled unit is then
the sentence (:func:`sentence_groups`): a drawn sentence brings all its words, and the metric
is recomputed over the drawn words, as the token-level metric is defined. ``n_examples`` counts
the resampled units (sentences).

Reported: ``estimate`` (the difference on the full data), a percentile CI of the
resampled differences, ``p_boot`` two-sided (twice the smaller tail share of resampled
differences at or beyond zero, capped at 1) and ``p_one_sided`` (MultiBERTs' report_ci:
share of resampled differences <= 0, i.e. evidence that the treatment is better).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from analysis._frames import (
    check_runs,
    metric_map,
    ordered_groups,
    resolve_comparisons,
    stable_rng,
    warn,
)
from analysis.audit import pair_runs
from analysis.generation import generation_tasks, metric_units, run_stats
from analysis.metrics import PER_CLASS, get_metric, metric_from_confusion
from analysis.textmetrics import resampled_scores

KEY_COLUMNS = ("task", "model", "masker", "seed", "example_id")
PRED_COLUMNS = (*KEY_COLUMNS, "label", "prediction")  # a classification task's predictions
COLUMNS = [
    "task", "model", "treatment", "baseline", "metric", "n_pairs", "n_examples",
    "mean_treatment", "mean_baseline", "estimate", "ci_low", "ci_high", "p_boot",
    "p_one_sided", "level", "method", "n_boot",
]
CHUNK = 512  # resamples per chunk; part of the stream definition, so fixed


_WORD_ID = re.compile(r"^(.+):(\d+)$")


def sentence_groups(example_ids) -> np.ndarray | None:
    """The sentence of each word: ids ``"<sentence id>:<word index>"`` (N,) -> codes (N,) into the
    sorted unique sentence ids; None unless every id has that form (sentence-level predictions)."""
    matches = [_WORD_ID.match(str(i)) for i in example_ids]
    if not matches or not all(matches):
        return None
    sentences = np.asarray([m.group(1) for m in matches])
    return np.unique(sentences, return_inverse=True)[1].reshape(-1)


def example_draws(seed: int, task, n_boot: int, n_examples: int, chunk: int = CHUNK) -> list:
    """The example resamples of one task: a list of index arrays (b, N), b <= chunk."""
    out = []
    for i, start in enumerate(range(0, n_boot, chunk)):
        rng = stable_rng(seed, "multibootstrap-examples", task, i)
        out.append(rng.integers(0, n_examples, (min(chunk, n_boot - start), n_examples)))
    return out


def confusions(labels, preds, num_labels: int, ex_draws: Iterable[np.ndarray], n_jobs: int = 1,
               groups: np.ndarray | None = None):
    """Confusion matrices of every run under every resample.

    ``labels`` (N,), ``preds`` (R, N) ints, ``ex_draws`` chunks of example indices (b, N), or
    with ``groups`` (N,) (the unit of each example, codes 0..U-1) chunks of unit indices (b, U):
    each drawn unit then counts all its examples.
    Returns (B, R, K, K) float counts.
    """
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    r, n = preds.shape
    k = num_labels
    # Columns: per run, cm[y, p] for p < K-1 (K(K-1) of them), then the K label counts,
    # shared by all runs; each row's last cell is its label count minus the others. Half
    # the columns of a full one-hot for binary tasks, so half the product.
    kk = k * (k - 1)
    design = np.zeros((n, r * kk + k), dtype=np.float32)
    rows = np.arange(n)
    for j in range(r):
        hit = preds[j] < k - 1
        design[rows[hit], j * kk + labels[hit] * (k - 1) + preds[j, hit]] = 1.0
    design[rows, r * kk + labels] = 1.0

    units = n if groups is None else int(groups.max()) + 1

    def chunk_counts(ex_idx):
        b = ex_idx.shape[0]
        flat = (ex_idx + (np.arange(b) * units)[:, None]).ravel()
        # A (b, N) bincount stays cache-sized; one (B, N) pass is several times slower.
        w = np.bincount(flat, minlength=b * units).reshape(b, units).astype(np.float32)
        if groups is not None:
            w = w[:, groups]  # a word weighs as often as its sentence was drawn
        # float32 is exact here: every count is an integer <= N < 2**24.
        prod = (w @ design).astype(np.float64)
        part = prod[:, : r * kk].reshape(b, r, k, k - 1)
        label_counts = prod[:, r * kk :]  # (b, K)
        last = label_counts[:, None, :] - part.sum(axis=-1)
        return np.concatenate([part, last[..., None]], axis=-1)

    ex_draws = list(ex_draws)
    with _single_threaded_blas():
        if n_jobs == 1 or len(ex_draws) < 2:
            parts = [chunk_counts(e) for e in ex_draws]
        else:
            from joblib import Parallel, delayed

            parts = Parallel(n_jobs=n_jobs, prefer="threads")(
                delayed(chunk_counts)(e) for e in ex_draws
            )
    return np.concatenate(parts, axis=0)


def _single_threaded_blas():
    """Limit BLAS to one thread around the (b, N) @ (N, R K K) products.

    They are skinny; OpenBLAS's threads cost more than they bring there, and on a busy
    2-core machine its spinning workers made them 5-10x slower (measured: 11-20 ms vs
    1.8 ms per 512-resample chunk). Parallelism comes from ``n_jobs`` instead.
    threadpoolctl is optional: without it the products just run with the default threads.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - depends on the environment
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def seed_averaged(scores, rows_t, rows_b, seed_idx) -> tuple[np.ndarray, np.ndarray]:
    """Seed-averaged metric of treatment and baseline per resample.

    ``scores`` (B, R): each run's metric under each resample; ``rows_t``/``rows_b`` (S,)
    run rows of the paired seeds; ``seed_idx`` (B, S) drawn seed positions. Returns two
    (B,) arrays.
    """
    rows_t, rows_b = np.asarray(rows_t), np.asarray(rows_b)
    b = np.arange(scores.shape[0])[:, None]
    return scores[b, rows_t[seed_idx]].mean(axis=1), scores[b, rows_b[seed_idx]].mean(axis=1)


def resample_scores_loop(labels, pred_t, pred_b, metric, num_labels, seed_idx, ex_idx):
    """Reference: a Python loop over resamples calling the metrics module directly (the
    MultiBERTs reference structure). ``pred_*`` (S, N); ``seed_idx`` (B, S); ``ex_idx``
    (B, N). Returns two (B,) arrays."""
    fn = get_metric(metric)
    kw = {"num_labels": num_labels} if metric in PER_CLASS else {}
    labels = np.asarray(labels)
    out_t, out_b = np.empty(len(ex_idx)), np.empty(len(ex_idx))
    for i, (si, ei) in enumerate(zip(seed_idx, ex_idx, strict=True)):
        y = labels[ei][None, :]
        out_t[i] = np.mean(fn(y, pred_t[np.ix_(si, ei)], **kw))
        out_b[i] = np.mean(fn(y, pred_b[np.ix_(si, ei)], **kw))
    return out_t, out_b


def _summarise(est_t, est_b, delta, alpha) -> dict:
    ci_low, ci_high = np.quantile(delta, [alpha / 2, 1 - alpha / 2])
    return {
        "mean_treatment": float(est_t), "mean_baseline": float(est_b),
        "estimate": float(est_t - est_b), "ci_low": float(ci_low), "ci_high": float(ci_high),
        "p_boot": float(min(1.0, 2 * min(np.mean(delta <= 0), np.mean(delta >= 0)))),
        "p_one_sided": float(np.mean(delta <= 0)),
    }


def _num_labels(labels, preds) -> int:
    return max(2, int(max(np.max(labels), np.max(preds))) + 1)


def multibootstrap_arrays(
    labels, pred_t, pred_b, metric: str, *, alpha: float = 0.05, n_boot: int = 10_000,
    seed: int = 0, key: tuple = ("arrays",), num_labels: int | None = None,
) -> dict:
    """Multibootstrap of one comparison from arrays: ``labels`` (N,), ``pred_t``/``pred_b``
    (S, N) with seed-aligned rows. Returns the summary dict plus ``deltas`` (B,)."""
    labels = np.asarray(labels, dtype=np.int64)
    pt = np.atleast_2d(np.asarray(pred_t, dtype=np.int64))
    pb = np.atleast_2d(np.asarray(pred_b, dtype=np.int64))
    if pt.shape != pb.shape or pt.shape[1] != labels.size:
        raise ValueError(f"shape mismatch: labels {labels.shape}, {pt.shape} vs {pb.shape}")
    s, n = pt.shape
    k = max(_num_labels(labels, np.concatenate([pt, pb])), num_labels or 0)
    preds = np.concatenate([pt, pb])
    rows_t, rows_b = np.arange(s), np.arange(s, 2 * s)
    full = metric_from_confusion(metric, confusions(labels, preds, k, [np.arange(n)[None, :]]))
    est_t, est_b = seed_averaged(full, rows_t, rows_b, np.arange(s)[None, :])
    scores = metric_from_confusion(
        metric, confusions(labels, preds, k, example_draws(seed, key[0], n_boot, n)))
    seed_idx = stable_rng(seed, "multibootstrap-seeds", *key).integers(0, s, (n_boot, s))
    bt, bb = seed_averaged(scores, rows_t, rows_b, seed_idx)
    delta = bt - bb
    return {"n_seeds": s, "n_examples": n, **_summarise(est_t[0], est_b[0], delta, alpha),
            "deltas": delta}


def _arrays_for(preds: pd.DataFrame, task) -> tuple:
    """Per task: labels (N,), {(model, masker, seed): predictions (N,)} on the task's evaluation
    set (every run of a task must cover the same examples, once each) and the example ids (N,)."""
    sub = preds[preds["task"] == task]
    ex = pd.Categorical(sub["example_id"])
    codes = ex.codes
    n = len(ex.categories)
    lab = sub["label"].to_numpy(dtype=np.int64)
    if lab.min() < 0 or sub["prediction"].min() < 0:
        raise ValueError(f"{task}: labels and predictions must be non-negative class ids")
    labels = np.full(n, -1, dtype=np.int64)
    labels[codes] = lab
    if np.any(labels[codes] != lab):
        raise ValueError(f"{task}: runs disagree on the label of some example")
    runs = {}
    sub = sub.assign(_ex=codes)
    for (model, masker, seed), grp in sub.groupby(["model", "masker", "seed"], sort=False):
        arr = np.full(n, -1, dtype=np.int64)
        arr[grp["_ex"].to_numpy()] = grp["prediction"].to_numpy(np.int64)
        if len(grp) != n or np.any(arr < 0):
            raise ValueError(
                f"{task}/{model}/{masker}/seed {seed}: predictions cover {len(grp)} of the "
                f"{n} evaluation examples of the task (or repeat some); every run needs "
                "all of them once"
            )
        runs[(model, masker, seed)] = arr
    return labels, runs, list(ex.categories)


def multibootstrap(
    predictions: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    *,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] | None = None,
    metric_by_task: dict | None = None,
    alpha: float = 0.05,
    n_boot: int = 10_000,
    seed: int = 0,
    n_jobs: int = 1,
    on_mismatch: str = "raise",
) -> pd.DataFrame:
    """Multibootstrap every comparison (one row each, columns ``COLUMNS``).

    ``predictions``: one row per run x evaluation example with ``PRED_COLUMNS`` (a
    generation task: ``analysis.generation.GEN_COLUMNS``, label and prediction not needed).
    ``runs`` (optional): the runs frame; supplies each task's ``metric`` and, through the
    pairing audit, the seeds allowed to pair (fingerprint mismatches raise
    :class:`analysis.PairingError` unless ``on_mismatch="drop"``). Comparisons as in
    :func:`analysis.compare`. ``n_jobs`` > 1 spreads each task's resample chunks (the
    bulk of the work, shared by the task's comparisons) over joblib threads; results do
    not depend on it.
    """
    missing = [c for c in KEY_COLUMNS if c not in predictions.columns]
    if missing:
        raise ValueError(f"predictions frame lacks column(s) {missing}")
    preds = predictions.reset_index(drop=True)
    keys_frame = preds[["task", "model", "masker", "seed"]].drop_duplicates()
    clean = check_runs(runs) if runs is not None else None
    pairs = resolve_comparisons(clean if clean is not None else keys_frame, baseline, comparisons)
    metric_of = metric_map(clean, metric_by_task, list(pd.unique(preds["task"])))
    generation = generation_tasks(preds, metric_of)
    missing = [c for c in PRED_COLUMNS if c not in preds.columns]
    if missing and set(pd.unique(preds["task"])) - generation:
        raise ValueError(f"predictions frame lacks column(s) {missing}")
    allowed = None
    if clean is not None:
        paired, _, _ = pair_runs(clean, pairs, on_mismatch=on_mismatch)
        allowed = set(map(tuple, paired[["task", "model", "masker", "baseline", "seed"]].values))
    rows = []
    # Row order follows the runs frame when given (the protocol's order), so shuffling the
    # predictions frame changes nothing.
    order = clean if clean is not None else keys_frame
    present = set(map(tuple, keys_frame[["task", "model"]].values))
    for (task,) in ordered_groups(order, ["task"]):
        if task not in set(keys_frame["task"]):
            continue
        if task in generation:
            arrays, ids = run_stats(preds, task)
            groups, n = None, len(ids)
        else:
            labels, arrays, ids = _arrays_for(preds, task)
            k = _num_labels(labels, np.stack(list(arrays.values())))
            n = labels.size
            groups = sentence_groups(ids)
        runs_order = list(arrays)
        units = n if groups is None else int(groups.max()) + 1
        scores = None
        for model in pd.unique(order.loc[order["task"] == task, "model"]):
            if (task, model) not in present:
                continue
            for treat, base in pairs:
                seeds = sorted(s for (mo, m, s) in runs_order
                               if mo == model and m == treat and (model, base, s) in arrays)
                if allowed is None:  # without runs, pair_runs never saw (nor warned about) these
                    lonely = sorted(s for (mo, m, s) in runs_order
                                    if mo == model and m in (treat, base) and s not in seeds)
                    if lonely:
                        warn(f"{task}/{model} {treat} vs {base}: dropped seed(s) {lonely} "
                             "with predictions for only one of the two maskers")
                if allowed is not None:
                    seeds = [s for s in seeds if (task, model, treat, base, s) in allowed]
                if not seeds:
                    continue
                if scores is None:  # every run's (B,) scores, shared by the task's comparisons
                    metric = metric_of[task]
                    draws = example_draws(seed, task, n_boot, units)
                    if task in generation:
                        stats = [arrays[r] for r in runs_order]
                        full = metric_units(resampled_scores(metric, stats, np.arange(n)[None, :]))
                        scores = metric_units(resampled_scores(metric, stats, np.concatenate(draws)))
                    else:
                        preds_all = np.stack([arrays[r] for r in runs_order])
                        full = metric_from_confusion(
                            metric, confusions(labels, preds_all, k, [np.arange(n)[None, :]]))
                        scores = metric_from_confusion(metric, confusions(
                            labels, preds_all, k, draws, n_jobs=n_jobs, groups=groups))
                key = (task, model, treat, base)
                rows_t = [runs_order.index((model, treat, s)) for s in seeds]
                rows_b = [runs_order.index((model, base, s)) for s in seeds]
                est_t, est_b = seed_averaged(full, rows_t, rows_b, np.arange(len(seeds))[None, :])
                seed_idx = stable_rng(seed, "multibootstrap-seeds", *key).integers(
                    0, len(seeds), (n_boot, len(seeds)))
                bt, bb = seed_averaged(scores, rows_t, rows_b, seed_idx)
                rows.append({"task": task, "model": model, "treatment": treat, "baseline": base,
                             "n_pairs": len(seeds), "n_examples": units,
                             **_summarise(est_t[0], est_b[0], bt - bb, alpha)})
    out = pd.DataFrame(rows)
    if out.empty:
        return pd.DataFrame(columns=COLUMNS)
    out["metric"] = out["task"].map(metric_of)
    out["level"] = 1 - alpha
    out["method"] = "multibootstrap"
    out["n_boot"] = n_boot
    return out[COLUMNS]
