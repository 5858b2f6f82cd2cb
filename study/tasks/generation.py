"""Built-in generation (seq2seq) datasets: ``e2e`` (data-to-text) and ``jfleg`` (grammatical error
correction). Both read a local folder (``data_dir``), laid out as ``../shared/data``:

- ``e2e``: ``devset.csv`` (train) and ``testset_w_refs.csv`` (eval), columns ``mr`` (the meaning
  representation, the source) and ``ref`` (one human reference per row; the rows of one MR are
  grouped into one example holding all its references, as the E2E challenge scores). Primary
  metric BLEU. (Offline we train on the 547 dev MRs — the full training set is not shipped.)
- ``jfleg``: ``dev/dev.src`` + ``dev/dev.ref0..3`` (train) and ``test/test.src`` +
  ``test/test.ref0..3`` (eval), one sentence per line, four references per source. Primary metric
  GLEU (Napoles et al.).

Training uses every (source, reference) pair; evaluation generates once per source and scores it
against all of its references (:mod:`study.tasktypes.seq2seq`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from study.tasks.base import (
    DataFile,
    DatasetSpec,
    Splits,
    TaskDataError,
    generation_example,
    group_references,
)

JFLEG_REFS = 4


def _e2e_split(path: Path, name: str):
    with open(path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        if not (row.get("ref") or "").strip():
            raise TaskDataError(f"{path}: row {i + 2} has an empty reference; drop the row")
    grouped = group_references((r["mr"].strip(), r["ref"].strip()) for r in rows)
    return tuple(generation_example(f"{name}-{i}", mr, refs) for i, (mr, refs) in enumerate(grouped))


def load_e2e(data_dir: str | None) -> Splits:
    root = Path(data_dir)
    return _e2e_split(root / "devset.csv", "train"), _e2e_split(root / "testset_w_refs.csv", "eval")


def _jfleg_split(root: Path, split: str, name: str):
    def lines(path: Path) -> list[str]:
        return path.read_text(encoding="utf-8").rstrip("\n").split("\n")

    sources = lines(root / split / f"{split}.src")
    refs = [lines(root / split / f"{split}.ref{k}") for k in range(JFLEG_REFS)]
    for k, r in enumerate(refs):
        if len(r) != len(sources):
            raise TaskDataError(f"{root / split / f'{split}.ref{k}'} has {len(r)} lines, {split}.src {len(sources)}; "
                                "restore the folder from the JFLEG release")
    return tuple(generation_example(f"{name}-{i}", src.strip(), [r[i].strip() for r in refs])
                 for i, src in enumerate(sources))


def load_jfleg(data_dir: str | None) -> Splits:
    root = Path(data_dir)
    return _jfleg_split(root, "dev", "train"), _jfleg_split(root, "test", "eval")


def specs() -> list[DatasetSpec]:
    return [
        DatasetSpec(
            name="e2e", description="E2E NLG data-to-text (restaurant MRs → text), several references per MR",
            num_labels=0, label_names=(), primary_metric="bleu", data_dir="required",
            files=(DataFile("devset.csv", "CSV with columns mr, ref (one reference per row)"),
                   DataFile("testset_w_refs.csv", "CSV with columns mr, ref (one reference per row)")),
            load=load_e2e, task_type="seq2seq"),
        DatasetSpec(
            name="jfleg", description="JFLEG grammatical error correction, four references per sentence",
            num_labels=0, label_names=(), primary_metric="gleu", data_dir="required",
            files=tuple(DataFile(f"{s}/{s}.{ext}", "one sentence per line")
                        for s in ("dev", "test") for ext in ("src", *(f"ref{k}" for k in range(JFLEG_REFS)))),
            load=load_jfleg, task_type="seq2seq"),
    ]
