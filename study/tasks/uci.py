"""``uci-sentiment``: binary review-sentence sentiment (Kotzias et al., KDD 2015), from a ``data_dir``.

Files: ``amazon_cells_labelled.txt``, ``imdb_labelled.txt``, ``yelp_labelled.txt``, each
1,000 lines ``sentence<TAB>label`` (0 negative, 1 positive; 500 of each per file).
Parsing pitfalls: the IMDb file contains U+0085 (NEL; a cp1252 ellipsis decoded as
Latin-1) inside sentences, which ``str.splitlines`` treats as a line break and
``str.split`` as whitespace, and sentences padded with spaces before the tab. Lines are
therefore split on ``\\n`` only and on the *last* tab, U+0085 becomes "…", and whitespace
is collapsed. All 3,000 lines parse.

Deduplication: 18 extra copies of identical sentences (short ones such as "Great phone.")
are dropped, first copy kept; no sentence occurs with both labels. Left: 2,982.

Split (fixed, no seed): within each (source file, label) stratum, the 20 % of sentences
with the smallest sha256(sentence) form ``eval``. Measured: train 2,385 (1,194 negative ·
1,191 positive), eval 597 (298 · 299) — balanced, so the primary metric is accuracy.
"""

from __future__ import annotations

from pathlib import Path

from study.tasks.base import (
    DataFile,
    DatasetSpec,
    Splits,
    TaskDataError,
    dedupe,
    normalize_space,
    split_by_hash,
)

NAME = "uci-sentiment"
LABEL_NAMES = ("negative", "positive")
EVAL_FRACTION = 0.2
SOURCES = ("amazon_cells_labelled.txt", "imdb_labelled.txt", "yelp_labelled.txt")
FORMAT = "UCI sentiment: one `sentence<TAB>label` per line (label 0 or 1), no header, UTF-8"


def read_file(path: Path) -> list[tuple[str, int]]:
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        sentence, tab, label = line.rpartition("\t")
        if not tab or label.strip() not in ("0", "1"):
            raise TaskDataError(f"{path}:{lineno}: expected `sentence<TAB>0|1`, got {line[:80]!r}")
        rows.append((normalize_space(sentence.replace("\x85", "\u2026")), int(label)))
    return rows


def load(data_dir: str | None) -> Splits:
    if not data_dir:
        raise TaskDataError(f"dataset {NAME!r} needs data_dir: a folder holding {', '.join(SOURCES)}")
    root = Path(data_dir).expanduser()
    rows = [(source, text, label) for source in SOURCES for text, label in read_file(root / source)]
    keep = dedupe([t for _, t, _ in rows], [y for _, _, y in rows])
    kept = [rows[i] for i in keep]
    # Stratify by source as well as label so each review domain is 20 % eval.
    strata = [f"{source}/{label}" for source, _, label in kept]
    return split_by_hash([t for _, t, _ in kept], [y for _, _, y in kept], strata, EVAL_FRACTION)


def spec() -> DatasetSpec:
    return DatasetSpec(
        name=NAME,
        description="UCI sentiment sentences (Amazon, IMDb, Yelp), 2 balanced classes, accuracy",
        num_labels=2,
        label_names=LABEL_NAMES,
        primary_metric="accuracy",
        data_dir="required",
        files=tuple(DataFile(s, FORMAT, None, 1000) for s in SOURCES),
        load=load,
    )
