"""Datasets by file or by hub name: ``dataset: file`` (local files) and ``dataset: hf:<name>[:<config>]``.

Both load rows (one mapping per example), then share one code path: take ``text_fields`` (one,
or two for sentence pairs) and ``label_field``, map labels to ids, check every row, and hand
(train, eval) Examples to the same stratified subsample and fingerprint as the built-in tasks.

- ``file``: ``train_file`` and ``eval_file`` (paths relative to the protocol, made absolute when
  it is loaded). Format from ``format`` or the extension: ``.csv`` (header row, RFC 4180
  quoting), ``.tsv`` (header row, tabs, no quoting), ``.jsonl`` (one object per line), ``.json``
  (a list of objects), ``.parquet``, ``.conll`` (``token<TAB>tag`` lines: token-level data, see
  :mod:`study.tasks.conll`).
- ``hf:<name>[:<config>]``: ``datasets.load_dataset(name, config)`` — a hub name, or a local
  folder of files in the hub's layout (``train.csv``, ``validation.jsonl`` ...). Train is the
  ``train`` split; eval is ``eval_split``, by default ``validation`` if the dataset has one,
  else ``test``.

Labels: integers or strings. The distinct training labels, sorted, become ids 0..K-1 (for
integer labels 0..K-1 that is the identity); the run records the names (``env.labels``). An
eval label never seen in training is an error: the model cannot predict it. The run_id hashes
the files' bytes (``data_sha256``), never their paths; a hub dataset is identified by name,
config and split (pin a revision by downloading it to a folder if that matters).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import math
from pathlib import Path

from study.tasks.base import (
    Example,
    TaskData,
    TaskDataError,
    fingerprint,
    number,
    stratified_subsample,
)

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "conll")
FILE_KEYS = ("train_file", "eval_file", "eval_split", "text_fields", "label_field", "metric", "format")
DEFAULT_METRIC = "macro_f1"  # sequence classification: robust to imbalance, defined for any K
# Column pairs of well-known sentence-pair datasets: naming only one of them is a mistake.
PAIR_COLUMNS = (("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"),
                ("question", "sentence"), ("text_a", "text_b"), ("sentence_a", "sentence_b"))
_MISSING = {"", "nan", "NaN", "NA", "N/A", "null", "None"}


class FieldError(TaskDataError):
    """A problem with one key of a ``tasks[i]`` entry: ``field`` names it, ``fix`` says what to do."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}" + (f". Fix: {fix}" if fix else ""))


def is_custom(dataset: str) -> bool:
    return dataset == "file" or str(dataset).startswith("hf:")


def hub_name(dataset: str) -> tuple[str, str | None]:
    name, _, config = dataset[3:].partition(":")
    return name, config or None


def file_format(cfg, key: str) -> str:
    if cfg.format:
        return cfg.format
    suffix = Path(getattr(cfg, key)).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise FieldError(key, f"{getattr(cfg, key)}: unknown extension {'.' + suffix if suffix else '(none)'}",
                         f"use one of {', '.join('.' + f for f in FORMATS)}, or set `format:`")
    return suffix


def check_config(cfg) -> None:
    """Offline checks of the keys alone (no file is read). Raises FieldError."""
    if not is_custom(cfg.dataset):
        for key in FILE_KEYS:  # metric is not here: a built-in task may report another primary metric
            if key != "metric" and getattr(cfg, key) != ("label" if key == "label_field" else None):
                raise FieldError(key, f"only applies to `dataset: file` or `dataset: hf:<name>`, not {cfg.dataset!r}",
                                 f"remove {key}")
        return
    if cfg.dataset == "hf:" or hub_name(cfg.dataset)[0] == "":
        raise FieldError("dataset", "hf: needs a dataset name", "write `dataset: hf:<hub name>[:<config>]`")
    if cfg.dataset == "file":
        for key in ("train_file", "eval_file"):
            if not getattr(cfg, key):
                raise FieldError(key, "required for `dataset: file`", f"add `{key}: <path relative to the protocol>`")
        if cfg.eval_split:
            raise FieldError("eval_split", "only applies to hub datasets (`dataset: hf:...`)",
                             "name the eval data with eval_file")
    elif cfg.train_file or cfg.eval_file:
        raise FieldError("train_file" if cfg.train_file else "eval_file", "a hub dataset takes no files",
                         "use `dataset: file` for local files, or eval_split to pick a hub split")
    if not cfg.text_fields:
        raise FieldError("text_fields", "required", "list the text column(s): `text_fields: [text]`, "
                         "or two for sentence pairs")
    if len(cfg.text_fields) > 2:
        raise FieldError("text_fields", f"{len(cfg.text_fields)} fields given; one text or a sentence pair is "
                         "supported", "list one or two columns")


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() in _MISSING)


def read_rows(path: Path, fmt: str, key: str) -> list[dict]:
    """The rows of one file as mappings. FieldError (naming ``key`` and the file) on a missing file."""
    if not path.is_file():
        raise FieldError(key, f"{path}: file not found", "check the path (relative to the protocol file)")
    if fmt in ("csv", "tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "csv":
                return list(csv.DictReader(f))
            return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if fmt == "jsonl":
        rows = []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise FieldError(key, f"{path}:{lineno}: not a JSON object ({e})", "one JSON object per line") from None
        return rows
    if fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise FieldError(key, f"{path}: not valid JSON ({e})", "a JSON list of objects") from None
        if not isinstance(data, list):
            raise FieldError(key, f"{path}: expected a JSON list of objects", "or use .jsonl, one object per line")
        return data
    if fmt == "parquet":
        import pandas as pd

        return pd.read_parquet(path).to_dict("records")
    from study.tasks.conll import read_conll

    try:
        sentences = read_conll(path)
    except TaskDataError as e:
        raise FieldError(key, str(e).split("; fix:")[0], "one `token<TAB>tag` per line, a blank line between "
                         "sentences, `#` comment lines") from None
    return [{"tokens": tokens, "tags": tags} for tokens, tags in sentences]


def _hub_rows(cfg) -> tuple[list[dict], list[dict], str, str]:
    try:
        import datasets
    except ImportError:
        raise FieldError("dataset", "hf: datasets need the `datasets` package", "pip install datasets") from None
    name, config = hub_name(cfg.dataset)
    try:
        dd = datasets.load_dataset(name, config)
    except Exception as e:  # noqa: BLE001  (the hub's errors are many; all mean the same to the user)
        raise FieldError("dataset", f"datasets.load_dataset({name!r}, {config!r}) failed: {type(e).__name__}: {e}",
                         "check the name and config, the network, or point it at a local folder") from None
    if "train" not in dd:
        raise FieldError("dataset", f"{cfg.dataset} has no train split (splits: {', '.join(dd)})", "")
    split = cfg.eval_split or ("validation" if "validation" in dd else "test")
    if split not in dd:
        raise FieldError("eval_split", f"{cfg.dataset} has no split {split!r} (splits: {', '.join(dd)})",
                         "set eval_split to one of them")
    return list(dd["train"]), list(dd[split]), f"{cfg.dataset} split train", f"{cfg.dataset} split {split}"


def _source_rows(cfg):
    if cfg.dataset != "file":
        train, eval_, wt, we = _hub_rows(cfg)
        return train, eval_, wt, we, "dataset", "dataset"
    rows = [read_rows(Path(getattr(cfg, k)), file_format(cfg, k), k) for k in ("train_file", "eval_file")]
    return rows[0], rows[1], cfg.train_file, cfg.eval_file, "train_file", "eval_file"


def _check_columns(rows: list[dict], where: str, key: str, cfg) -> None:
    if not rows:
        raise FieldError(key, f"{where}: the split is empty", "give it at least one example")
    if set(rows[0]) == {"tokens", "tags"}:  # read from CoNLL
        raise FieldError("format", f"{where}: CoNLL holds one tag per token, not one label per text",
                         "use CoNLL files for a token-classification task")
    columns = list(rows[0])
    for field_key, names in (("text_fields", cfg.text_fields), ("label_field", (cfg.label_field,))):
        for col in names:
            if col not in columns:
                raise FieldError(field_key, f"{where}: no column {col!r} (columns: {', '.join(map(str, columns))})",
                                 "name one of those columns")
    if len(cfg.text_fields) == 1:
        pair = next((p for p in PAIR_COLUMNS if set(p) <= set(columns) and cfg.text_fields[0] in p), None)
        if pair:
            raise FieldError("text_fields", f"{where} is a sentence-pair task (columns {pair[0]}, {pair[1]}) but "
                             "text_fields names one", f"write `text_fields: [{pair[0]}, {pair[1]}]`")


def _label_value(v):
    """Integers (also "3" from a CSV) compare as numbers; anything else as text."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    s = str(v).strip()
    return int(s) if s.lstrip("-").isdigit() else s


def _labelled(rows, where, cfg) -> list[tuple[str, str | None, int | str]]:
    out = []
    for i, row in enumerate(rows):
        raw = row.get(cfg.label_field)
        if _is_missing(raw):
            raise FieldError("label_field", f"{where}: row {i + 1} has a NaN or empty {cfg.label_field!r} label",
                             "label every example or drop the row")
        texts = []
        for col in cfg.text_fields:
            t = row.get(col)
            if t is None or (isinstance(t, float) and math.isnan(t)):
                raise FieldError("text_fields", f"{where}: row {i + 1} has no {col!r} text", "fill it or drop the row")
            texts.append(str(t))
        out.append((texts[0], texts[1] if len(texts) == 2 else None, _label_value(raw)))
    return out


def load_splits(cfg) -> tuple[tuple[Example, ...], tuple[Example, ...], tuple[str, ...]]:
    """Full (train, eval) Examples and the label names (index = id). FieldError on bad data."""
    check_config(cfg)
    train_rows, eval_rows, wt, we, kt, ke = _source_rows(cfg)
    _check_columns(train_rows, wt, kt, cfg)
    _check_columns(eval_rows, we, ke, cfg)
    train, eval_ = _labelled(train_rows, wt, cfg), _labelled(eval_rows, we, cfg)
    if len({type(v) for *_, v in train + eval_}) > 1:  # numbers and text mixed: compare all as text
        train = [(a, b, str(v)) for a, b, v in train]
        eval_ = [(a, b, str(v)) for a, b, v in eval_]
    ids = {v: n for n, v in enumerate(sorted({v for *_, v in train}))}
    unseen = sorted({str(v) for *_, v in eval_ if v not in ids})
    if unseen:
        raise FieldError("label_field", f"{we}: label(s) {', '.join(unseen[:5])} never appear in the training data",
                         "drop those rows, or add training examples of those labels")
    return (number("train", ((a, b, ids[v]) for a, b, v in train)),
            number("eval", ((a, b, ids[v]) for a, b, v in eval_)),
            tuple(str(v) for v in ids))


def check_data(cfg) -> None:
    """What ``study validate`` checks: the keys, and every row of local data (files, or an hf: folder)."""
    check_config(cfg)
    if cfg.dataset == "file" or Path(hub_name(cfg.dataset)[0]).expanduser().is_dir():
        _, _, names = load_splits(cfg)
        check_metric(cfg.metric or DEFAULT_METRIC, len(names))


def data_sha256(cfg) -> str | None:
    """sha256 over the bytes of the train and eval files (what run_ids hash instead of paths)."""
    if cfg.dataset != "file":
        return None
    h = hashlib.sha256()
    for key in ("train_file", "eval_file"):
        path = Path(getattr(cfg, key))
        file_format(cfg, key)  # an unknown extension is the first thing to say
        if not path.is_file():
            raise FieldError(key, f"{path}: file not found", "check the path (relative to the protocol file)")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def check_metric(metric: str, num_labels: int) -> None:
    if metric in ("f1", "mcc") and num_labels != 2:
        raise FieldError("metric", f"{metric} is a binary metric but the task has {num_labels} labels",
                         "use macro_f1, weighted_f1 or accuracy")


@functools.lru_cache(maxsize=16)
def _cached(cfg) -> TaskData:
    if cfg.data_sha256 and data_sha256(cfg) != cfg.data_sha256:
        raise TaskDataError(f"{cfg.train_file} / {cfg.eval_file} changed since the runs were planned "
                            "(data_sha256 differs); re-run `study run` so the run_ids follow the data")
    full_train, full_eval, names = load_splits(cfg)
    metric = cfg.metric or DEFAULT_METRIC
    check_metric(metric, len(names))
    train = stratified_subsample(full_train, cfg.max_train_examples, cfg.data_seed)
    eval_ = stratified_subsample(full_eval, cfg.max_eval_examples, cfg.data_seed)
    return TaskData(dataset=cfg.dataset, train=train, eval=eval_, num_labels=len(names), label_names=names,
                    primary_metric=metric, fingerprint=fingerprint(train, eval_))


def load_task(cfg) -> TaskData:
    """TaskData for a TaskConfig of a ``file`` or ``hf:`` dataset, parsed once per process."""
    # A spec read back from JSON carries text_fields as a list; the cache key needs a tuple.
    return _cached(dataclasses.replace(cfg, text_fields=tuple(cfg.text_fields or ()) or None))


def clear_cache() -> None:
    _cached.cache_clear()
