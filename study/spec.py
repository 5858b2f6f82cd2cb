"""RunSpec: everything one run needs, and run_id: the hash of what changes its result.

run_id covers the task (dataset, sizes, data seed), the model (source, layers, replacement
token), the masker (kind and parameters), the seed and the training settings. It leaves out
display names, paths (``data_dir``, ``train_file``, ``eval_file``, ``validation_file``, the store,
plugin locations), the study name and execution hints, so renaming a masker or moving data
re-runs nothing, and changing one cell of a protocol changes only that cell's run_ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from study.protocol import Protocol

RUN_ID_VERSION = "maskstudy-run-v1"  # bump when training semantics change, to invalidate old results
_UNHASHED = {"name", "data_dir", "train_file", "eval_file", "validation_file"}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


@dataclass(frozen=True)
class RunSpec:
    study: str
    task: dict
    model: dict
    masker: dict  # {"name", "kind", **params}
    seed: int
    training: dict
    execution: dict  # hints (determinism, threads): recorded, not hashed
    plugins: list = dataclasses.field(default_factory=list)  # what the worker imports first: paths move, not hashed
    plugin_sha256: str | None = None  # source hash of the plugin defining the masker kind (hashed); None: built-in

    @property
    def run_id(self) -> str:
        return compute_run_id(self)

    def hashed_content(self) -> dict:
        from study.protocol import ModelConfig, TaskConfig, TrainingConfig
        from study.registry import masker_params

        params = {k: v for k, v in self.masker.items() if k not in ("name", "kind")}
        return {
            "version": RUN_ID_VERSION,
            "task": _without_defaults(self.task, TaskConfig),
            "model": _without_defaults(self.model, ModelConfig),
            "masker": {"kind": self.masker["kind"],
                       **_without_defaults(params, masker_params(self.masker["kind"])),
                       # only a plugin kind's runs carry its source hash: editing it re-runs just them
                       **({"plugin_sha256": self.plugin_sha256} if self.plugin_sha256 else {})},
            "seed": self.seed,
            "training": _without_defaults(self.training, TrainingConfig),
        }

    def to_json(self) -> str:
        return canonical_json(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls(**json.loads(text))

    @property
    def label(self) -> str:
        return f"{self.task['name']}/{self.model['name']}/{self.masker['name']}/seed{self.seed}"


def _without_defaults(values: dict, cls) -> dict:
    """Drop names, paths and fields left at their default.

    Adding a new option with a default then keeps every existing run_id (old results stay
    valid); changing what a default means is a semantic change: bump RUN_ID_VERSION.
    """
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {k: v for k, v in values.items()
            if k not in _UNHASHED and not (k in defaults and v == defaults[k])}


def compute_run_id(spec: RunSpec) -> str:
    return hashlib.sha256(canonical_json(spec.hashed_content()).encode()).hexdigest()[:16]


def model_for(task, model) -> dict:
    """The model as one run of ``task`` uses it (its task type's ``model_config``). Pooling only
    shapes a sequence task's head; a token task's run gets the default (cls), so one model list
    serves sentence and token tasks alike and a token run's run_id does not depend on a setting it
    never reads."""
    from study.tasktypes import get_task_type

    return get_task_type(task.task_type).model_config(dataclasses.asdict(model))


def expand(protocol: Protocol) -> list[RunSpec]:
    """The grid, seed-major: an interrupted study still holds complete seed × masker blocks to pair."""
    asdict = dataclasses.asdict
    training = asdict(protocol.training)
    ex = protocol.execution
    execution = {"deterministic": ex.deterministic, "threads_per_run": ex.threads_per_run, "tf32": ex.tf32,
                 "checkpoint_every_steps": ex.checkpoint_every_steps, "checkpoint_every_min": ex.checkpoint_every_min}
    plugin_sha = {kind: p.sha256 for p in protocol.plugins for kind in p.kinds}
    plugins = [p.ref for p in protocol.plugins]
    return [
        RunSpec(study=protocol.name, task=asdict(task), model=model_for(task, model), masker=masker.to_dict(),
                seed=seed, training=training, execution=execution, plugins=plugins,
                plugin_sha256=plugin_sha.get(masker.kind))
        for seed in protocol.seeds
        for task in protocol.tasks
        for model in protocol.models
        for masker in protocol.maskers
    ]
