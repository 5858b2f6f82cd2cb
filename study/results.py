"""RunResult: what a worker sends back to the driver (JSON over a pipe or a file)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field


@dataclass
class RunResult:
    run_id: str
    primary_metric: str
    final_metrics: dict  # metric name → value of the selected (by default the last) epoch's evaluation
    # [{"epoch": 1, "train_loss": ..., "metrics": {...}[, "validation_metrics": {...}]}, ...]
    epochs: list
    # [[example_id, label, prediction, score], ...] of the selected epoch's evaluation; token
    # classification: one row per scored word, example_id "<sentence id>:<word index>"
    predictions: list
    wall_time_s: float
    train_time_s: float
    train_examples_per_s: float
    realised_mask_rate: float | None
    fingerprints: dict  # {"data": ..., "data_order": ..., "head_init": ...}
    masker_stats: dict = field(default_factory=dict)
    masker_state: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    resumed_from_step: int | None = None  # the step of the mid-run checkpoint this attempt resumed from
    checkpoint_time_s: float = 0.0  # time spent writing mid-run checkpoints
    selected_epoch: int | None = None  # training.select: best — the epoch whose eval results these are
    # generation tasks: [[example_id, generated text, stats], ...] of the selected epoch's evaluation,
    # stats the primary metric's per-example sufficient statistics (analysis.textmetrics.example_stats)
    generations: list = field(default_factory=list)
    references: list = field(default_factory=list)  # generation tasks: [[example_id, ref_index, text], ...]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RunResult:
        return cls(**json.loads(text))
