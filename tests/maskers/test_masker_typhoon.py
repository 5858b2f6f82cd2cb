"""Typhoon: saliency vs autograd on one-hot inputs, per-type estimates, EMA, calibration, state."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from maskertools import (
    batches,
    make_masker,
    sentences,
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_backbone,
    train_steps,
)

from study.maskers.typhoon import batch_estimates, calibrate, ema_update, propensity, token_saliency
from study.tasktypes.classification import model_inputs


def test_saliency_equals_gradient_wrt_one_hot_input():
    """s = g_t · E[v] from the embedding-output hook == ∂L/∂onehot[t, v] by autograd (float64)."""
    model, tokenizer, context = tiny_backbone("bert", layers=2)
    model.double()
    items, batch_list = batches(tokenizer, sentences(8, seed=5, pairs=True), 8)
    masker = make_masker("typhoon", context, seed=0, rate=0.4)
    masker.setup(model, tokenizer, items, 1)
    masker.attach(model)
    calls = []
    counter = model.register_forward_hook(lambda *a: calls.append(1))
    batch = batch_list[0]
    model.train()
    masked = masker.apply(batch, 0)
    F.cross_entropy(model(**model_inputs(masked)).logits, masked["labels"]).backward()
    grad = masker._grad.clone()
    masker.after_backward(0)
    counter.remove()
    masker.detach()
    assert len(calls) == 1  # the saliency came from the training step's own forward/backward
    ids = batch["input_ids"]
    s = token_saliency(grad, ids, model.get_input_embeddings().weight).double()

    model.zero_grad(set_to_none=True)
    emb = model.get_input_embeddings().weight.detach()
    onehot = F.one_hot(masked["input_ids"], emb.shape[0]).double().requires_grad_(True)
    inputs = {k: v for k, v in model_inputs(masked).items() if k != "input_ids"}
    logits = model(inputs_embeds=onehot @ emb, **inputs).logits
    F.cross_entropy(logits, masked["labels"]).backward()
    reference = onehot.grad.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # entry of the ORIGINAL token
    hit = masked["input_ids"] != ids
    assert hit.any()
    assert torch.allclose(s, reference, rtol=1e-6, atol=1e-12)
    assert (s.abs() > 0).any() and float((s - reference).abs().max()) < 1e-6


def test_batch_estimates_by_hand():
    # types 5 and 7; unmasked occurrences add −s, masked ones +s, each averaged separately
    ids = torch.tensor([[5, 5, 7, 7, 7, 9]])
    s = torch.tensor([[1.0, 3.0, -2.0, 4.0, 10.0, 100.0]])
    eligible = torch.tensor([[True, True, True, True, True, False]])
    masked = torch.tensor([[False, True, False, False, True, False]])
    new, seen = batch_estimates(s, ids, eligible, masked, 10)
    assert seen.nonzero().squeeze(1).tolist() == [5, 7]
    assert new[5].item() == pytest.approx(-1.0 + 3.0)  # mean(−s | unmasked) + mean(+s | masked)
    assert new[7].item() == pytest.approx(-(-2.0 + 4.0) / 2 + 10.0)
    assert new[9].item() == 0.0  # not eligible: not seen


def test_ema_update_rule():
    w = torch.zeros(4, dtype=torch.float64)
    seen = torch.zeros(4, dtype=torch.bool)
    new1 = torch.tensor([1.0, 2.0, 0.0, 0.0], dtype=torch.float64)
    w, seen = ema_update(w, seen, new1, torch.tensor([True, True, False, False]), alpha=0.8)
    assert w.tolist() == [1.0, 2.0, 0.0, 0.0]  # first sighting: w = new
    new2 = torch.tensor([9.0, 5.0, 3.0, 7.0], dtype=torch.float64)
    w, seen = ema_update(w, seen, new2, torch.tensor([False, True, True, False]), alpha=0.8)
    assert w[0].item() == 1.0  # not in this batch: unchanged
    assert w[1].item() == pytest.approx(0.2 * 2.0 + 0.8 * 5.0)
    assert w[2].item() == 3.0  # first sighting
    assert w[3].item() == 0.0 and not seen[3]


def test_propensity_min_max_and_unseen():
    w = torch.tensor([2.0, 4.0, 3.0, -50.0], dtype=torch.float64)
    seen = torch.tensor([True, True, True, False])
    phi = propensity(w, seen, spread=0.4)
    assert phi.tolist() == pytest.approx([0.6, 1.0, 0.8, 1.0])  # unseen types get ŝ = 1
    assert propensity(w, torch.zeros(4, dtype=torch.bool), 0.4).tolist() == [1.0] * 4


def test_calibration_closed_form_without_clipping():
    g = torch.Generator().manual_seed(0)
    n = torch.randint(1, 50, (300,), generator=g).double()
    phi = 0.6 + 0.4 * torch.rand(300, generator=g, dtype=torch.float64)
    q, lam = calibrate(n, phi, 0.15)
    closed = 0.15 * n.sum() / (n * phi).sum()
    assert lam == pytest.approx(float(closed), rel=1e-15)
    assert torch.allclose(q, closed * phi, rtol=1e-15)
    assert float((n * q).sum() / n.sum()) == pytest.approx(0.15, abs=1e-12)


@pytest.mark.parametrize("rate", [0.7, 0.85, 0.97])
def test_calibration_hits_budget_with_clipping(rate):
    g = torch.Generator().manual_seed(1)
    n = torch.randint(1, 200, (500,), generator=g).double()
    phi = 0.1 + 0.9 * torch.rand(500, generator=g, dtype=torch.float64)
    q, lam = calibrate(n, phi, rate)
    assert float(q.max()) <= 1.0 and float(q.min()) >= 0.0
    assert (q == 1.0).any()  # clipping really happened
    budget = float((n * q).sum() / n.sum())
    assert abs(budget - rate) <= 1e-6
    assert torch.allclose(q, (lam * phi).clamp(max=1.0))


def test_typhoon_learns_and_records_state():
    model, tokenizer, context = tiny_backbone("bert", layers=1)
    items, batch_list = batches(tokenizer, sentences(96, seed=6), 16)
    masker = make_masker("typhoon", context, seed=0, rate=0.2, report_top=5)
    masker.setup(model, tokenizer, items, len(batch_list))
    masker.attach(model)
    train_steps(masker, model, batch_list, lr=0.05)
    masker.detach()
    assert masker.updates == len(batch_list)
    masker._calibrate(0.2)
    q = masker.q[masker.support].double()
    assert float((masker.counts * q).sum() / masker.counts.sum()) == pytest.approx(0.2, abs=1e-6)
    assert float(q.max() - q.min()) > 0.01  # masking became type-dependent
    state = json.loads(json.dumps(masker.state()))
    assert len(state["top_salient"]) == 5 and len(state["least_salient"]) == 5
    top = [w for _, w in state["top_salient"]]
    low = [w for _, w in state["least_salient"]]
    assert top == sorted(top, reverse=True) and low == sorted(low) and top[0] >= low[0]
    assert state["types_seen"] <= state["types_in_train"] and state["lambda"] > 0
    assert all(isinstance(tok, str) for tok, _ in state["top_salient"])
