"""Classification task types: one label per text (``sequence-classification``) or per word
(``token-classification``).

Both load an ``AutoModelFor...Classification`` (or the mean-pooled head, :mod:`study.pooling`)
whose head is initialised from the run's ``init`` stream, train with (optionally class-weighted
or focal) cross-entropy, predict the argmax and store one row per scored example —
``[example_id, label, prediction, probability of the prediction]``. Token classification labels
the first subword of each word and scores labelled positions only (:mod:`study.tokens`).

"Collapsed" (:mod:`analysis.collapse`) means predicting one class for every example, or an
accuracy within noise of the majority class; the pilot reads a run against the majority-class
and chance levels (:func:`analysis.pilot.reference_levels`).
"""

from __future__ import annotations

import numpy as np

from analysis.metrics import IGNORE_INDEX, METRICS, compute_metrics
from study.tasktypes import Evaluation, TaskType

CLASSIFICATION_METRICS = tuple(sorted(METRICS))


def encode(tokenizer, examples, max_length: int) -> list[dict]:
    """Tokenise once per run; returns one dict of plain lists per example (no padding yet).
    Token-classification examples (with ``words``) go to :func:`study.tokens.encode_words`."""
    from study.tokens import encode_words

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
                words = whitespace_word_ids(enc["offset_mapping"][i], seqs, (ex.text_a, ex.text_b or ""))
            item["_word_ids"] = [-1 if w is None else w for w in words]
            item["_sequence_ids"] = [-1 if s is None else s for s in seqs]
        item["label"] = ex.label
        out.append(item)
    return out


def whitespace_word_ids(offsets, sequence_ids, texts) -> list[int | None]:
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


# Padding of the keys a batch may carry (model inputs, and the private keys maskers read).
PAD_VALUES = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0, "_word_ids": -1, "_sequence_ids": -1}


def pad_rows(items: list[dict], key: str, value: int):
    import torch

    width = max(len(it[key]) for it in items)
    return torch.tensor([it[key] + [value] * (width - len(it[key])) for it in items], dtype=torch.long)


def to_device(batch: dict, device) -> dict:
    import torch

    if torch.device(device).type == "cuda":
        # Pinned host memory lets the copy run asynchronously: the host builds the next batch meanwhile.
        return {k: v.pin_memory().to(device, non_blocking=True) if torch.is_tensor(v) else v
                for k, v in batch.items()}
    return batch


def collate(items: list[dict], pad_id: int, device) -> dict:
    """Pad to the longest sequence of the batch (dynamic padding), right side."""
    import torch

    batch = {key: pad_rows(items, key, pad_id if value is None else value)
             for key, value in PAD_VALUES.items() if key in items[0]}
    if isinstance(items[0]["label"], list):  # token classification: one label per position
        batch["labels"] = pad_rows(items, "label", IGNORE_INDEX)
    else:
        batch["labels"] = torch.tensor([it["label"] for it in items], dtype=torch.long)
    if "_word_ids" in items[0]:
        # The largest word and sequence ids, from the host lists: whole-word masking sizes its draws
        # with them without reading the device.
        batch["_word_bounds"] = (max(max(it["_word_ids"], default=-1) for it in items),
                                 max(max(it["_sequence_ids"], default=-1) for it in items))
    return to_device(batch, device)


def model_inputs(batch: dict) -> dict:
    """What the model is given: every key but the labels and the private ``_`` keys maskers read."""
    return {k: v for k, v in batch.items() if not k.startswith("_") and k != "labels"}


def class_weights(labels: list[int], num_labels: int, kind: str | None):
    """Token Masking paper's weights w_c = sqrt(N / (C · n_c)), normalised to sum to C."""
    import torch

    if kind is None:
        return None
    counts = np.bincount(np.asarray(labels), minlength=num_labels).astype(float)
    w = np.sqrt(len(labels) / (num_labels * np.maximum(counts, 1.0)))
    w = w * num_labels / w.sum()
    return torch.tensor(w, dtype=torch.float32)


def training_loss(logits, labels, weights, kind: str):
    import torch
    import torch.nn.functional as F

    if logits.dim() == 3:  # token classification: the loss over labelled positions only
        keep = labels.reshape(-1) != IGNORE_INDEX
        logits, labels = logits.reshape(-1, logits.shape[-1])[keep], labels.reshape(-1)[keep]
    if kind == "focal":
        # The Token Masking code's focal-style loss on the (weighted) per-example cross-entropy.
        ce = F.cross_entropy(logits, labels, weight=weights, reduction="none")
        return torch.mean((1 - torch.exp(-ce)) * ce)
    return F.cross_entropy(logits, labels, weight=weights)


def predict(model, items: list[dict], pad_id: int, batch_size: int, device) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and the probability of the predicted class, in the eval set's order (token
    classification: of every labelled position, sentence by sentence, as ``scored_words``)."""
    import torch

    model.eval()
    preds, scores = [], []
    with torch.no_grad():
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


class Classification(TaskType):
    """What both classification types share; they differ in the model class, and in what counts as
    one scored example (a text, or a labelled word)."""

    metrics = CLASSIFICATION_METRICS
    default_metric = "macro_f1"
    file_formats = ("csv", "tsv", "jsonl", "json", "parquet")
    file_hint = "give one label per text (csv, tsv, jsonl, json, parquet)"
    model_class = "AutoModelForSequenceClassification"
    collapse = "classes"

    def check_task(self, task, training):
        from study.tasktypes import generation_metric_names

        if task.metric in generation_metric_names():
            return ("metric", f"{task.metric!r} scores generated text, but this is a {self.name} task",
                    f"use one of {', '.join(self.metrics)}, or set `task_type: seq2seq`")
        return super().check_task(task, training)

    def load_model(self, model_cfg: dict, task, init_seed: int):
        from study import models

        return models.load_model(model_cfg, task.num_labels, init_seed, self.name)

    def encode(self, loaded, examples, max_length: int) -> list[dict]:
        return encode(loaded.tokenizer, examples, max_length)

    def collate(self, items, pad_id, device) -> dict:
        return collate(items, pad_id, device)

    def loss(self, model, batch, weights, kind):
        logits = model(**model_inputs(batch)).logits
        return training_loss(logits.float(), batch["labels"], weights, kind)

    def class_labels(self, task, train_items):
        return [e.label for e in task.train]

    def truncation(self, tokenizer, examples, max_length):
        from study.truncation import truncation

        return truncation(tokenizer, examples, encode(tokenizer, examples, max_length), max_length)

    def references(self, examples, items) -> tuple[list[str], np.ndarray]:
        """The scored examples' ids and labels, in evaluation order."""
        return [e.id for e in examples], np.array([e.label for e in examples])

    def evaluate(self, model, items, examples, task, loaded, batch_size, device, generation=None) -> Evaluation:
        ids, labels = self.references(examples, items)
        preds, scores = predict(model, items, loaded.tokenizer.pad_token_id, batch_size, device)
        metrics = compute_metrics(labels, preds, task.primary_metric, task.num_labels, task.extra_metrics)
        rows = [[i, int(y), int(p), float(s)] for i, y, p, s in zip(ids, labels, preds, scores, strict=True)]
        return Evaluation(metrics=metrics, predictions=rows)


class SequenceClassification(Classification):
    name = "sequence-classification"
    description = "one label per text (or sentence pair)"
    uses_pooling = True


class TokenClassification(Classification):
    name = "token-classification"
    description = "one label per word"
    default_metric = "weighted_f1"
    recorded_metrics = ("weighted_f1", "macro_f1")
    file_formats = ("conll", "jsonl", "json", "parquet")
    file_rows = "words-tags"
    file_hint = ("use .conll files (`token<TAB>tag` lines), or .jsonl/.json/.parquet rows with a list of words "
                 "(text_fields) and a list of tags (label_field)")
    model_class = "AutoModelForTokenClassification"
    uses_pooling = False  # every position is labelled: nothing is pooled

    def class_labels(self, task, train_items):
        # The labelled positions (first subwords within max_length), as the reference counts them.
        return [y for it in train_items for y in it["label"] if y != IGNORE_INDEX]

    def references(self, examples, items):
        from study.tokens import scored_words

        return scored_words(examples, items)
