"""GLUE tasks (MRPC, CoLA, RTE, SST-2) from the hub or from a local GLUE-format folder.

Train is GLUE's train split; eval is GLUE's validation (``dev.tsv``) split, since GLUE test
labels are hidden. Both sources give the same ids (``train-<row>``, ``dev-<row>``), texts
and labels, so a run's fingerprint does not depend on where the data came from.

Local files are read with ``csv.QUOTE_NONE``: GLUE TSVs contain unbalanced quotes (MRPC
sentences start with ``"``) that the default dialect would swallow across lines.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from study.tasks.base import DataFile, DatasetSpec, Splits, TaskDataError, number

HUB_PATH = "nyu-mll/glue"


@dataclass(frozen=True)
class GlueFormat:
    config: str  # hub config name
    folder: str  # folder name in the GLUE download, for hints
    columns: int  # fields per TSV row
    header: tuple[str, ...] | None
    label_col: int
    a_col: int
    b_col: int | None
    hub_a: str
    hub_b: str | None
    label_names: tuple[str, ...]
    label_map: dict[str, int] | None = None  # TSV label strings, when they are not 0/1
    rows: tuple[int, int] = (0, 0)  # train/dev examples in the README's copy

    def describe(self, name: str) -> str:
        head = f"header {', '.join(self.header)}" if self.header else "no header"
        cols = ["?"] * self.columns
        cols[self.label_col], cols[self.a_col] = "label", "text_a"
        if self.b_col is not None:
            cols[self.b_col] = "text_b"
        return f"{name}: GLUE {self.folder} TSV, {head}, {self.columns} tab-separated fields ({', '.join(cols)})"


FORMATS: dict[str, GlueFormat] = {
    "glue/mrpc": GlueFormat(
        "mrpc", "MRPC", 5, ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
        label_col=0, a_col=3, b_col=4, hub_a="sentence1", hub_b="sentence2",
        label_names=("not_equivalent", "equivalent"), rows=(3668, 408),
    ),
    "glue/cola": GlueFormat(
        "cola", "CoLA", 4, None, label_col=1, a_col=3, b_col=None,
        hub_a="sentence", hub_b=None, label_names=("unacceptable", "acceptable"), rows=(8551, 1043),
    ),
    "glue/rte": GlueFormat(
        "rte", "RTE", 4, ("index", "sentence1", "sentence2", "label"),
        label_col=3, a_col=1, b_col=2, hub_a="sentence1", hub_b="sentence2",
        # The hub encodes entailment as 0; the local strings must map the same way.
        label_names=("entailment", "not_entailment"),
        label_map={"entailment": 0, "not_entailment": 1}, rows=(2490, 277),
    ),
    "glue/sst2": GlueFormat(
        "sst2", "SST-2", 2, ("sentence", "label"), label_col=1, a_col=0, b_col=None,
        hub_a="sentence", hub_b=None, label_names=("negative", "positive"), rows=(67349, 872),
    ),
}

_PRIMARY = {"glue/mrpc": "f1", "glue/cola": "mcc", "glue/rte": "accuracy", "glue/sst2": "accuracy"}
_DESCRIPTION = {
    "glue/mrpc": "GLUE MRPC paraphrase pairs, 2 classes, F1 of 'equivalent'",
    "glue/cola": "GLUE CoLA grammatical acceptability, 2 classes, Matthews correlation",
    "glue/rte": "GLUE RTE textual entailment pairs, 2 classes, accuracy",
    "glue/sst2": "GLUE SST-2 movie-review sentiment, 2 classes, accuracy",
}


# --- local GLUE folder ---------------------------------------------------------------------


def _label(fmt: GlueFormat, raw: str, where: str) -> int:
    try:
        value = fmt.label_map[raw] if fmt.label_map else int(raw)
    except (KeyError, ValueError):
        value = -1
    if not 0 <= value < len(fmt.label_names):
        allowed = list(fmt.label_map) if fmt.label_map else list(range(len(fmt.label_names)))
        raise TaskDataError(f"{where}: label {raw!r} is not one of {allowed}")
    return value


def read_tsv(path: Path, fmt: GlueFormat) -> list[tuple[str, str | None, int]]:
    """(text_a, text_b, label) rows of one GLUE TSV file, header checked and skipped."""
    rows = []
    # utf-8-sig: MRPC files start with a BOM that would otherwise glue onto "Quality".
    with open(path, encoding="utf-8-sig", newline="") as f:
        for lineno, fields in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), 1):
            where = f"{path}:{lineno}"
            if not fields:
                continue
            if lineno == 1 and fmt.header is not None:
                if tuple(fields) != fmt.header:
                    raise TaskDataError(f"{where}: header {fields} is not {list(fmt.header)}")
                continue
            if len(fields) != fmt.columns:
                raise TaskDataError(f"{where}: {len(fields)} fields, expected {fmt.columns}")
            text_b = fields[fmt.b_col] if fmt.b_col is not None else None
            rows.append((fields[fmt.a_col], text_b, _label(fmt, fields[fmt.label_col], where)))
    return rows


def load_local(dataset: str, data_dir: str) -> Splits:
    fmt = FORMATS[dataset]
    root = Path(data_dir).expanduser()
    return (
        number("train", read_tsv(root / "train.tsv", fmt)),
        number("dev", read_tsv(root / "dev.tsv", fmt)),
    )


# --- hub --------------------------------------------------------------------------------------


def hub_rows(split: Any, fmt: GlueFormat, where: str) -> list[tuple[str, str | None, int]]:
    """(text_a, text_b, label) rows of one hub split (a ``datasets.Dataset`` or anything with columns).

    Column access (``split[name]``) instead of row iteration: one Arrow read per column, not
    67k Python dicts for SST-2.
    """
    features = getattr(split, "features", None) or {}
    names = getattr(features.get("label"), "names", None)
    if names is not None and tuple(names) != fmt.label_names:
        # Our label ids must mean what the local TSVs mean (RTE: 0 = entailment).
        raise TaskDataError(f"{where}: label names {names} differ from {list(fmt.label_names)}")
    a = list(split[fmt.hub_a])
    b = list(split[fmt.hub_b]) if fmt.hub_b else [None] * len(a)
    labels = [int(x) for x in split["label"]]
    for i, y in enumerate(labels):
        if not 0 <= y < len(fmt.label_names):
            # -1 marks GLUE's hidden test labels: loading the test split as eval is a bug.
            raise TaskDataError(f"{where} row {i}: label {y} outside 0..{len(fmt.label_names) - 1}")
    return list(zip(a, b, labels, strict=True))


def _default_load_dataset() -> Callable[..., Any]:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a hard dependency
        raise TaskDataError("GLUE from the hub needs the `datasets` package; "
                            "or set data_dir to a local GLUE folder") from e
    # Looked up at call time so tests can monkeypatch datasets.load_dataset.
    return datasets.load_dataset


def load_hub(dataset: str, load_dataset: Callable[..., Any] | None = None) -> Splits:
    """Train and validation splits of ``nyu-mll/glue/<config>`` via ``load_dataset(path, config)``."""
    fmt = FORMATS[dataset]
    load_dataset = load_dataset or _default_load_dataset()
    try:
        ds = load_dataset(HUB_PATH, fmt.config)
    except Exception as e:
        raise TaskDataError(
            f"could not load {HUB_PATH}/{fmt.config} from the Hugging Face hub ({type(e).__name__}: {e}). "
            f"Offline? Set data_dir to a local GLUE {fmt.folder} folder holding train.tsv and dev.tsv"
        ) from e
    where = f"{HUB_PATH}/{fmt.config}"
    return (
        number("train", hub_rows(ds["train"], fmt, f"{where}[train]")),
        number("dev", hub_rows(ds["validation"], fmt, f"{where}[validation]")),
    )


def _loader(dataset: str) -> Callable[[str | None], Splits]:
    def load(data_dir: str | None) -> Splits:
        return load_local(dataset, data_dir) if data_dir else load_hub(dataset)

    return load


def specs() -> Iterable[DatasetSpec]:
    for name, fmt in FORMATS.items():
        yield DatasetSpec(
            name=name,
            description=_DESCRIPTION[name],
            num_labels=len(fmt.label_names),
            label_names=fmt.label_names,
            primary_metric=_PRIMARY[name],
            data_dir="optional",
            files=tuple(
                DataFile(f, fmt.describe(f), fmt.header, rows)
                for f, rows in zip(("train.tsv", "dev.tsv"), fmt.rows, strict=True)
            ),
            load=_loader(name),
        )
