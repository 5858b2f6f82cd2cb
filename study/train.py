"""One run: fine-tune a backbone on a task with a masker, evaluate every epoch, return a RunResult.

One explicit loop (AdamW, linear warm-up and decay, dynamic padding) — no trainer framework —
so that what a masker changes is visible. Random streams (DESIGN.md §3): the head is
initialised from the ``init`` stream, batches follow the ``data_order`` stream, dropout draws
come from the global torch RNG seeded with the ``dropout`` stream right before training, and
the masker owns a generator seeded with the ``masker`` stream. Evaluation never masks.

The hot loop does not wait for the device: the loss is summed on it and read once per epoch,
masking counts stay on it (``Masker.record_tensors``), and on CUDA batches are copied from
pinned memory without blocking. ``training.precision`` (``study.precision``) wraps forward and
loss in autocast; ``execution.checkpoint_every_*`` writes mid-run checkpoints
(``study.checkpoint``) from which a killed run resumes bit-identically.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from study import checkpoint
from study.checkpoint import CheckpointPolicy
from study.device import PINNED_ATTENTION_KERNELS, attention_kernels, pick_device
from study.env import capture_env
from study.maskers.base import MaskerContext
from study.plugins import load_plugins_of
from study.precision import Precision, configure_tf32
from study.protocol import TaskConfig
from study.registry import masker_class
from study.results import RunResult
from study.seeding import configure_determinism, fingerprint, seed_everything, seed_streams
from study.spec import RunSpec
from study.tasks import load_task
from study.tasktypes import Evaluation, TaskType, get_task_type


def build_optimizer(model, training: dict, total_steps: int, device: torch.device | None = None):
    from transformers import get_linear_schedule_with_warmup

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
         "weight_decay": training["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    # The fused kernel: always on CUDA; on the CPU only when asked (it changes fp32 results in the last bits).
    on_cuda = device is not None and device.type == "cuda"
    fused = True if on_cuda or training.get("optimizer") == "adamw-fused" else None
    optimizer = torch.optim.AdamW(groups, lr=training["learning_rate"], fused=fused)
    warmup = int(math.ceil(training["warmup_ratio"] * total_steps))
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def make_masker(masker_cfg: dict, loaded, device: torch.device, seed: int):
    """The run's masker, with its own generator seeded from the ``masker`` stream."""
    cls = masker_class(masker_cfg["kind"])
    params = cls.Params(**{k: v for k, v in masker_cfg.items() if k not in ("name", "kind")})
    generator = torch.Generator(device=device).manual_seed(seed)
    tokenizer = loaded.tokenizer
    context = MaskerContext(
        replacement_id=loaded.replacement_id, replacement=loaded.replacement, pad_token_id=tokenizer.pad_token_id,
        special_ids=torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long),
        num_layers=loaded.num_layers, num_heads=loaded.num_heads, is_decoder=loaded.is_decoder, device=device)
    return cls(params, generator, context)


@dataclass
class Run:
    """Everything one run holds while it trains (built by :func:`set_up`)."""

    spec: RunSpec
    task_type: TaskType
    task: object  # TaskData
    loaded: object  # LoadedModel
    device: torch.device
    precision: Precision
    policy: CheckpointPolicy
    train_items: list
    eval_items: list
    val_items: list
    orders: list  # one permutation of the training items per epoch
    steps_per_epoch: int
    total_steps: int
    stop_at: int
    masker: object
    optimizer: object
    scheduler: object
    weights: torch.Tensor | None
    determinism: dict | str | bool
    tf32: bool

    @property
    def model(self):
        return self.loaded.model

    @property
    def training(self) -> dict:
        return self.spec.training


def set_up(spec: RunSpec, max_steps: int | None = None, checkpoint_dir: str | Path | None = None) -> Run:
    """Data, model, masker and optimizer of one run, each from its own seed stream, in a fixed order."""
    load_plugins_of(spec)  # before anything reads spec.run_id: a plugin kind's Params are needed for it
    training = spec.training
    if spec.execution.get("threads_per_run"):
        torch.set_num_threads(int(spec.execution["threads_per_run"]))
    determinism = configure_determinism(bool(spec.execution.get("deterministic")))
    streams = seed_streams(spec.seed)
    device = pick_device(spec.execution)
    tf32 = configure_tf32(bool(spec.execution.get("tf32", True)), device)
    precision = Precision(training.get("precision", "fp32"), device)
    policy = CheckpointPolicy.for_run(spec.execution, checkpoint_dir)

    task = load_task(TaskConfig(**spec.task))
    task_type = get_task_type(task.task_type)
    loaded = task_type.load_model(spec.model, task, streams.init)
    loaded.model = loaded.model.to(device)
    tokenizer, max_length = loaded.tokenizer, training["max_length"]
    train_items = task_type.encode(loaded, task.train, max_length)
    eval_items = task_type.encode(loaded, task.eval, max_length)
    val_items = task_type.encode(loaded, task.validation, max_length)

    bs, epochs = training["batch_size"], training["epochs"]
    order_rng = np.random.default_rng(streams.data_order)
    orders = [order_rng.permutation(len(train_items)) for _ in range(epochs)]
    steps_per_epoch = math.ceil(len(train_items) / bs)
    total_steps = steps_per_epoch * epochs
    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)

    masker = make_masker(spec.masker, loaded, device, streams.masker)
    optimizer, scheduler = build_optimizer(loaded.model, training, total_steps, device)
    weights = None
    if training.get("class_weights"):
        from study.tasktypes.classification import class_weights

        weights = class_weights(task_type.class_labels(task, train_items), task.num_labels,
                                training["class_weights"]).to(device)
    masker.setup(loaded.model, tokenizer, train_items, total_steps)
    seed_everything(streams.dropout)  # from here on, global RNG draws are dropout: same for every masker
    return Run(spec=spec, task_type=task_type, task=task, loaded=loaded, device=device, precision=precision,
               policy=policy, train_items=train_items, eval_items=eval_items, val_items=val_items, orders=orders,
               steps_per_epoch=steps_per_epoch, total_steps=total_steps, stop_at=stop_at, masker=masker,
               optimizer=optimizer, scheduler=scheduler, weights=weights, determinism=determinism, tf32=tf32)


def train_step(run: Run, batch: dict, step: int) -> torch.Tensor:
    """One optimizer step on one collated batch: mask, forward and loss (under the run's precision),
    backward, clip, step. Returns the loss (on the device: reading it would wait for the device)."""
    precision, masker, optimizer = run.precision, run.masker, run.optimizer
    batch = masker.apply(batch, step)
    with precision.autocast():
        loss = run.task_type.loss(run.model, batch, run.weights, run.training.get("loss", "ce"))
    precision.backward(loss)
    if precision.scaler:
        masker.loss_scale = precision.loss_scale
    masker.after_backward(step)
    if run.training.get("max_grad_norm"):
        precision.unscale(optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.training["max_grad_norm"])
    precision.step(optimizer)
    run.scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss


def evaluate(run: Run, items: list, examples) -> Evaluation:
    """The task type's evaluation of one split (never masked: hooks do nothing in eval mode)."""
    with run.precision.autocast():
        return run.task_type.evaluate(run.model, items, examples, run.task, run.loaded,
                                      run.training.get("eval_batch_size", 128), run.device,
                                      run.spec.task.get("generation"))


def _resume(run: Run, loss_sum: torch.Tensor) -> tuple[dict, dict | None]:
    """Where training stands — a fresh start, or the state of this run's mid-run checkpoint — and
    the checkpoint (None when starting afresh). ``pos["best"]``: the selected epoch's evaluation
    (``select: best``), kept in the checkpoint so a resumed run still has it."""
    pos = {"epoch": 0, "batch": 0, "step": 0, "epoch_records": [], "t_train": 0.0, "checkpoint_s": 0.0, "best": None}
    resumed = checkpoint.load(checkpoint.checkpoint_path(run.policy.folder, run.spec.run_id), run.spec.run_id) \
        if run.policy.folder else None
    if resumed:
        run.model.load_state_dict(resumed["model"])
        run.optimizer.load_state_dict(resumed["optimizer"])
        run.scheduler.load_state_dict(resumed["scheduler"])
        run.precision.load_state_dict(resumed["scaler"])
        run.masker.load_state_dict(resumed["masker"])
        checkpoint.set_rng_state(resumed["rng"])
        pos = dict(resumed["position"])
        loss_sum.fill_(resumed["loss_sum"])
    return pos, resumed


def _select(run: Run, pos: dict, record: dict, evaluation: Evaluation, epoch: int) -> bool:
    """``select: best`` bookkeeping after an epoch; True when early stopping ends training."""
    if run.training.get("select", "last") != "best":
        return False
    value = record["validation_metrics"][run.task.primary_metric]
    # Strictly better only: on a tie the earlier epoch stays selected.
    if pos["best"] is None or value > pos["best"]["value"]:
        pos["best"] = {"epoch": epoch + 1, "value": value, "predictions": evaluation.predictions,
                       "generations": evaluation.generations}
        return False
    patience = run.training.get("early_stopping_patience")
    return bool(patience and epoch + 1 - pos["best"]["epoch"] >= patience)  # `patience` epochs without a new best


def run_one(spec: RunSpec, on_step=None, *, max_steps: int | None = None,
            checkpoint_dir: str | Path | None = None) -> RunResult:
    """Train and evaluate one cell of the grid. ``on_step(step, total)`` reports progress.

    ``max_steps``: stop after that many optimizer steps, evaluate once and return (a partial
    run, for estimates and tests). ``checkpoint_dir``: where mid-run checkpoints go when
    ``execution.checkpoint_every_*`` asks for them; a checkpoint of this run found there is
    resumed from (``RunResult.resumed_from_step``)."""
    t_start = time.perf_counter()
    run = set_up(spec, max_steps, checkpoint_dir)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)  # read once per epoch: no sync per step
    pos, resumed = _resume(run, loss_sum)
    run.masker.attach(run.model)
    step = pos["step"]
    bs, epochs, pad_id = run.training["batch_size"], run.training["epochs"], run.loaded.tokenizer.pad_token_id
    last_checkpoint = time.monotonic()
    evaluation = None

    def save_checkpoint() -> None:
        pos.update(step=step, t_train=pos["t_train"] + time.perf_counter() - t0)
        state = {"run_id": spec.run_id, "position": pos, "loss_sum": float(loss_sum), "rng": checkpoint.rng_state(),
                 "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                 "scheduler": run.scheduler.state_dict(), "scaler": run.precision.state_dict(),
                 "masker": run.masker.state_dict()}
        pos["checkpoint_s"] += checkpoint.save(checkpoint.checkpoint_path(run.policy.folder, spec.run_id), state)

    kernels = attention_kernels(run.device)  # one attention kernel for every masker (study.device)
    kernels.__enter__()
    try:
        for epoch in range(pos["epoch"], epochs):
            run.model.train()
            t0 = time.perf_counter()
            stopped = False
            while pos["batch"] < run.steps_per_epoch:
                start = pos["batch"] * bs
                batch = run.task_type.collate([run.train_items[i] for i in run.orders[epoch][start:start + bs]],
                                              pad_id, run.device)
                loss_sum += train_step(run, batch, step).detach()
                step += 1
                pos["batch"] += 1
                if on_step:
                    on_step(step, run.stop_at)
                if run.policy.due(step, time.monotonic() - last_checkpoint):
                    save_checkpoint()
                    t0, last_checkpoint = time.perf_counter(), time.monotonic()
                if step >= run.stop_at and run.stop_at < run.total_steps:
                    stopped = True
                    break
            pos["t_train"] += time.perf_counter() - t0
            # eval_epochs: last evaluates the eval split once, after the last epoch (or a stopped one)
            scored = stopped or epoch + 1 == epochs or run.training.get("eval_epochs", "all") == "all"
            if scored:
                evaluation = evaluate(run, run.eval_items, run.task.eval)
            # A stopped epoch's loss is the mean over the batches it ran.
            per = pos["batch"] if stopped else run.steps_per_epoch
            record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / per,
                      "metrics": evaluation.metrics if scored else {}}
            if run.val_items:
                record["validation_metrics"] = evaluate(run, run.val_items, run.task.validation).metrics
            pos["epoch_records"].append(record)
            loss_sum.zero_()
            pos.update(epoch=epoch + 1, batch=0)
            if _select(run, pos, record, evaluation, epoch) or stopped:
                break
    finally:
        run.masker.detach()
        kernels.__exit__(None, None, None)
    return _result(run, pos, evaluation, step, resumed, time.perf_counter() - t_start)


def _result(run: Run, pos: dict, last: Evaluation, step: int, resumed: dict | None, wall_s: float) -> RunResult:
    """The selected epoch's evaluation (the last, or the best on validation) as the run's result."""
    env = capture_env(run.device)
    max_length = run.training["max_length"]
    env.update(determinism=run.determinism, precision=run.precision.name, tf32=run.tf32,
               **run.task_type.run_env(run.task, run.loaded))
    cut = {"train": run.task_type.truncation(run.loaded.tokenizer, run.task.train, max_length),
           "eval": run.task_type.truncation(run.loaded.tokenizer, run.task.eval, max_length)}
    if cut["train"] is not None:
        env["truncation"] = cut
    if run.device.type == "cuda":
        env["attention_kernels"] = list(PINNED_ATTENTION_KERNELS)
    select_best = run.training.get("select", "last") == "best"
    selected, chosen = pos["epoch_records"][-1]["epoch"], last
    if select_best:
        best = pos["best"]
        selected = best["epoch"]
        chosen = Evaluation(metrics={}, predictions=best["predictions"], generations=best.get("generations", []))
    bs, t_train = run.training["batch_size"], pos["t_train"]
    return RunResult(
        run_id=run.spec.run_id,
        primary_metric=run.task.primary_metric,
        final_metrics=pos["epoch_records"][selected - 1]["metrics"],
        epochs=pos["epoch_records"],
        predictions=chosen.predictions,
        generations=chosen.generations,
        references=last.references if last else [],
        wall_time_s=wall_s,
        train_time_s=t_train,
        train_examples_per_s=min(step * bs, len(run.train_items) * run.training["epochs"]) / max(t_train, 1e-9),
        realised_mask_rate=run.masker.realised_rate,
        fingerprints={
            "data": run.task.fingerprint,
            "data_order": fingerprint(run.task.fingerprint, *run.orders),
            "head_init": run.loaded.head_fingerprint,
        },
        masker_stats=run.masker.stats(),
        masker_state=run.masker.state(),
        env=env,
        resumed_from_step=resumed["position"]["step"] if resumed else None,
        checkpoint_time_s=pos["checkpoint_s"],
        selected_epoch=selected if select_best else None,
    )
