"""Datasets by file or by hub name: ``dataset: file`` (local files) and ``dataset: hf:<name>[:<config>]``.

Both load rows (one mapping per example), then share one code path: take ``text_fields`` (one,
or two for sentence pairs) and ``label_field``, map labels to ids, check every row, and hand
(train, eval) Examples to the same stratified subsample and fingerprint as the built-in tasks.

``task_type: token-classification`` reads one list of words and one list of tags per row: a
``.conll`` file (its rows are ``{"tokens", "tags"}``, so it needs no ``text_fields``), or
``.jsonl``/``.json``/``.parquet`` rows with ``text_fields: [<words column>]`` and
``label_field: <tags column>``. The Examples are built as ``lince-lid`` builds them
(:func:`~study.tasks.base.token_example`: the tags as ids, the sentence's most frequent tag as its
stratum); the default metric is weighted F1, macro F1 recorded beside it.

- ``file``: ``train_file`` and ``eval_file`` (paths relative to the protocol, made absolute when
  it is loaded), and optionally ``validation_file`` (the split ``select: best`` picks the epoch
  on, used whole; the alternative to ``validation_fraction``). Format from ``format`` or the
  extension: ``.csv`` (header row, RFC 4180 quoting), ``.tsv`` (header row, tabs, no quoting),
  ``.jsonl`` (one object per line), ``.json`` (a list of objects), ``.parquet``, ``.conll``
  (``token<TAB>tag`` lines: token-level data, see :mod:`study.tasks.conll`).
- ``hf:<name>[:<config>]``: ``datasets.load_dataset(name, config)`` — a hub name, or a local
  folder of files in the hub's layout (``train.csv``, ``validation.jsonl`` ...). Train is the
  ``train`` split; eval is ``eval_split``, by default ``validation`` if the dataset has one,
  else ``test``.

Labels (and tags): integers or strings. The distinct training labels, sorted, become ids
0..K-1 (for integer labels 0..K-1 that is the identity); the run records the names
(``env.labels``). An eval or validation label never seen in training is an error: the model
cannot predict it. The run_id hashes the files' bytes (``data_sha256``), never their paths; a
hub dataset is identified by name, config and split (pin a revision by downloading it to a
folder if that matters).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from study.tasks.base import (
    Example,
    TaskData,
    TaskDataError,
    fingerprint,
    generation_example,
    group_references,
    number,
    stratified_subsample,
    token_example,
)

FORMATS = ("csv", "tsv", "jsonl", "json", "parquet", "conll")
FILE_KEYS = ("train_file", "eval_file", "validation_file", "eval_split", "text_fields", "label_field", "metric",
             "format", "source_field", "target_field")
SPLIT_FILES = (("train_file", "train"), ("eval_file", "eval"), ("validation_file", "validation"))  # key, id prefix
CONLL_FIELDS = (("tokens",), "tags")  # what read_rows names a CoNLL sentence's words and tags
# Column pairs of well-known sentence-pair datasets: naming only one of them is a mistake.
PAIR_COLUMNS = (("sentence1", "sentence2"), ("question1", "question2"), ("premise", "hypothesis"),
                ("question", "sentence"), ("text_a", "text_b"), ("sentence_a", "sentence_b"))
FORMAT_HOLDS = {"csv": "holds one label per text,", "tsv": "holds one label per text,"}
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


def task_type_of(cfg):
    from study.tasktypes import get_task_type

    return get_task_type(cfg.task_type)


def is_token_task(cfg) -> bool:
    """Rows hold a list of words and a list of tags."""
    return task_type_of(cfg).file_rows == "words-tags"


def _file_keys(cfg) -> list[str]:
    return [key for key, _ in SPLIT_FILES if getattr(cfg, key)]


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
        _check_formats(cfg)
    elif _file_keys(cfg):
        key = _file_keys(cfg)[0]
        raise FieldError(key, "a hub dataset takes no files",
                         "use `dataset: file` for local files, or eval_split to pick a hub split")
    if task_type_of(cfg).file_rows == "source-target":
        _check_generation_fields(cfg)
        return
    for key in ("source_field", "target_field"):
        if getattr(cfg, key):
            raise FieldError(key, f"only applies to generation tasks (`task_type: seq2seq`), not {cfg.task_type}",
                             f"remove {key}, or set `task_type: seq2seq`")
    all_conll = cfg.dataset == "file" and all(file_format(cfg, k) == "conll" for k in _file_keys(cfg))
    if all_conll:  # CoNLL has no columns: its fields are fixed
        if cfg.text_fields not in (None, CONLL_FIELDS[0], list(CONLL_FIELDS[0])):
            raise FieldError("text_fields", "CoNLL files have no columns (each line is `token<TAB>tag`)",
                             "remove text_fields")
        if cfg.label_field not in ("label", CONLL_FIELDS[1]):
            raise FieldError("label_field", "CoNLL files have no columns (each line is `token<TAB>tag`)",
                             "remove label_field")
        return
    if not cfg.text_fields:
        raise FieldError("text_fields", "required", "list the text column(s): `text_fields: [text]`, "
                         "or two for sentence pairs" + (" (token tasks: the one column of words)"
                                                        if is_token_task(cfg) else ""))
    if is_token_task(cfg) and len(cfg.text_fields) != 1:
        raise FieldError("text_fields", f"{len(cfg.text_fields)} fields given; a token-classification task reads "
                         "one list of words per row", "name the one column holding the words: `text_fields: [tokens]`")
    if len(cfg.text_fields) > 2:
        raise FieldError("text_fields", f"{len(cfg.text_fields)} fields given; one text or a sentence pair is "
                         "supported", "list one or two columns")


def _check_generation_fields(cfg) -> None:
    for key in ("source_field", "target_field"):
        if not getattr(cfg, key):
            raise FieldError(key, "required for a seq2seq task read from files or the hub",
                             f"name the column: `{key}: {'mr' if key == 'source_field' else 'ref'}`")
    if cfg.text_fields:
        raise FieldError("text_fields", "a seq2seq task reads source_field and target_field", "remove text_fields")
    if cfg.label_field != "label":
        raise FieldError("label_field", "a seq2seq task reads source_field and target_field", "remove label_field")


def _generation_examples(split: _Split, cfg) -> tuple[Example, ...]:
    """Rows → one Example per distinct source with all its references (a list-valued target, or rows
    repeating the source). FieldError for a missing column, an empty source or reference."""
    columns = list(split.rows[0])
    for key in ("source_field", "target_field"):
        if getattr(cfg, key) not in columns:
            raise FieldError(key, f"{split.where}: no column {getattr(cfg, key)!r} "
                             f"(columns: {', '.join(map(str, columns))})", "name one of those columns")
    pairs = []
    for i, row in enumerate(split.rows):
        source, target = row.get(cfg.source_field), row.get(cfg.target_field)
        if _is_missing(source) or not str(source).strip():
            raise FieldError("source_field", f"{split.where}: row {i + 1} has an empty {cfg.source_field!r} source",
                             "fill it or drop the row")
        refs = _as_list(target)
        refs = [target] if refs is None else refs
        if not refs or any(_is_missing(r) or not str(r).strip() for r in refs):
            raise FieldError("target_field", f"{split.where}: row {i + 1} has an empty {cfg.target_field!r} reference",
                             "give every source at least one non-empty reference, or drop the row")
        pairs.append((str(source).strip(), [str(r).strip() for r in refs]))
    return tuple(generation_example(f"{split.name}-{i}", src, refs)
                 for i, (src, refs) in enumerate(group_references(pairs)))


def _check_formats(cfg) -> None:
    """A file's format must suit the task type: CoNLL is token-level, CSV/TSV sequence-level."""
    for key in _file_keys(cfg):
        fmt = file_format(cfg, key)
        where = getattr(cfg, key)
        allowed = task_type_of(cfg).file_formats
        if fmt == "conll" and fmt not in allowed:
            raise FieldError("format", f"{where}: CoNLL holds one tag per token, not one label per text",
                             "set `task_type: token-classification` for token-level data, or give one label per "
                             "text (csv, tsv, jsonl, json, parquet)")
        if fmt not in allowed:
            raise FieldError("format", f"{where}: {fmt} {FORMAT_HOLDS.get(fmt, 'is not read')} but task_type is "
                             f"{cfg.task_type}", task_type_of(cfg).file_hint)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and v.strip() in _MISSING)


def read_rows(path: Path, fmt: str, key: str) -> list[dict]:
    """The rows of one file as mappings. FieldError (naming ``key`` and the file) on a missing file
    or on bytes that are not a file of that format: bad UTF-8, a CSV the csv module refuses, a
    JSON line that is not an object, a damaged parquet file."""
    return read_rows_with_lines(path, fmt, key)[0]


def read_rows_with_lines(path: Path, fmt: str, key: str) -> tuple[list[dict], list[int] | None]:
    """``read_rows``, and each row's 1-based line number in the file (None for formats without lines)."""
    if not path.is_file():
        raise FieldError(key, f"{path}: file not found", "check the path (relative to the protocol file)")
    try:
        rows, lines = _read_rows(path, fmt, key)
    except UnicodeDecodeError as e:
        raise FieldError(key, f"{path}: byte {e.start} is not UTF-8 ({e.reason})",
                         "save the file as UTF-8 text") from None
    except csv.Error as e:
        raise FieldError(key, f"{path}: not a readable {fmt.upper()} file ({e})",
                         f"check the file's quoting and line ends; {_FORMAT_HINTS[fmt]}") from None
    except (OSError, ValueError, TypeError, ImportError, RecursionError) as e:  # (ArrowInvalid is a ValueError)
        if isinstance(e, TaskDataError):
            raise
        raise FieldError(key, f"{path}: not a readable {fmt} file ({type(e).__name__}: {e})",
                         _FORMAT_HINTS[fmt]) from None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            where = f"{path}:{i + 1}" if fmt == "jsonl" else f"{path}: item {i + 1}"
            raise FieldError(key, f"{where}: a {type(row).__name__}, not an object of named fields",
                             _FORMAT_HINTS[fmt])
    return rows, lines


_FORMAT_HINTS = {"csv": "a header row, then one row per example", "tsv": "a header row, then one row per example",
                 "jsonl": "one JSON object per line", "json": "a JSON list of objects",
                 "parquet": "write it again with pandas.DataFrame.to_parquet or pyarrow",
                 "conll": "one `token<TAB>tag` per line, a blank line between sentences, `#` comment lines"}


def _read_rows(path: Path, fmt: str, key: str) -> tuple[list, list[int] | None]:
    if fmt in ("csv", "tsv"):
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f) if fmt == "csv" else csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            rows, lines = [], []
            reader.fieldnames  # noqa: B018  (reads the header: a quoted header field may span lines)
            start = reader.line_num + 1
            for row in reader:
                rows.append(row)
                lines.append(start)
                start = reader.line_num + 1  # a quoted field may span lines: the next row starts after them
            return rows, lines
    if fmt == "jsonl":
        rows, lines = [], []
        for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
            if line.strip():
                lines.append(lineno)
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise FieldError(key, f"{path}:{lineno}: not a JSON object ({e})", "one JSON object per line") from None
        return rows, lines
    return _read_rows_without_lines(path, fmt, key), None


def _read_rows_without_lines(path: Path, fmt: str, key: str) -> list[dict]:
    if fmt == "json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise
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
        raise FieldError(key, str(e).split("; fix:")[0], _FORMAT_HINTS["conll"]) from None
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


@dataclass(frozen=True)
class _Split:
    """One split's rows and how to name it in messages."""

    name: str  # the Examples' id prefix: train, eval, validation
    key: str  # the tasks[] key that names the data: train_file, eval_file, validation_file, or dataset
    where: str  # the file (or hub split), quoted in messages
    rows: list
    conll: bool = False  # read from a CoNLL file: the fields are CONLL_FIELDS
    lines: list | None = None  # each row's 1-based line in its file (CSV, TSV, JSONL), else None

    def row_name(self, i: int) -> str:
        return f"line {self.lines[i]}" if self.lines else f"row {i + 1}"

    def fields(self, cfg) -> tuple[tuple[str, ...], str]:
        return CONLL_FIELDS if self.conll else (tuple(cfg.text_fields), cfg.label_field)


def _splits(cfg) -> list[_Split]:
    """train, eval and (when validation_file is set) validation, in that order."""
    if cfg.dataset != "file":
        train, eval_, wt, we = _hub_rows(cfg)
        return [_Split("train", "dataset", wt, train), _Split("eval", "dataset", we, eval_)]
    out = []
    for key, name in SPLIT_FILES:
        if getattr(cfg, key):
            fmt = file_format(cfg, key)
            rows, lines = read_rows_with_lines(Path(getattr(cfg, key)), fmt, key)
            out.append(_Split(name, key, getattr(cfg, key), rows, conll=fmt == "conll", lines=lines))
    return out


def _check_columns(split: _Split, cfg) -> None:
    if not split.rows:
        raise FieldError(split.key, f"{split.where}: the split is empty", "give it at least one example")
    if split.conll:
        return
    text_fields, label_field = split.fields(cfg)
    columns = list(split.rows[0])
    for field_key, names in (("text_fields", text_fields), ("label_field", (label_field,))):
        for col in names:
            if col not in columns:
                raise FieldError(field_key, f"{split.where}: no column {col!r} "
                                 f"(columns: {', '.join(map(str, columns))})", "name one of those columns")
    if len(text_fields) == 1 and not is_token_task(cfg):
        pair = next((p for p in PAIR_COLUMNS if set(p) <= set(columns) and text_fields[0] in p), None)
        if pair:
            raise FieldError("text_fields", f"{split.where} is a sentence-pair task (columns {pair[0]}, {pair[1]}) "
                             "but text_fields names one", f"write `text_fields: [{pair[0]}, {pair[1]}]`")


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


def _labelled(split: _Split, cfg) -> list[tuple[str, str | None, int | str]]:
    """Sequence rows -> (text_a, text_b, label value)."""
    text_fields, label_field = split.fields(cfg)
    out, bad = [], _BadRows(split)
    for i, row in enumerate(split.rows):
        raw = row.get(label_field)
        if _is_missing(raw):
            bad.add(i, "label_field", f"a NaN or empty {label_field!r} label", "label every example or drop those rows")
            continue
        texts = []
        for col in text_fields:
            t = row.get(col)
            if t is None or (isinstance(t, float) and math.isnan(t)):
                bad.add(i, "text_fields", f"no {col!r} text", "fill it or drop those rows")
            texts.append(str(t))
        if len(texts) == len(text_fields):
            out.append((texts[0], texts[1] if len(texts) == 2 else None, _label_value(raw)))
    bad.check()
    return out


class _BadRows:
    """Every bad row of a split, reported at once: the first :data:`SHOWN` with their 1-based line
    numbers (or row numbers, for formats without lines), and how many there are."""

    SHOWN = 10

    def __init__(self, split: _Split):
        self.split = split
        self.found: list[tuple[str, str, str, str]] = []  # (key, where, problem, fix)

    def add(self, i: int, key: str, problem: str, fix: str) -> None:
        self.found.append((key, self.split.row_name(i), problem, fix))

    def check(self) -> None:
        if not self.found:
            return
        key, _, _, fix = self.found[0]
        shown = "; ".join(f"{where}: {problem}" for _, where, problem, _ in self.found[:self.SHOWN])
        more = f" (the first {self.SHOWN} shown)" if len(self.found) > self.SHOWN else ""
        raise FieldError(key, f"{self.split.where}: {len(self.found)} bad row(s){more}: {shown}", fix)


def _as_list(v) -> list | None:
    # parquet hands list columns back as numpy arrays; json and hub rows as lists
    if isinstance(v, (list, tuple)) or type(v).__name__ == "ndarray":
        return list(v)
    return None


def _tagged(split: _Split, cfg) -> list[tuple[list[str], list]]:
    """Token rows -> (words, tag values), one tag per word."""
    (words_field,), tags_field = split.fields(cfg)
    out, bad = [], _BadRows(split)
    for i, row in enumerate(split.rows):
        words, tags = _as_list(row.get(words_field)), _as_list(row.get(tags_field))
        if words is None:
            bad.add(i, "text_fields", f"{words_field!r} is not a list of words",
                    "give each row a list of words, e.g. [\"I\", \"like\", \"it\"]")
        elif tags is None:
            bad.add(i, "label_field", f"{tags_field!r} is not a list of tags", "give each row a list with one tag per word")
        elif not words:
            bad.add(i, "text_fields", "no words", "drop those rows")
        elif len(words) != len(tags) or any(_is_missing(t) for t in tags):
            bad.add(i, "label_field", f"{len(words)} words but {sum(not _is_missing(t) for t in tags)} tags",
                    "give every word exactly one tag")
        else:
            out.append(([str(w) for w in words], [_label_value(t) for t in tags]))
    bad.check()
    return out


def load_splits(cfg) -> tuple[dict[str, tuple[Example, ...]], tuple[str, ...]]:
    """Full Examples per split (``train``, ``eval``, ``validation`` when validation_file is set) and
    the label names (index = id). FieldError on bad data."""
    check_config(cfg)
    splits = _splits(cfg)
    if task_type_of(cfg).file_rows == "source-target":
        for split in splits:
            if not split.rows:
                raise FieldError(split.key, f"{split.where}: the split is empty", "give it at least one example")
        return {split.name: _generation_examples(split, cfg) for split in splits}, ()
    for split in splits:
        _check_columns(split, cfg)
    token = is_token_task(cfg)
    parsed = [_tagged(s, cfg) if token else _labelled(s, cfg) for s in splits]

    def values(row) -> list:  # a row's labels: its tags, or its one label
        return row[1] if token else [row[2]]

    if len({type(v) for rows in parsed for row in rows for v in values(row)}) > 1:
        # numbers and text mixed: compare all as text
        parsed = [[(r[0], [str(t) for t in r[1]]) if token else (r[0], r[1], str(r[2])) for r in rows]
                  for rows in parsed]
    ids = {v: n for n, v in enumerate(sorted({v for row in parsed[0] for v in values(row)}))}
    for split, rows in zip(splits[1:], parsed[1:], strict=True):
        unseen = sorted({str(v) for row in rows for v in values(row) if v not in ids})
        if unseen:
            what = "tag(s)" if token else "label(s)"
            raise FieldError(split.key if split.conll else "label_field",
                             f"{split.where}: {what} {', '.join(unseen[:5])} never appear in the training data",
                             "drop those rows, or add training examples of those labels")
    examples = {}
    for split, rows in zip(splits, parsed, strict=True):
        if token:
            examples[split.name] = tuple(token_example(f"{split.name}-{i}", words, [ids[t] for t in tags])
                                         for i, (words, tags) in enumerate(rows))
        else:
            examples[split.name] = number(split.name, ((a, b, ids[v]) for a, b, v in rows))
    return examples, tuple(str(v) for v in ids)


def primary_metric(cfg) -> str:
    return cfg.metric or task_type_of(cfg).default_metric


def extra_metrics(cfg) -> tuple[str, ...]:
    """What the task type records beside the primary metric (token tasks: both F1s, as lince-lid)."""
    return tuple(m for m in task_type_of(cfg).recorded_metrics if m != primary_metric(cfg))


def check_data(cfg) -> None:
    """What ``study validate`` checks: the keys, and every row of local data (files, or an hf: folder)."""
    check_config(cfg)
    if not is_custom(cfg.dataset):
        return  # a built-in dataset: check_data_dir checks its folder
    if cfg.dataset == "file" or Path(hub_name(cfg.dataset)[0]).expanduser().is_dir():
        _, names = load_splits(cfg)
        check_metric(primary_metric(cfg), len(names))


def data_sha256(cfg) -> str | None:
    """sha256 over the bytes of the train, eval (and validation) files: what run_ids hash instead of paths.

    Without a validation_file the hash is what it always was, so existing run_ids stay valid."""
    if cfg.dataset != "file":
        return None
    h = hashlib.sha256()
    for key in _file_keys(cfg):
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
        raise TaskDataError(f"{' / '.join(getattr(cfg, k) for k in _file_keys(cfg))} changed since the runs were "
                            "planned (data_sha256 differs); re-run `study run` so the run_ids follow the data")
    full, names = load_splits(cfg)
    metric = primary_metric(cfg)
    check_metric(metric, len(names))
    train = stratified_subsample(full["train"], cfg.max_train_examples, cfg.data_seed)
    eval_ = stratified_subsample(full["eval"], cfg.max_eval_examples, cfg.data_seed)
    validation = full.get("validation", ())  # used whole: it only picks the epoch
    return TaskData(dataset=cfg.dataset, train=train, eval=eval_, num_labels=len(names), label_names=names,
                    primary_metric=metric, fingerprint=fingerprint(train, eval_, validation),
                    task_type=cfg.task_type, validation=validation, extra_metrics=extra_metrics(cfg))


def load_task(cfg) -> TaskData:
    """TaskData for a TaskConfig of a ``file`` or ``hf:`` dataset, parsed once per process."""
    # A spec read back from JSON carries text_fields as a list; the cache key needs a tuple.
    # generation settings do not change the data (and arrive as a dict, which the cache cannot hash)
    return _cached(dataclasses.replace(cfg, text_fields=tuple(cfg.text_fields or ()) or None, generation=None))


def clear_cache() -> None:
    _cached.cache_clear()
