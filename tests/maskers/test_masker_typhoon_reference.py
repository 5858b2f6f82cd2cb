"""Typhoon's ``reference: true``: the reference code's EMA start and calibration, by hand.

Reference: cs324-final-project-2023, cs324_project/masking.py, TyphoonMaskedLanguageModelTrainer
(``first_step_done`` flag; ``token_id_to_dataset_count`` over every token of the training set).
"""

from __future__ import annotations

import pytest
import torch
from maskertools import (
    batches,
    make_masker,
    sentences,
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_backbone,
    train_steps,
)

from study.maskers.typhoon import ema_update, ema_update_reference
from study.protocol import load_protocol
from study.spec import expand


def test_reference_ema_starts_from_zero_after_step_one():
    w = torch.zeros(4, dtype=torch.float64)
    seen = torch.zeros(4, dtype=torch.bool)
    new1 = torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    w, seen = ema_update_reference(w, seen, new1, torch.tensor([True, True, False, False]), 0.8, first_step=True)
    assert w.tolist() == [1.0, 2.0, 0.0, 0.0]  # step 1: w = new
    new2 = torch.tensor([9.0, 5.0, 3.0, 7.0], dtype=torch.float64)
    batch2 = torch.tensor([False, True, True, False])
    w_ref, seen_ref = ema_update_reference(w, seen, new2, batch2, 0.8, first_step=False)
    assert w_ref[0].item() == 1.0  # not in the batch: unchanged
    assert w_ref[1].item() == pytest.approx(0.2 * 2.0 + 0.8 * 5.0)  # 4.4
    assert w_ref[2].item() == pytest.approx(0.8 * 3.0)  # first seen at step 2: α·new = 2.4
    assert w_ref[3].item() == 0.0 and seen_ref.tolist() == [True, True, True, False]
    w_proj, _ = ema_update(w, seen, new2, batch2, 0.8)
    assert w_proj[2].item() == 3.0  # the project's default: w = new at the type's own first sighting


def _setup(reference: bool, rate: float = 0.15):
    model, tokenizer, context = tiny_backbone("bert", layers=1)
    items, batch_list = batches(tokenizer, sentences(24, seed=3), 8)
    masker = make_masker("typhoon", context, seed=0, rate=rate, reference=reference)
    masker.setup(model, tokenizer, items, len(batch_list))
    return model, tokenizer, items, batch_list, masker


def test_reference_calibrates_over_all_tokens_but_masks_only_eligible():
    _, tokenizer, items, _, masker = _setup(reference=True)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    all_ids = [t for it in items for t in it["input_ids"]]  # unpadded: every real token
    counts = {int(v): float(c) for v, c in zip(masker.support.tolist(), masker.counts.tolist(), strict=True)}
    assert counts[cls] == len(items) and counts[sep] == len(items)  # [CLS]/[SEP] counted
    assert sum(counts.values()) == len(all_ids)
    # Hand-set weights: two content types seen with w = 1 and 3; everything else unseen (ŝ = 1).
    a, b = [v for v in counts if v not in (cls, sep)][:2]
    masker.w[a], masker.w[b] = 1.0, 3.0
    masker.seen[a] = masker.seen[b] = True
    masker._calibrate(0.15)
    phi = {v: 1.0 for v in counts}
    phi[a] = 1 - 0.4 + 0.4 * 0.0  # ŝ = (1 − 1)/(3 − 1) = 0
    lam = 0.15 * len(all_ids) / sum(counts[v] * phi[v] for v in counts)  # the reference's closed form
    assert masker.lam == pytest.approx(lam, rel=1e-12)
    assert masker.q[a].item() == pytest.approx(lam * 0.6, rel=1e-6)
    assert masker.q[b].item() == pytest.approx(lam, rel=1e-6)
    # Expected rate on maskable tokens: below the budget, since [CLS]/[SEP] take a share but are never masked.
    eligible = {v: c for v, c in counts.items() if v not in (cls, sep)}
    expected = sum(c * lam * phi[v] for v, c in eligible.items()) / sum(eligible.values())
    assert expected == pytest.approx(0.15 * len(all_ids) / sum(eligible.values()) * (
        sum(c * phi[v] for v, c in eligible.items()) / sum(counts[v] * phi[v] for v in counts)), rel=1e-12)
    assert expected < 0.15


def test_default_calibrates_over_eligible_tokens_only():
    _, tokenizer, items, _, masker = _setup(reference=False)
    support = set(masker.support.tolist())
    assert tokenizer.cls_token_id not in support and tokenizer.sep_token_id not in support
    masker._calibrate(0.15)
    q = masker.q[masker.support].double()
    assert float((masker.counts * q).sum() / masker.counts.sum()) == pytest.approx(0.15, abs=1e-7)  # q is stored as float32


def test_reference_never_masks_special_tokens_and_trains():
    model, tokenizer, _, batch_list, masker = _setup(reference=True, rate=0.5)
    masker.attach(model)
    record = []
    train_steps(masker, model, batch_list, lr=0.05, record=record)
    masker.detach()
    assert masker.updates == len(batch_list)
    for batch, masked in record:
        changed = masked["input_ids"] != batch["input_ids"]
        assert not changed[torch.isin(batch["input_ids"], masker.context.special_ids)].any()
        assert changed.any()


def test_reference_false_keeps_run_ids(tmp_path):
    base = tmp_path / "p.yaml"
    text = ("name: t\nseeds: [0]\nstore: s.sqlite\ntasks: [{name: tw, dataset: tweets-sentiment}]\n"
            "models: [{name: m, source: builtin:minilm-l6, num_hidden_layers: 2}]\n"
            "maskers:\n  - {name: none, kind: none}\n  - {name: ty, kind: typhoon, rate: 0.15%s}\n"
            "training: {epochs: 1, batch_size: 8, learning_rate: 1.0e-4, max_length: 32}\nanalysis: {baseline: none}\n")
    base.write_text(text % "")
    explicit = tmp_path / "q.yaml"
    explicit.write_text(text % ", reference: false")
    ref = tmp_path / "r.yaml"
    ref.write_text(text % ", reference: true")
    ids = [[s.run_id for s in expand(load_protocol(p))] for p in (base, explicit, ref)]
    assert ids[0] == ids[1]
    assert ids[2][0] == ids[0][0] and ids[2][1] != ids[0][1]
