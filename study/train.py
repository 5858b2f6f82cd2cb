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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from analysis.metrics import IGNORE_INDEX, compute_metrics
from study import checkpoint
from study.checkpoint import CheckpointPolicy
from study.device import PINNED_ATTENTION_KERNELS, attention_kernels, pick_device
from study.env import capture_env
from study.maskers.base import MaskerContext
from study.models import load_model
from study.plugins import load_plugins_of
from study.precision import Precision, configure_tf32
from study.protocol import TaskConfig
from study.registry import masker_class
from study.results import RunResult
from study.seeding import configure_determinism, fingerprint, seed_everything, seed_streams
from study.spec import RunSpec
from study.tasks import load_task
from study.tokens import encode_words, scored_words
from study.truncation import truncation

# Keys a batch carries for maskers but the model must not see (e.g. word ids for whole-word).
PRIVATE_PREFIX = "_"


def encode(tokenizer, examples, max_length: int) -> list[dict]:
    """Tokenise once per run; returns one dict of plain lists per example (no padding yet).
    Token-classification examples (with ``words``) go to :func:`study.tokens.encode_words`."""
    if not examples:
        return []  # no validation split: some tokenizers fail on an empty batch
    if examples[0].words is not None:
        return encode_words(tokenizer, examples, max_length)
    pairs = examples[0].text_b is not None
    a = [e.text_a for e in examples]
    b = [e.text_b or "" for e in examples] if pairs else None
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(a, b, truncation=True, max_length=max_length, return_offsets_mapping=fast)
    out = []
    for i, ex in enumerate(examples):
        item = {k: enc[k][i] for k in enc.keys() if k != "offset_mapping"}
        if fast:
            # (sequence id, word id) identifies a word; -1 marks specials. Whole-word masking keys on it.
            seqs = enc.sequence_ids(i)
            words = enc.word_ids(i)
            real = [w for w in words if w is not None]
            if len(real) > 1 and len(set(real)) == 1:
                # Some SentencePiece tokenizers (transformers' LlamaTokenizer) report a whole text as
                # one word; fall back to whitespace-delimited words read from the character offsets.
                words = _whitespace_word_ids(enc["offset_mapping"][i], seqs, (ex.text_a, ex.text_b or ""))
            item["_word_ids"] = [-1 if w is None else w for w in words]
            item["_sequence_ids"] = [-1 if s is None else s for s in seqs]
        item["label"] = ex.label
        out.append(item)
    return out


def _whitespace_word_ids(offsets, sequence_ids, texts) -> list[int | None]:
    """Word ids where a new word starts after a character gap or at a whitespace character."""
    out: list[int | None] = []
    word, prev_end, prev_seq = -1, None, None
    for (start, end), seq in zip(offsets, sequence_ids, strict=True):
        if seq is None:
            out.append(None)
            continue
        text = texts[seq]
        if seq != prev_seq or prev_end is None or start > prev_end or (start < len(text) and text[start].isspace()):
            word += 1
        out.append(word)
        prev_end, prev_seq = end, seq
    return out


def collate(items: list[dict], pad_id: int, device: torch.device) -> dict:
    """Pad to the longest sequence of the batch (dynamic padding), right side."""
    width = max(len(it["input_ids"]) for it in items)
    fill = {"input_ids": pad_id, "attention_mask": 0, "token_type_ids": 0, "_word_ids": -1, "_sequence_ids": -1}
    batch = {}
    for key, value in fill.items():
        if key in items[0]:
            rows = [it[key] + [value] * (width - len(it[key])) for it in items]
            batch[key] = torch.tensor(rows, dtype=torch.long)
    if isinstance(items[0]["label"], list):  # token classification: one label per position
        batch["labels"] = torch.tensor([it["label"] + [IGNORE_INDEX] * (width - len(it["label"])) for it in items],
                                       dtype=torch.long)
    else:
        batch["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
    if "_word_ids" in items[0]:
        # The largest word and sequence ids, from the host lists: whole-word masking sizes its draws
        # with them without reading the device.
        batch["_word_bounds"] = (max(max(it["_word_ids"], default=-1) for it in items),
                                 max(max(it["_sequence_ids"], default=-1) for it in items))
    if torch.device(device).type == "cuda":
        # Pinned host memory lets the copy run asynchronously: the host builds the next batch meanwhile.
        return {k: v.pin_memory().to(device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in batch.items()}
    return batch


def model_inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith(PRIVATE_PREFIX) and k != "labels"}


def class_weights(labels: list[int], num_labels: int, kind: str | None) -> torch.Tensor | None:
    """Token Masking paper's weights w_c = sqrt(N / (C · n_c)), normalised to sum to C."""
    if kind is None:
        return None
    counts = np.bincount(np.asarray(labels), minlength=num_labels).astype(float)
    w = np.sqrt(len(labels) / (num_labels * np.maximum(counts, 1.0)))
    w = w * num_labels / w.sum()
    return torch.tensor(w, dtype=torch.float32)


def training_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None, kind: str) -> torch.Tensor:
    if logits.dim() == 3:  # token classification: the loss over labelled positions only
        keep = labels.reshape(-1) != IGNORE_INDEX
        logits, labels = logits.reshape(-1, logits.shape[-1])[keep], labels.reshape(-1)[keep]
    if kind == "focal":
        # The Token Masking code's focal-style loss on the (weighted) per-example cross-entropy.
        ce = F.cross_entropy(logits, labels, weight=weights, reduction="none")
        return torch.mean((1 - torch.exp(-ce)) * ce)
    return F.cross_entropy(logits, labels, weight=weights)


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


@torch.no_grad()
def evaluate(model, items: list[dict], pad_id: int, batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and the probability of the predicted class, in the eval set's order (token
    classification: of every labelled position, sentence by sentence, as :func:`scored_words`)."""
    model.eval()
    preds, scores = [], []
    for start in range(0, len(items), batch_size):
        batch = collate(items[start:start + batch_size], pad_id, device)
        probs = torch.softmax(model(**model_inputs(batch)).logits.float(), dim=-1)
        score, pred = probs.max(dim=-1)
        if pred.dim() == 2:
            labelled = batch["labels"] != IGNORE_INDEX
            pred, score = pred[labelled], score[labelled]  # row-major: sentence by sentence, left to right
        preds.append(pred.cpu().numpy())
        scores.append(score.cpu().numpy())
    return np.concatenate(preds), np.concatenate(scores)


def run_one(spec: RunSpec, on_step=None, *, max_steps: int | None = None,
            checkpoint_dir: str | Path | None = None) -> RunResult:
    """Train and evaluate one cell of the grid. ``on_step(step, total)`` reports progress.

    ``max_steps``: stop after that many optimizer steps, evaluate once and return (a partial
    run, for estimates and tests). ``checkpoint_dir``: where mid-run checkpoints go when
    ``execution.checkpoint_every_*`` asks for them; a checkpoint of this run found there is
    resumed from (``RunResult.resumed_from_step``)."""
    t_start = time.perf_counter()
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
    loaded = load_model(spec.model, task.num_labels, streams.init, task.task_type)
    model, tokenizer = loaded.model.to(device), loaded.tokenizer
    pad_id = tokenizer.pad_token_id
    train_items = encode(tokenizer, task.train, training["max_length"])
    eval_items = encode(tokenizer, task.eval, training["max_length"])
    val_items = encode(tokenizer, task.validation, training["max_length"])

    bs, epochs = training["batch_size"], training["epochs"]
    order_rng = np.random.default_rng(streams.data_order)
    orders = [order_rng.permutation(len(train_items)) for _ in range(epochs)]
    steps_per_epoch = math.ceil(len(train_items) / bs)
    total_steps = steps_per_epoch * epochs
    stop_at = total_steps if max_steps is None else min(total_steps, max_steps)

    cls = masker_class(spec.masker["kind"])
    params = cls.Params(**{k: v for k, v in spec.masker.items() if k not in ("name", "kind")})
    generator = torch.Generator(device=device).manual_seed(streams.masker)
    context = MaskerContext(
        replacement_id=loaded.replacement_id, replacement=loaded.replacement, pad_token_id=pad_id,
        special_ids=torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long),
        num_layers=loaded.num_layers, num_heads=loaded.num_heads, is_decoder=loaded.is_decoder, device=device)
    masker = cls(params, generator, context)
    optimizer, scheduler = build_optimizer(model, training, total_steps, device)
    # Token tasks count the labelled positions (first subwords within max_length), as the reference does.
    train_labels = [y for it in train_items for y in it["label"] if y != IGNORE_INDEX] \
        if task.task_type == "token-classification" else [e.label for e in task.train]
    weights = class_weights(train_labels, task.num_labels, training.get("class_weights"))
    weights = weights.to(device) if weights is not None else None
    loss_kind = training.get("loss", "ce")

    masker.setup(model, tokenizer, train_items, total_steps)
    seed_everything(streams.dropout)  # from here on, global RNG draws are dropout: same for every masker
    # Where training stands; a checkpoint saves it and resuming restores it.
    # "best": the selected epoch's eval predictions (select: best), so a resumed run still has them.
    pos = {"epoch": 0, "batch": 0, "step": 0, "epoch_records": [], "t_train": 0.0, "checkpoint_s": 0.0,
           "best": None}
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # read once per epoch: no sync per step
    resumed = checkpoint.load(checkpoint.checkpoint_path(policy.folder, spec.run_id), spec.run_id) \
        if policy.folder else None
    if resumed:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        precision.load_state_dict(resumed["scaler"])
        masker.load_state_dict(resumed["masker"])
        checkpoint.set_rng_state(resumed["rng"])
        pos = dict(resumed["position"])
        loss_sum.fill_(resumed["loss_sum"])
    masker.attach(model)
    step = pos["step"]
    if task.task_type == "token-classification":
        eval_ids, labels = scored_words(task.eval, eval_items)
        val_labels = scored_words(task.validation, val_items)[1]
    else:
        eval_ids, labels = [e.id for e in task.eval], np.array([e.label for e in task.eval])
        val_labels = np.array([e.label for e in task.validation])
    select_best = training.get("select", "last") == "best"
    patience = training.get("early_stopping_patience")
    last_checkpoint = time.monotonic()
    eval_bs = training.get("eval_batch_size", 128)

    def save_checkpoint() -> None:
        pos.update(step=step, t_train=pos["t_train"] + time.perf_counter() - t0)
        state = {"run_id": spec.run_id, "position": pos, "loss_sum": float(loss_sum), "rng": checkpoint.rng_state(),
                 "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "scaler": precision.state_dict(), "masker": masker.state_dict()}
        pos["checkpoint_s"] += checkpoint.save(checkpoint.checkpoint_path(policy.folder, spec.run_id), state)

    kernels = attention_kernels(device)  # one attention kernel for every masker (study.device)
    kernels.__enter__()
    try:
        for epoch in range(pos["epoch"], epochs):
            model.train()
            t0 = time.perf_counter()
            stopped = False
            while pos["batch"] < steps_per_epoch:
                start = pos["batch"] * bs
                batch = collate([train_items[i] for i in orders[epoch][start:start + bs]], pad_id, device)
                batch = masker.apply(batch, step)
                with precision.autocast():
                    logits = model(**model_inputs(batch)).logits
                    loss = training_loss(logits.float(), batch["labels"], weights, loss_kind)
                precision.backward(loss)
                if precision.scaler:
                    masker.loss_scale = precision.loss_scale
                masker.after_backward(step)
                if training.get("max_grad_norm"):
                    precision.unscale(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), training["max_grad_norm"])
                precision.step(optimizer)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                loss_sum += loss.detach()
                step += 1
                pos["batch"] += 1
                if on_step:
                    on_step(step, stop_at)
                if policy.due(step, time.monotonic() - last_checkpoint):
                    save_checkpoint()
                    t0, last_checkpoint = time.perf_counter(), time.monotonic()
                if step >= stop_at and stop_at < total_steps:
                    stopped = True
                    break
            pos["t_train"] += time.perf_counter() - t0
            with precision.autocast():
                preds, scores = evaluate(model, eval_items, pad_id, eval_bs, device)
            metrics = compute_metrics(labels, preds, task.primary_metric, task.num_labels, task.extra_metrics)
            # A stopped epoch's loss is the mean over the batches it ran.
            per = pos["batch"] if stopped else steps_per_epoch
            record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / per, "metrics": metrics}
            if val_items:
                with precision.autocast():
                    val_preds, _ = evaluate(model, val_items, pad_id, eval_bs, device)
                record["validation_metrics"] = compute_metrics(val_labels, val_preds, task.primary_metric,
                                                               task.num_labels, task.extra_metrics)
            pos["epoch_records"].append(record)
            loss_sum.zero_()
            pos.update(epoch=epoch + 1, batch=0)
            if select_best:
                value = record["validation_metrics"][task.primary_metric]
                # Strictly better only: on a tie the earlier epoch stays selected.
                if pos["best"] is None or value > pos["best"]["value"]:
                    pos["best"] = {"epoch": epoch + 1, "value": value, "preds": preds.tolist(), "scores": scores.tolist()}
                elif patience and epoch + 1 - pos["best"]["epoch"] >= patience:
                    break  # early stopping: `patience` epochs without a new best
            if stopped:
                break
    finally:
        masker.detach()
        kernels.__exit__(None, None, None)

    env = capture_env(device)
    env.update(determinism=determinism, precision=precision.name, tf32=tf32, labels=list(task.label_names),
               truncation={"train": truncation(tokenizer, task.train, train_items, training["max_length"]),
                           "eval": truncation(tokenizer, task.eval, eval_items, training["max_length"])})
    if device.type == "cuda":
        env["attention_kernels"] = list(PINNED_ATTENTION_KERNELS)
    t_train = pos["t_train"]
    selected = pos["epoch_records"][-1]["epoch"]
    if select_best:
        selected, preds, scores = pos["best"]["epoch"], pos["best"]["preds"], pos["best"]["scores"]
    return RunResult(
        run_id=spec.run_id,
        primary_metric=task.primary_metric,
        final_metrics=pos["epoch_records"][selected - 1]["metrics"],
        epochs=pos["epoch_records"],
        predictions=[[i, int(y), int(p), float(s)] for i, y, p, s in zip(eval_ids, labels, preds, scores, strict=True)],
        wall_time_s=time.perf_counter() - t_start,
        train_time_s=t_train,
        train_examples_per_s=min(step * bs, len(train_items) * epochs) / max(t_train, 1e-9),
        realised_mask_rate=masker.realised_rate,
        fingerprints={
            "data": task.fingerprint,
            "data_order": fingerprint(task.fingerprint, *orders),
            "head_init": loaded.head_fingerprint,
        },
        masker_stats=masker.stats(),
        masker_state=masker.state(),
        env=env,
        resumed_from_step=resumed["position"]["step"] if resumed else None,
        checkpoint_time_s=pos["checkpoint_s"],
        selected_epoch=selected if select_best else None,
    )
