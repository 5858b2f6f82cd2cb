"""Study protocols: YAML → frozen, typed dataclasses, with errors that name the key path.

A protocol is the whole design of a study (seeds × tasks × models × maskers plus training,
analysis and execution settings). ``load_protocol`` validates everything it can without
building a model or reading a dataset, so ``study validate`` is fast and a typo never costs
a GPU-hour.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import stat
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from study.errors import ProtocolError
from study.registry import did_you_mean


@dataclass(frozen=True)
class GenerationConfig:
    """``tasks[].generation`` of a seq2seq task: greedy by default; ``max_new_tokens`` defaults to
    the longest training target (in tokens)."""

    num_beams: int = 1
    max_new_tokens: int | None = None
    length_penalty: float = 1.0
    no_repeat_ngram_size: int = 0


@dataclass(frozen=True)
class TaskConfig:
    name: str
    dataset: str
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    data_dir: str | None = None  # local copy of the data; a path, so never part of run_id
    data_seed: int = 0  # seed of the stratified subsample, the same for every run
    # dataset: file | hf:<name>[:<config>] (study.tasks.files): where the rows are and which columns to read
    train_file: str | None = None  # relative to the protocol file; made absolute, never part of run_id
    eval_file: str | None = None
    validation_file: str | None = None  # file datasets: the split select: best picks on (else validation_fraction)
    eval_split: str | None = None  # hf: only; default validation, else test
    text_fields: tuple[str, ...] | None = None  # one column, or two for sentence pairs
    label_field: str = "label"
    # seq2seq (task_type: seq2seq) from files: the source column and the target column (a text, or a
    # list of references; rows repeating a source are grouped into one example with all their references)
    source_field: str | None = None
    target_field: str | None = None
    metric: str | None = None  # primary metric (analysis.metrics.METRICS); default: the dataset's
    format: Literal["csv", "tsv", "jsonl", "json", "parquet", "conll"] | None = None  # default: from the extension
    data_sha256: str | None = None  # computed from the files' bytes when the protocol loads (run_id hashes it)
    # a registered task type (study.tasktypes.TASK_TYPES): sequence-classification, token-classification
    # (one label per word, e.g. lince-lid), seq2seq; must match the dataset's type
    task_type: str = "sequence-classification"
    # share of the (subsampled) training data held out, stratified by a hash, to pick the best epoch
    validation_fraction: float | None = None
    # seq2seq: how evaluation generates (study.tasktypes.seq2seq); part of the run_id when given
    generation: GenerationConfig | None = None
    # seq2seq: the metrics compare lower-cased text (sacrebleu's lowercase=True; signature case:lc),
    # e.g. for an uncased model's generations against cased references; part of the run_id when set
    lowercase: bool = False


@dataclass(frozen=True)
class ModelConfig:
    name: str
    source: str  # "builtin:minilm-l6", a hub name, or a local directory
    num_hidden_layers: int | None = None  # keep only the first N pretrained layers
    replacement_token: str | None = None  # for models without [MASK]; default: unk, else a new special token
    # what the sequence-classification head reads: the model's own choice (BERT: [CLS] through its
    # pooler; decoders: the last token) or the mean of the token states (sentence-transformer models).
    # Token tasks label every position and pool nothing: their runs ignore it (spec.model_for).
    pooling: Literal["cls", "mean"] = "cls"
    # seq2seq: warm-start an encoder-decoder (BERT2BERT) with a decoder made from this checkpoint
    # (a source like `source`); without it a seq2seq task needs an encoder-decoder `source`
    decoder: str | None = None


@dataclass(frozen=True)
class MaskerConfig:
    name: str
    kind: str
    params: Any  # the kind's Params dataclass, validated

    def to_dict(self) -> dict:
        # Optional parameters left unset (None, which is also their default) are not written, so
        # adding such an option to a kind (e.g. a schedule) leaves existing run_ids unchanged.
        unset_ok = {f.name for f in dataclasses.fields(self.params) if f.default is None}
        params = {k: v for k, v in dataclasses.asdict(self.params).items() if not (v is None and k in unset_ok)}
        return {"name": self.name, "kind": self.kind, **params}


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int
    batch_size: int
    learning_rate: float
    max_length: int
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    class_weights: Literal["sqrt-inverse"] | None = None
    loss: Literal["ce", "focal"] = "ce"
    eval_batch_size: int = 128
    # autocast for forward and loss (bf16/fp16; fp16 adds a gradient scaler); fp32 leaves run_ids as they were
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    # AdamW's kernel. "adamw": the for-loop on the CPU (fp32 results stay bit-identical to earlier
    # runs), the fused kernel on CUDA. "adamw-fused": the fused kernel on the CPU too — one pass over
    # the parameters instead of a dozen (what Trainer's default adamw_torch_fused uses), results
    # differ from "adamw" in the last bits. Part of the run_id only when not the default.
    optimizer: Literal["adamw", "adamw-fused"] = "adamw"
    # which epoch's eval metrics and predictions are the run's result: the last, or the one best
    # on the validation split (tasks[].validation_fraction or validation_file) by the primary metric
    select: Literal["last", "best"] = "last"
    early_stopping_patience: int | None = None  # with select: best, stop after this many epochs without a new best
    # which epochs evaluate the eval split: all (the metrics table's per-epoch curve) or only the last
    # (the run's result; the other epochs record their training loss). Evaluation never changes
    # training, so the result is the same; "last" saves a seq2seq run its per-epoch generation,
    # which can cost as much as an epoch of training. select: best needs all.
    eval_epochs: Literal["all", "last"] = "all"


@dataclass(frozen=True)
class ComparisonConfig:
    treatment: str
    baseline: str


@dataclass(frozen=True)
class AnalysisConfig:
    baseline: str | None = None  # every other masker is compared with this one ...
    comparisons: tuple[ComparisonConfig, ...] = ()  # ... or exactly these pairs
    alpha: float = 0.05
    margin: float | None = None  # equivalence margin (metric units, e.g. 0.01 = 1 point)
    n_boot: int = 10_000
    seed: int = 0
    # model name -> parameter count, for models of one family: the rate sweep then also tests
    # whether the response moves with log model size (analysis.rate_interaction)
    model_sizes: dict[str, float] | None = None


@dataclass(frozen=True)
class SequentialConfig:
    """Seeds look by look (``study run``): after each look's seeds finish, decided comparisons
    stop and undecided ones go on. Alpha and margin come from ``analysis:``; not in run_ids."""

    looks: tuple[int, ...] = (3, 5, 8, 12)  # seed pairs at each look, increasing, last <= seeds
    spending: Literal["obf", "pocock"] = "obf"  # O'Brien-Fleming-like or Pocock-like alpha spending
    futility: bool = True  # stop comparisons that look hopeless at an interim look

    def design(self, analysis: AnalysisConfig):
        from analysis.sequential import SequentialDesign

        return SequentialDesign(self.looks, analysis.alpha, self.spending, analysis.margin,
                                self.futility)


@dataclass(frozen=True)
class RayConfig:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port" to join a cluster
    num_cpus: int | None = None  # resources of a local Ray started by the driver (None: detected) ...
    num_gpus: int | None = None  # ... a number > 0 on a CPU box fakes GPUs (how the tests run it)


@dataclass(frozen=True)
class SlurmConfig:
    partition: str | None = None
    time_min: int = 60
    gpus_per_task: int = 1
    cpus_per_task: int = 4
    mem_gb: int | None = None
    array_parallelism: int = 16
    folder: str = "runs/slurm"
    executor: Literal["slurm", "local", "debug"] = "slurm"
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    max_num_timeout: int = 3  # requeues after hitting the time limit (pre-emptions requeue without limit)


@dataclass(frozen=True)
class ExecutionConfig:
    backend: Literal["local", "ray", "slurm"] = "local"  # `study run --backend` overrides it
    runs_per_gpu: int = 1
    cpu_slots: int = 1
    max_attempts: int = 2
    deterministic: bool = False
    threads_per_run: int | None = None
    timeout_min: float | None = None
    # local pool: fork each worker from a preloaded server (fast start) or start a fresh interpreter
    worker_start: Literal["forkserver", "spawn"] = "forkserver"
    # where runs compute; the environment variable MASKSTUDY_DEVICE overrides it (study.device)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    tf32: bool = True  # TF32 matmuls on GPUs that have them (recorded in the run's environment)
    # mid-run checkpoints in <store>.work/checkpoints/ (off unless set): a killed run resumes from the last
    checkpoint_every_steps: int | None = None
    checkpoint_every_min: float | None = None
    ray: RayConfig = field(default_factory=RayConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)


@dataclass(frozen=True)
class Protocol:
    name: str
    seeds: tuple[int, ...]
    store: str
    tasks: tuple[TaskConfig, ...]
    models: tuple[ModelConfig, ...]
    maskers: tuple[MaskerConfig, ...]
    training: TrainingConfig
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    sequential: SequentialConfig | None = None  # None: every seed runs (the fixed design)
    description: str = ""
    local_data: dict[str, str] = field(default_factory=dict)  # key path → what to point at local data
    # masker plugins, as loaded: absolute file paths or module names, each with its source hash and kinds
    plugins: tuple = ()
    # tracking sinks (study.tracking.SinkConfig): copies of the store in MLflow ...; never in a run_id
    tracking: tuple = ()
    source: str | None = None  # the file it came from
    sha256: str = ""  # hash of the file's bytes, printed in reports

    @property
    def store_path(self) -> Path:
        """The results store: ``store:`` relative to the protocol's folder, like data and plugins
        (a protocol without a file, built in Python, resolves it against the working directory)."""
        return self.base_dir / Path(self.store).expanduser()

    @property
    def base_dir(self) -> Path:
        """The folder relative paths of the protocol are read from: the protocol file's."""
        return Path(self.source).parent.absolute() if self.source else Path.cwd()

    def masker(self, name: str) -> MaskerConfig:
        return next(m for m in self.maskers if m.name == name)

    def analysis_options(self) -> dict:
        """Keyword arguments for ``analysis.analyze`` / ``write_analysis`` from the analysis block."""
        a = self.analysis
        return {"baseline": None if a.comparisons else a.baseline,
                "comparisons": self.comparisons() if a.comparisons else None,
                "alpha": a.alpha, "margin": a.margin, "n_boot": a.n_boot, "seed": a.seed,
                "model_sizes": a.model_sizes}

    def comparisons(self) -> list[tuple[str, str]]:
        """(treatment, baseline) pairs the analysis tests."""
        if self.analysis.comparisons:
            return [(c.treatment, c.baseline) for c in self.analysis.comparisons]
        base = self.analysis.baseline
        if base is None:  # a single-masker (seed-variance) study compares nothing
            return []
        return [(m.name, base) for m in self.maskers if m.name != base]


# --------------------------------------------------------------------------------------------
# Generic typed conversion: mapping → dataclass, with the key path in every error.


class _Converter:
    def __init__(self, file: str | None):
        self.file = file

    def fail(self, path: str, problem: str, fix: str = "") -> typing.NoReturn:
        raise ProtocolError(self.file, path, problem, fix)

    def dataclass(self, cls, data, path: str, skip: tuple[str, ...] = ()):
        if not isinstance(data, dict):
            self.fail(path, f"expected a mapping, got {type(data).__name__}", "write it as `key: value` lines")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
        hints = typing.get_type_hints(cls)
        for key in data:
            if key not in fields:
                where = f"{path}.{key}" if path else str(key)
                self.fail(where, "unknown key." + did_you_mean(str(key), fields),
                          f"remove it; allowed keys: {', '.join(fields)}")
        values = {}
        for name, f in fields.items():
            sub = f"{path}.{name}" if path else name
            if name in data:
                values[name] = self.value(hints[name], data[name], sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.fail(sub, "required key is missing", f"add `{name}:`")
        return cls(**values)

    def value(self, tp, v, path: str):
        origin = typing.get_origin(tp)
        args = typing.get_args(tp)
        if origin in (Union, types.UnionType):
            if v is None and type(None) in args:
                return None
            rest = [a for a in args if a is not type(None)]
            if len(rest) == 1:
                return self.value(rest[0], v, path)
            for a in rest:
                try:
                    return self.value(a, v, path)
                except ProtocolError:
                    continue
            self.fail(path, f"{v!r} matches none of the allowed types")
        if origin is Literal:
            if v not in args:
                allowed = ", ".join(repr(a) for a in args)
                self.fail(path, f"{v!r} is not allowed.{did_you_mean(str(v), [str(a) for a in args])}",
                          f"use one of {allowed}")
            return v
        if origin is tuple:
            if not isinstance(v, list):
                self.fail(path, f"expected a list, got {type(v).__name__}", "write it as a YAML list")
            return tuple(self.value(args[0], item, f"{path}[{i}]") for i, item in enumerate(v))
        if origin is dict:
            if not isinstance(v, dict):
                self.fail(path, f"expected a mapping, got {type(v).__name__}")
            if args and args[1] is float:  # numbers as numbers (`1.1e8` reads as a string in YAML)
                return {k: self.value(float, item, f"{path}.{k}") for k, item in v.items()}
            return dict(v)
        if tp is Any:
            return v
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, v, path)
        if tp is bool:
            if not isinstance(v, bool):
                self.fail(path, f"expected true/false, got {v!r}")
            return v
        if tp is int:
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            number = _number(v)  # `1e3` or 1000.0: the integer it is exactly
            if number is None or not number.is_integer() or abs(number) > _EXACT_INT:
                self.fail(path, f"expected an integer, got {v!r}", "write a whole number like 3")
            return int(number)
        if tp is float:
            number = _number(v)
            if number is None:
                self.fail(path, f"expected a number, got {v!r}", "write a number like 5e-5 or 0.1")
            return number
        if tp is str:
            if not isinstance(v, str):
                self.fail(path, f"expected text, got {v!r}")
            return v
        raise TypeError(f"protocol field type {tp} at {path} is not supported")  # a bug, not user input


# YAML 1.1 (PyYAML) reads `5e-5` and `1e3` as text: its float syntax wants a dot and a signed
# exponent. People write them anyway, so such text counts as the number it spells. Other text
# ("fast", "nan", "1_000") stays an error, and so do infinities and NaN, which no field means.
_NUMBER_TEXT = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?")
_EXACT_INT = 2**53  # a float above this may not be the integer that was written


def _number(v) -> float | None:
    """The finite number ``v`` is or spells (int, float, or text like ``2e-5``), else None."""
    if isinstance(v, bool):
        return None
    if isinstance(v, str) and _NUMBER_TEXT.fullmatch(v.strip()):
        v = float(v)  # "1e999" becomes inf, refused below
    if isinstance(v, int):
        try:
            v = float(v)
        except OverflowError:
            return None
    if isinstance(v, float) and math.isfinite(v):
        return v
    return None


# --------------------------------------------------------------------------------------------


def load_protocol(path: str | Path) -> Protocol:
    """Read and fully validate a protocol file. Raises ProtocolError (exit 2 in the CLI)."""
    path = Path(path)
    file = str(path)
    raw_bytes = _read_protocol_file(path)
    try:
        data = yaml.safe_load(raw_bytes)
    except yaml.YAMLError as e:
        raise ProtocolError(file, "", f"not valid YAML ({e})", "fix the line it names") from None
    except RecursionError:  # thousands of nested brackets
        raise ProtocolError(file, "", "not valid YAML (nested too deeply)", "start from protocols/demo.yaml") from None
    return parse_protocol(data, file=file, sha256=hashlib.sha256(raw_bytes).hexdigest())


def _read_protocol_file(path: Path) -> bytes:
    """The file's bytes; refuses what is not a readable regular file (a FIFO would block forever)."""
    file = str(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        problem = "is a symbolic link to a file that does not exist" if path.is_symlink() else "file not found"
        raise ProtocolError(file, "", problem, "check the path") from None
    except OSError as e:  # a path through a regular file, a name too long, a loop of links ...
        raise ProtocolError(file, "", f"cannot be read ({e.strerror})", "check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise ProtocolError(file, "", "is a folder, not a protocol file",
                            f"name a YAML file inside it (e.g. {path / 'demo.yaml'})")
    if not stat.S_ISREG(st.st_mode):
        raise ProtocolError(file, "", "is not a regular file (a pipe, socket or device)",
                            "save the protocol as a YAML file and pass its path")
    try:
        return path.read_bytes()
    except OSError as e:
        raise ProtocolError(file, "", f"cannot be read ({e.strerror})", "check the file's permissions") from None


def parse_protocol(data: Any, file: str | None = None, sha256: str = "") -> Protocol:
    conv = _Converter(file)
    if not isinstance(data, dict):
        conv.fail("", "a protocol must be a mapping at the top level", "start from protocols/demo.yaml")
    data = dict(data)
    seeds = _parse_seeds(conv, data.pop("seeds", None))
    maskers_raw = data.pop("maskers", None)
    # Plugins first: they register the masker kinds the maskers list may use.
    plugins = _load_plugins(conv, data.pop("plugins", []), Path(file).parent if file else None)
    tracking = _parse_tracking(conv, data.pop("tracking", None))
    base = conv.dataclass(Protocol, {**data, "seeds": [], "maskers": []}, "",
                          skip=("source", "sha256", "plugins", "tracking"))
    maskers = _parse_maskers(conv, maskers_raw, plugins)
    tasks = _resolve_task_files(conv, base.tasks, Path(file).parent if file else Path.cwd(), base.local_data)
    proto = dataclasses.replace(base, seeds=seeds, maskers=maskers, source=file, sha256=sha256, plugins=plugins,
                                tasks=tasks, tracking=tracking)
    _check_semantics(conv, proto)
    return proto


MAX_SEED = 2**63 - 1
MAX_SEED_COUNT = 100_000  # a range is expanded into a list: bound it


def _parse_seeds(conv: _Converter, raw) -> tuple[int, ...]:
    if raw is None:
        conv.fail("seeds", "required key is missing", "add `seeds: [0, 1, 2]` or `seeds: {start: 0, count: 5}`")
    if isinstance(raw, dict):
        spec = conv.dataclass(_SeedRange, raw, "seeds")
        if not 1 <= spec.count <= MAX_SEED_COUNT:
            conv.fail("seeds.count", f"must be from 1 to {MAX_SEED_COUNT}, got {spec.count}")
        if not 0 <= spec.start <= MAX_SEED - spec.count:
            conv.fail("seeds.start", f"seeds must be integers from 0 to {MAX_SEED} (what torch.manual_seed takes)")
        seeds = tuple(range(spec.start, spec.start + spec.count))
    else:
        seeds = conv.value(tuple[int, ...], raw, "seeds")
    if not seeds:
        conv.fail("seeds", "the list is empty, so the grid has no runs", "list at least one seed")
    if len(set(seeds)) != len(seeds):
        conv.fail("seeds", f"duplicate seeds {sorted(s for s in set(seeds) if seeds.count(s) > 1)}", "list each seed once")
    if min(seeds) < 0 or max(seeds) > MAX_SEED:
        conv.fail("seeds", f"seeds must be integers from 0 to {MAX_SEED} (what torch.manual_seed takes)")
    return seeds


@dataclass(frozen=True)
class _SeedRange:
    start: int
    count: int


def local_data_hint(local_data: dict, key: str) -> str:
    """What a protocol's ``local_data`` says belongs at ``key`` (e.g. ``tasks[0].data_dir``), as a
    sentence for an error message; empty when it says nothing."""
    hint = local_data.get(key)
    return f" This protocol expects there: {hint}." if hint else ""


def _resolve_task_files(conv: _Converter, tasks, base_dir: Path, local_data: dict) -> tuple[TaskConfig, ...]:
    """File paths relative to the protocol's folder → absolute; the files' hash → ``data_sha256``."""
    from study.tasks import files

    out = []
    for i, t in enumerate(tasks):
        if t.data_sha256 is not None:
            conv.fail(f"tasks[{i}].data_sha256", "is computed from the data files", "remove it")
        paths = {k: str((base_dir / Path(getattr(t, k)).expanduser()).resolve())
                 for k in ("train_file", "eval_file", "validation_file") if getattr(t, k)}
        t = dataclasses.replace(t, **paths)
        if t.dataset == "file" and t.train_file and t.eval_file:
            try:
                t = dataclasses.replace(t, data_sha256=files.data_sha256(t))
            except files.FieldError as e:
                key = f"tasks[{i}].{e.field}"
                hint = local_data_hint(local_data, key)
                conv.fail(key, e.problem, f"{e.fix}.{hint}" if hint else e.fix)
        out.append(t)
    return tuple(out)


def _load_plugins(conv: _Converter, raw, base_dir: Path | None) -> tuple:
    from study import plugins

    entries = conv.value(tuple[str, ...], raw if raw is not None else [], "plugins")
    loaded = []
    for i, entry in enumerate(entries):
        try:
            loaded.append(plugins.load(plugins.resolve_ref(entry, base_dir)))
        except plugins.PluginError as e:
            conv.fail(f"plugins[{i}]", e.problem, e.fix)
    return tuple(loaded)


def _parse_tracking(conv: _Converter, raw) -> tuple:
    from study.tracking import parse_tracking

    return parse_tracking(conv, raw)


def _parse_maskers(conv: _Converter, raw, plugins: tuple = ()) -> tuple[MaskerConfig, ...]:
    from study.maskers.base import ParamError
    from study.registry import masker_kinds, masker_params

    if raw is None:
        conv.fail("maskers", "required key is missing", "add a list like `- {name: none, kind: none}`")
    if not isinstance(raw, list):
        conv.fail("maskers", f"expected a list, got {type(raw).__name__}")
    kinds = masker_kinds()
    out = []
    for i, item in enumerate(raw):
        path = f"maskers[{i}]"
        if not isinstance(item, dict):
            conv.fail(path, f"expected a mapping, got {item!r}", "write `- {name: ..., kind: ..., ...}`")
        item = dict(item)
        name = conv.value(str, item.pop("name", None), f"{path}.name") if "name" in item else None
        if name is None:
            conv.fail(f"{path}.name", "required key is missing", "give every masker a short unique name")
        if "kind" not in item:
            conv.fail(f"{path}.kind", "required key is missing", f"use one of {', '.join(kinds)}")
        kind = item.pop("kind")
        if kind not in kinds:
            conv.fail(f"{path}.kind", f"unknown masker kind {kind!r}.{did_you_mean(str(kind), kinds)}",
                      f"use one of {', '.join(kinds)}")
        origin = next((f" (kind {kind!r} comes from plugin {p.ref})" for p in plugins if kind in p.kinds), "")
        try:
            params = conv.dataclass(masker_params(kind), item, path)
        except ParamError as e:
            conv.fail(f"{path}.{e.field}", e.problem + origin, e.fix)
        except (ValueError, TypeError) as e:  # a Params __post_init__ without a field name
            conv.fail(path, str(e) + origin)
        out.append(MaskerConfig(name=name, kind=kind, params=params))
    return tuple(out)


def _check_unique(conv: _Converter, items, key: str) -> None:
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        if item.name in seen:
            conv.fail(f"{key}[{i}].name", f"duplicate name {item.name!r} (also {key}[{seen[item.name]}])",
                      "give each entry its own name")
        seen[item.name] = i


def _check_semantics(conv: _Converter, p: Protocol) -> None:
    from study.models import check_model_source
    from study.tasks import DATASETS, files
    from study.tasktypes import get_task_type

    if not p.name.strip():
        conv.fail("name", "must not be empty")
    for key in ("tasks", "models", "maskers"):
        items = getattr(p, key)
        if not items:
            conv.fail(key, "the list is empty, so the grid has no runs", f"add at least one entry to {key}")
        _check_unique(conv, items, key)
    # Two maskers with the same kind and parameters would be the same runs under two names.
    seen_cfg: dict[tuple, str] = {}
    for i, m in enumerate(p.maskers):
        sig = (m.kind, tuple(sorted(dataclasses.asdict(m.params).items(), key=str)))
        if sig in seen_cfg:
            conv.fail(f"maskers[{i}]", f"same kind and parameters as masker {seen_cfg[sig]!r}", "remove one of them")
        seen_cfg[sig] = m.name
    for i, t in enumerate(p.tasks):
        _check_task_type(conv, p, i, t)
        if t.dataset not in DATASETS and not files.is_custom(t.dataset):
            conv.fail(f"tasks[{i}].dataset", f"unknown dataset {t.dataset!r}.{did_you_mean(t.dataset, DATASETS)}",
                      f"use one of {', '.join(sorted(DATASETS))}, `file` (local files) or `hf:<hub name>`")
        try:
            files.check_data(t)
        except files.FieldError as e:
            conv.fail(f"tasks[{i}].{e.field}", e.problem, e.fix)
        for k in ("max_train_examples", "max_eval_examples"):
            v = getattr(t, k)
            if v is not None and v < 2:
                conv.fail(f"tasks[{i}].{k}", f"must be at least 2, got {v}")
        if t.dataset in DATASETS and DATASETS.get(t.dataset).task_type != t.task_type:
            kind = DATASETS.get(t.dataset).task_type
            conv.fail(f"tasks[{i}].task_type", f"dataset {t.dataset!r} is a {kind} task, not {t.task_type}",
                      f"set `task_type: {kind}`")
        if t.validation_fraction is not None and not 0 < t.validation_fraction < 1:
            conv.fail(f"tasks[{i}].validation_fraction", f"must be in (0, 1), got {t.validation_fraction}",
                      "e.g. 0.1 holds out a tenth of the training data")
        if t.validation_fraction is not None and t.validation_file:
            conv.fail(f"tasks[{i}].validation_file", "validation_fraction is set too; a task has one validation split",
                      "keep validation_file (a split of its own) or validation_fraction (carved from train)")
        if p.training.select == "best" and t.validation_fraction is None and not t.validation_file:
            conv.fail(f"tasks[{i}].validation_fraction", "training.select is best, which needs a validation split",
                      "set validation_fraction (e.g. 0.1) or validation_file, or `select: last`")
    for t in p.tasks:
        for j, m in enumerate(p.maskers):
            problem = get_task_type(t.task_type).check_masker(m.kind, m.params)
            if problem:
                conv.fail(f"maskers[{j}].{problem[0]}", f"{problem[1]} (task {t.name!r} is {t.task_type})", problem[2])
    for i, m in enumerate(p.models):
        if m.num_hidden_layers is not None and m.num_hidden_layers < 1:
            conv.fail(f"models[{i}].num_hidden_layers", f"must be at least 1, got {m.num_hidden_layers}")
        for key in ("source", "decoder"):
            problem = check_model_source(getattr(m, key)) if getattr(m, key) else None
            if problem:
                conv.fail(f"models[{i}].{key}", problem[0], problem[1])
        _check_model_fits_tasks(conv, p, i, m)
    t = p.training
    for k in ("epochs", "batch_size", "max_length", "eval_batch_size"):
        if getattr(t, k) < 1:
            conv.fail(f"training.{k}", f"must be at least 1, got {getattr(t, k)}")
    if t.learning_rate <= 0:
        conv.fail("training.learning_rate", f"must be positive, got {t.learning_rate}")
    if not 0 <= t.warmup_ratio <= 1:
        conv.fail("training.warmup_ratio", f"must be in [0, 1], got {t.warmup_ratio}")
    if t.weight_decay < 0:
        conv.fail("training.weight_decay", f"must be non-negative, got {t.weight_decay}")
    if t.eval_epochs == "last" and t.select == "best":
        conv.fail("training.eval_epochs", "select: best reports the eval split at the best epoch, so every epoch "
                  "evaluates it", "remove eval_epochs, or use `select: last`")
    if t.early_stopping_patience is not None:
        if t.select != "best":
            conv.fail("training.early_stopping_patience", "needs `select: best` (it stops on the validation metric)",
                      "set training.select: best, or remove early_stopping_patience")
        if t.early_stopping_patience < 1:
            conv.fail("training.early_stopping_patience", f"must be at least 1, got {t.early_stopping_patience}")
    _check_analysis(conv, p)
    _check_sequential(conv, p)
    e = p.execution
    for k in ("runs_per_gpu", "cpu_slots", "max_attempts"):
        if getattr(e, k) < 1:
            conv.fail(f"execution.{k}", f"must be at least 1, got {getattr(e, k)}")
    for k in ("checkpoint_every_steps", "checkpoint_every_min"):
        if getattr(e, k) is not None and getattr(e, k) <= 0:
            conv.fail(f"execution.{k}", f"must be positive, got {getattr(e, k)}", f"leave {k} out to turn it off")


def _check_model_fits_tasks(conv: _Converter, p: Protocol, i: int, m: ModelConfig) -> None:
    """A seq2seq task needs a model that can generate; a classification task a model without a decoder
    entry. Local models are checked by their config.json (hub names cannot be, offline)."""
    import json

    from study.models import resolve_source
    from study.tasktypes import get_task_type

    seq2seq = [t.name for t in p.tasks if get_task_type(t.task_type).generates]
    others = [t.name for t in p.tasks if not get_task_type(t.task_type).generates]
    if m.decoder and others:
        conv.fail(f"models[{i}].decoder", f"builds an encoder-decoder, but task(s) {', '.join(others)} classify",
                  "give the seq2seq study its own protocol, or remove decoder")
    if not seq2seq or m.decoder:
        return
    try:
        path = Path(resolve_source(m.source))
    except Exception:  # noqa: BLE001  (a built-in model's package missing: check_model_source said so)
        return
    config = path / "config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        if not data.get("is_encoder_decoder"):
            conv.fail(f"models[{i}].source", f"{m.source!r} ({data.get('model_type', '?')}) is not an encoder-decoder, "
                      f"so it cannot generate targets for task(s) {', '.join(seq2seq)}",
                      f"use an encoder-decoder (BART, T5, ...) or warm-start one: `decoder: {m.source}`")


def _check_task_type(conv: _Converter, p: Protocol, i: int, t: TaskConfig) -> None:
    """``tasks[i].task_type`` names a registered task type, which accepts the task's settings."""
    from study.tasktypes import TASK_TYPES, get_task_type

    if t.task_type not in TASK_TYPES:
        conv.fail(f"tasks[{i}].task_type", TASK_TYPES.unknown(t.task_type),
                  f"use one of {', '.join(TASK_TYPES.names())} (or register one in a plugin)")
    problem = get_task_type(t.task_type).check_task(t, p.training)
    if problem:
        key, what, fix = problem
        conv.fail(key if key.startswith("training.") else f"tasks[{i}].{key}", what, fix)


def _check_analysis(conv: _Converter, p: Protocol) -> None:
    a = p.analysis
    names = [m.name for m in p.maskers]

    def known(name: str, path: str) -> None:
        if name not in names:
            conv.fail(path, f"{name!r} is not a masker of this protocol.{did_you_mean(name, names)}",
                      f"use one of {', '.join(names)}")

    if not 0 < a.alpha < 1:
        conv.fail("analysis.alpha", f"must be in (0, 1), got {a.alpha}")
    if a.margin is not None and a.margin <= 0:
        conv.fail("analysis.margin", f"must be positive, got {a.margin}")
    if a.n_boot < 100:
        conv.fail("analysis.n_boot", f"must be at least 100, got {a.n_boot}")
    # One masker is a seed-variance (or pilot) study: nothing to compare, nothing to declare.
    if a.baseline is None and not a.comparisons and len(p.maskers) > 1:
        conv.fail("analysis.baseline", "no comparison is defined",
                  "set `baseline: <masker name>` or list `comparisons: [{treatment: ..., baseline: ...}]`")
    if a.baseline is not None:
        known(a.baseline, "analysis.baseline")
    models = [m.name for m in p.models]
    for name, size in (a.model_sizes or {}).items():
        key = f"analysis.model_sizes.{name}"
        if name not in models:
            conv.fail(key, f"{name!r} is not a model of this protocol.{did_you_mean(str(name), models)}",
                      f"use one of {', '.join(models)}")
        if not size > 0:
            conv.fail(key, f"must be a positive parameter count, got {size!r}", "write e.g. `110000000` or `1.1e8`")
    for i, c in enumerate(a.comparisons):
        known(c.treatment, f"analysis.comparisons[{i}].treatment")
        known(c.baseline, f"analysis.comparisons[{i}].baseline")
        if c.treatment == c.baseline:
            conv.fail(f"analysis.comparisons[{i}]", "treatment and baseline are the same masker")


def _check_sequential(conv: _Converter, p: Protocol) -> None:
    sq = p.sequential
    if sq is None:
        return
    looks = sq.looks
    if not looks:
        conv.fail("sequential.looks", "is empty", "list the seed counts to decide at, e.g. [3, 5, 8, 12]")
    if looks[0] < 2:
        conv.fail("sequential.looks[0]", f"must be at least 2 seeds (a paired t-test needs 2), got {looks[0]}",
                  "start the looks at 2 or more, e.g. [3, 5, 8, 12]")
    for i in range(1, len(looks)):
        if looks[i] <= looks[i - 1]:
            conv.fail(f"sequential.looks[{i}]", f"looks must be strictly increasing, got {list(looks)}",
                      "list increasing seed counts, e.g. [3, 5, 8, 12]")
    if looks[-1] > len(p.seeds):
        conv.fail(f"sequential.looks[{len(looks) - 1}]",
                  f"the last look needs {looks[-1]} seeds but the protocol has {len(p.seeds)}",
                  f"add seeds (seeds.count: {looks[-1]}) or lower the last look")
    if not p.comparisons():
        conv.fail("sequential", "nothing is compared, so there is nothing to decide look by look",
                  "set analysis.baseline or analysis.comparisons, or remove the sequential block")
