"""Task data types and the split/subsample/fingerprint machinery every dataset shares.

Nothing here knows a file format; the dataset modules (``glue``, ``tweets``, ``uci``,
``lince``) parse their files into tuples of :class:`Example` and reuse these helpers so
that every dataset is split, subsampled and fingerprinted the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from study.errors import UserError


class TaskDataError(UserError, ValueError):
    """Missing or malformed task data. A ValueError for callers, a UserError for the CLI."""


@dataclass(frozen=True)
class Example:
    id: str  # stable within the split ("dev-17"): the position in the full split, not the subsample
    text_a: str
    text_b: str | None  # second sentence for pair tasks (MRPC, RTE), else None
    label: int  # the class; for a token task the sentence's most frequent tag (its stratum)
    words: tuple[str, ...] | None = None  # token tasks: the words (text_a is them joined by spaces) ...
    tags: tuple[int, ...] | None = None  # ... and one label id per word
    # generation tasks (seq2seq): text_a is the source, these its references (one or more); label 0
    references: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskData:
    dataset: str
    train: tuple[Example, ...]
    eval: tuple[Example, ...]
    num_labels: int
    label_names: tuple[str, ...]
    primary_metric: str
    fingerprint: str
    task_type: str = "sequence-classification"  # or "token-classification"
    validation: tuple[Example, ...] = ()  # carved from train (tasks[].validation_fraction); empty if none
    extra_metrics: tuple[str, ...] = ()  # recorded beside the primary metric and accuracy
    lowercase: bool = False  # generation metrics compare lower-cased text (tasks[].lowercase)


@dataclass(frozen=True)
class DataFile:
    """One file a ``data_dir`` must hold, with what ``check_data_dir`` can verify cheaply."""

    name: str
    format: str  # one line, quoted in error messages
    header: tuple[str, ...] | None = None  # expected first line split on tabs (BOM stripped)
    rows: int | None = None  # examples in the copy described by ../shared/data/README.md


Splits = tuple[tuple[Example, ...], tuple[Example, ...]]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    num_labels: int
    label_names: tuple[str, ...]
    primary_metric: str  # a key of analysis.metrics.METRICS
    data_dir: str  # "required", "optional" (else the hub) or "none" (ships with a package)
    files: tuple[DataFile, ...]  # what a data_dir must hold; empty when data_dir is "none"
    load: Callable[[str | None], Splits]  # data_dir (or None) -> full (train, eval) splits
    task_type: str = "sequence-classification"
    extra_metrics: tuple[str, ...] = ()

    @property
    def needs_data_dir(self) -> bool:
        return self.data_dir == "required"

    @property
    def accepts_data_dir(self) -> bool:
        return self.data_dir != "none"


def normalize_space(text: str) -> str:
    # Tweets carry stray \r and double spaces; collapsing them makes duplicates comparable.
    return " ".join(text.split())


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def number(split: str, items: Iterable[tuple[str, str | None, int]]) -> tuple[Example, ...]:
    """(text_a, text_b, label) rows -> Examples with ids ``f"{split}-{position}"``."""
    return tuple(Example(f"{split}-{i}", a, b, label) for i, (a, b, label) in enumerate(items))


def token_example(example_id: str, words: Sequence[str], tags: Sequence[int]) -> Example:
    """A token-classification Example; its ``label`` (the stratum for subsampling and validation
    splits) is the sentence's most frequent tag, the lowest id on ties."""
    counts = np.bincount(np.asarray(tags, dtype=np.int64))
    return Example(example_id, " ".join(words), None, int(np.argmax(counts)), tuple(words), tuple(int(t) for t in tags))


def dedupe(texts: Sequence[str], labels: Sequence[int]) -> list[int]:
    """Indices of the rows to keep: the first copy of each text, none of a text seen with two labels.

    A text seen under two labels is noise we cannot resolve, and keeping one copy of it in
    each split would leak it into evaluation.
    """
    seen_labels: dict[str, set[int]] = {}
    for text, label in zip(texts, labels, strict=True):
        seen_labels.setdefault(text, set()).add(label)
    seen: set[str] = set()
    keep = []
    for i, text in enumerate(texts):
        if len(seen_labels[text]) == 1 and text not in seen:
            seen.add(text)
            keep.append(i)
    return keep


def hash_split(strata: Sequence, texts: Sequence[str], eval_fraction: float) -> np.ndarray:
    """Boolean mask of the eval rows: in each stratum, the ``eval_fraction`` with smallest sha256(text).

    Ranking by a hash of the text (rather than a seeded permutation of row positions) keeps
    the split fixed if the source file is reordered, and puts identical texts on the same
    side. Rounding is per stratum, so eval label proportions match the source to ±1 example.
    """
    strata_arr = np.asarray(strata)
    hashes = np.asarray([text_hash(t) for t in texts])
    is_eval = np.zeros(len(texts), dtype=bool)
    for s in np.unique(strata_arr):
        members = np.flatnonzero(strata_arr == s)
        k = int(np.floor(len(members) * eval_fraction + 0.5))
        order = members[np.argsort(hashes[members], kind="stable")]
        is_eval[order[:k]] = True
    return is_eval


def split_by_hash(
    texts: Sequence[str], labels: Sequence[int], strata: Sequence, eval_fraction: float
) -> Splits:
    """Single-text rows -> (train, eval) Examples via :func:`hash_split`, each in original order."""
    is_eval = hash_split(strata, texts, eval_fraction)
    rows = list(zip(texts, [None] * len(texts), labels, strict=True))
    return (
        number("train", (r for r, e in zip(rows, is_eval, strict=True) if not e)),
        number("dev", (r for r, e in zip(rows, is_eval, strict=True) if e)),
    )


def carve_validation(train: tuple[Example, ...], fraction: float) -> tuple[tuple[Example, ...], tuple[Example, ...]]:
    """(train, validation): :func:`hash_split` of ``train`` stratified by label, each in original order.

    Deterministic (a hash of each example's text, not a seed), so every run and every seed of a
    study trains and selects on the same examples."""
    texts = [f"{ex.text_a}\x1f{ex.text_b or ''}" for ex in train]
    is_val = hash_split([ex.label for ex in train], texts, fraction)
    return (tuple(ex for ex, v in zip(train, is_val, strict=True) if not v),
            tuple(ex for ex, v in zip(train, is_val, strict=True) if v))


def proportional_quotas(counts: Sequence[int], n: int) -> list[int]:
    """Split ``n`` over classes proportionally to ``counts`` (largest-remainder rounding).

    Each quota is within 1 of ``n * count / total``; ties in the remainder go to the lower
    class index so the result is deterministic.
    """
    total = sum(counts)
    exact = [n * c / total for c in counts]
    quotas = [int(np.floor(x)) for x in exact]
    by_remainder = sorted(range(len(counts)), key=lambda k: (-(exact[k] - quotas[k]), k))
    for k in by_remainder[: n - sum(quotas)]:
        quotas[k] += 1
    return quotas


def stratified_subsample(
    examples: tuple[Example, ...], n: int | None, seed: int
) -> tuple[Example, ...]:
    """A stratified subset of ``n`` examples in the split's original order; all when n is None or >= len.

    Depends only on (examples, n, seed): a fresh ``default_rng(seed)`` per call, so the eval
    subset does not shift when the train size changes.
    """
    if n is None or n >= len(examples):
        return examples
    if n < 1:
        raise TaskDataError(f"subsample size must be at least 1, got {n}")
    labels = np.asarray([ex.label for ex in examples])
    classes = np.unique(labels)
    quotas = proportional_quotas([int(np.sum(labels == c)) for c in classes], n)
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
        for c, q in zip(classes, quotas, strict=True)
    ]
    keep = np.sort(np.concatenate(chosen))
    return tuple(examples[i] for i in keep)


def fingerprint(train: Iterable[Example], eval_: Iterable[Example], validation: Iterable[Example] = ()) -> str:
    """sha256 over (split, id, label, text_a, text_b[, tags]) of every example, in order.

    Tags and the validation split enter only when present, so sequence tasks without a
    validation split keep the fingerprints they always had."""
    h = hashlib.sha256()
    for split, examples in (("train", train), ("eval", eval_), ("validation", validation)):
        for ex in examples:
            row = [split, ex.id, ex.label, ex.text_a, ex.text_b]
            if ex.tags is not None:
                row.append(list(ex.tags))
            if ex.references is not None:
                row.append(list(ex.references))
            line = json.dumps(row, ensure_ascii=False)
            h.update(line.encode("utf-8"))
            h.update(b"\n")
    return h.hexdigest()


def generation_example(example_id: str, source: str, references) -> Example:
    """A seq2seq Example: the source and all its references (label 0: one stratum)."""
    return Example(example_id, source, None, 0, references=tuple(references))


def group_references(pairs) -> list[tuple[str, list[str]]]:
    """(source, reference) rows → one (source, [references...]) per distinct source, in order of first
    appearance (E2E's layout: one row per reference, the source repeated)."""
    grouped: dict[str, list[str]] = {}
    for source, reference in pairs:
        grouped.setdefault(source, []).extend(reference if isinstance(reference, list) else [reference])
    return list(grouped.items())


def label_counts(examples: Iterable[Example], num_labels: int) -> list[int]:
    counts = [0] * num_labels
    for ex in examples:
        counts[ex.label] += 1
    return counts
