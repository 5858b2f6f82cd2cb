"""Attention-level maskers (TLM, attention dropout, DropHead), and what every masker must keep:
evaluation untouched, the model restored by detach, the global RNG left alone."""

from __future__ import annotations

import copy
import math

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

from study.maskers.attention import (
    HOOK_ATTR,
    attention_modules,
    get_attention_dropout,
    route_attention,
    unroute,
)
from study.maskers.base import ParamError
from study.maskers.drophead import DropHeadParams, head_scale, output_projection, sample_keep
from study.maskers.tlm import (
    TLMParams,
    structure_mask,
    tlm_additive,
    tlm_allowed,
    tlm_allowed_rowwise,
)
from study.tasktypes.classification import model_inputs

ARCHS = ["bert", "qwen2", "llama"]
ALL_KINDS = {
    "none": {}, "random-token": {"rate": 0.3}, "whole-word": {"rate": 0.3}, "typhoon": {"rate": 0.3},
    "tlm": {"rate": 0.3}, "attention-dropout": {"rate": 0.3}, "drophead": {"rate": 0.3},
}


@pytest.fixture(scope="module", params=ARCHS)
def backbone(request):
    model, tokenizer, context = tiny_backbone(request.param, layers=2)
    items, batch_list = batches(tokenizer, sentences(24, seed=7, pairs=True), 8)
    return request.param, model, tokenizer, context, items, batch_list


# ---- TLM --------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [1, 2, 7, 16])
def test_tlm_vectorised_equals_reference_loop(t):
    g = torch.Generator().manual_seed(t)
    for rate in (0.0, 0.3, 0.9):
        real = torch.rand((3, t), generator=g) < 0.8
        d = real & (torch.rand((3, t), generator=g) >= rate)
        siblings = torch.rand((3, t), generator=g) < 0.5
        for sib in (siblings, torch.ones_like(siblings), torch.zeros_like(siblings)):
            fast, slow = tlm_allowed(d, sib), tlm_allowed_rowwise(d, sib)
            assert fast.shape == slow.shape == (3, t, t)
            assert torch.equal(fast, slow)
            # the masker's row-gather construction, plain and with a causal triangle / window
            for causal, window in ((False, None), (True, None), (True, 3), (False, 2)):
                allowed = slow
                structure = structure_mask(t, causal, window, "cpu")
                if structure is not None:
                    allowed = allowed & structure
                    allowed = allowed | (~allowed.any(-1, keepdim=True) & torch.eye(t, dtype=torch.bool))
                for dtype in (torch.float32, torch.bfloat16):
                    low = torch.finfo(dtype).min
                    expected = torch.where(allowed, 0.0, low).to(dtype)[:, None]
                    assert torch.equal(tlm_additive(d, sib, dtype, causal, window), expected)


def _capture_masks(masker):
    masks = []
    original = masker.attention_mask

    def spy(module, query, key, attention_mask, kwargs):
        out = original(module, query, key, attention_mask, kwargs)
        masks.append(out)
        return out

    masker.attention_mask = spy
    return masks


def test_tlm_masks_in_the_model_follow_the_definition(backbone):
    """Every layer's mask == reference loop on the same draws (∧ causal triangle for decoders)."""
    arch, model, tokenizer, context, items, batch_list = backbone
    masker = make_masker("tlm", context, seed=11, rate=0.4)
    twin = make_masker("tlm", context, seed=11, rate=0.4)  # same stream: replays the draws
    masker.setup(model, tokenizer, items, 1)
    masker.attach(model)
    masks = _capture_masks(masker)
    batch = batch_list[0]
    train_steps(masker, model, [batch])
    masker.detach()
    assert len(masks) == context.num_layers  # resampled in every layer
    assert not torch.equal(masks[0], masks[1])
    real = batch["attention_mask"].bool()
    t = real.shape[1]
    for mask in masks:
        d, sib = twin.draw(real)
        allowed = tlm_allowed_rowwise(d, sib)
        if context.is_decoder:
            allowed = allowed & structure_mask(t, True, None, "cpu")
            allowed = allowed | (~allowed.any(-1, keepdim=True) & torch.eye(t, dtype=torch.bool))
        expected = torch.zeros(mask.shape, dtype=mask.dtype).masked_fill(~allowed[:, None], torch.finfo(mask.dtype).min)
        assert mask.shape == (real.shape[0], 1, t, t)
        assert torch.equal(mask, expected)
        if context.is_decoder:  # the causal triangle survives TLM
            above = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
            assert (mask[:, 0][:, above] == torch.finfo(mask.dtype).min).all()


@pytest.mark.parametrize("arch, attn", [("bert", "sdpa"), ("bert", "eager"), ("qwen2", "sdpa"), ("llama", "eager")])
def test_tlm_at_rate_zero_reproduces_the_model(arch, attn):
    """d = attention_mask: the TLM mask is then exactly padding (∧ causal), so outputs match."""
    model, tokenizer, context = tiny_backbone(arch, layers=2, attn=attn)
    _, batch_list = batches(tokenizer, sentences(12, seed=8, pairs=True), 12)
    batch = batch_list[0]
    assert (batch["attention_mask"] == 0).any()  # padding present
    model.train()
    reference = model(**model_inputs(batch)).logits
    masker = make_masker("tlm", context, rate=0.0)
    masker.setup(model, tokenizer, [], 1)
    masker.attach(model)
    masker.apply(batch, 0)
    assert model.config._attn_implementation == f"maskstudy+{attn}"
    out = model(**model_inputs(batch)).logits
    masker.detach()
    assert model.config._attn_implementation == attn
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["siblings", "self"])
def test_tlm_variants(variant):
    model, tokenizer, context = tiny_backbone("bert", layers=1)
    _, batch_list = batches(tokenizer, sentences(8, seed=9), 8)
    masker = make_masker("tlm", context, rate=0.5, variant=variant)
    twin = make_masker("tlm", context, rate=0.5, variant=variant)
    masker.setup(model, tokenizer, [], 1)
    masker.attach(model)
    masks = _capture_masks(masker)
    train_steps(masker, model, batch_list[:1])
    masker.detach()
    allowed = masks[0][:, 0] == 0
    real = batch_list[0]["attention_mask"].bool()
    d, _ = twin.draw(real)
    assert (real & ~d).any() and d.any()
    t = real.shape[1]
    eye = torch.eye(t, dtype=torch.bool)
    for b in range(real.shape[0]):
        for i in range(t):
            if d[b, i]:
                expected = d[b]  # a kept token attends to the kept tokens only
            elif variant == "siblings":
                expected = eye[i]  # a masked token attends only to itself
            else:
                expected = ~eye[i]  # ... or to everything but itself
            assert torch.equal(allowed[b, i], expected)


def test_tlm_realised_rate_within_binomial_tolerance():
    model, tokenizer, context = tiny_backbone("bert", layers=2)
    items, batch_list = batches(tokenizer, sentences(64, seed=10), 16)
    masker = make_masker("tlm", context, rate=0.25)
    masker.setup(model, tokenizer, items, len(batch_list))
    masker.attach(model)
    train_steps(masker, model, batch_list)
    masker.detach()
    real = sum(int(b["attention_mask"].sum()) for b in batch_list) * context.num_layers
    assert masker.stats()["eligible"] == real
    sigma = math.sqrt(0.25 * 0.75 * real)
    assert abs(masker.stats()["masked"] - 0.25 * real) <= 4.5 * sigma


def test_attention_params_validated_and_flash_refused():
    with pytest.raises(ParamError):
        TLMParams(rate=1.0)
    with pytest.raises(ParamError):
        DropHeadParams(rate=1.0)
    with pytest.raises(ParamError):
        TLMParams(rate=0.1, variant="both").__class__(rate=-0.1)
    model, _, _ = tiny_backbone("qwen2", layers=1)
    model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="sdpa or eager"):
        route_attention(model)


# ---- attention dropout -----------------------------------------------------------------------


def test_attention_dropout_reaches_the_attention_function(backbone):
    arch, model, tokenizer, context, items, batch_list = backbone
    masker = make_masker("attention-dropout", context, rate=0.37)
    masker.setup(model, tokenizer, items, 1)
    modules = masker.modules
    assert len(modules) == context.num_layers
    masker.attach(model)
    seen = []

    class Spy:
        def attention_mask(self, module, query, key, attention_mask, kwargs):
            seen.append(kwargs["dropout"])
            return attention_mask

    original = route_attention(model)
    for m in modules:
        setattr(m, HOOK_ATTR, Spy())
    model.train()
    model(**model_inputs(batch_list[0]))
    for m in modules:
        delattr(m, HOOK_ATTR)
    unroute(model, original)
    masker.detach()
    assert seen == [0.37] * context.num_layers
    assert masker.realised_rate == 0.37 and masker.stats()["realised_rate"] == 0.37
    assert masker.stats()["original_attention_dropout"] == [0.0]
    # TLM can set it too (the reference TLM runs use attention dropout 0); detach restores it
    tlm = make_masker("tlm", context, rate=0.1, attention_dropout=0.25)
    tlm.setup(model, tokenizer, items, 1)
    tlm.attach(model)
    assert [get_attention_dropout(m) for m in modules] == [0.25] * context.num_layers
    tlm.detach()
    tlm.detach()  # idempotent
    assert [get_attention_dropout(m) for m in modules] == [0.0] * context.num_layers


# ---- DropHead ------------------------------------------------------------------------------------


def test_drophead_never_drops_every_head_and_rate_matches():
    g = torch.Generator().manual_seed(0)
    heads, rate, n = 4, 0.6, 4000
    keep = sample_keep(n, heads, rate, g, "cpu")
    assert keep.any(1).all()
    # E[dropped | not all dropped] for Binomial(H, p)
    p_all = rate ** heads
    mean = (heads * rate - heads * p_all) / (1 - p_all)
    second = (heads * rate * (1 - rate) + (heads * rate) ** 2 - heads ** 2 * p_all) / (1 - p_all)
    sd = math.sqrt((second - mean ** 2) / n)
    assert abs(float((~keep).sum(1).double().mean()) - mean) <= 4.5 * sd


def test_drophead_rescaling():
    keep = torch.tensor([[True, False, True, True], [False, False, True, False], [True] * 4])
    scale = head_scale(keep)
    torch.testing.assert_close(scale, torch.tensor([[4 / 3, 0, 4 / 3, 4 / 3], [0, 0, 4.0, 0], [1.0] * 4]))
    assert torch.allclose(scale.sum(1), torch.full((3,), 4.0))


def test_drophead_hook_scales_heads_of_the_output_projection(backbone):
    arch, model, tokenizer, context, items, batch_list = backbone
    masker = make_masker("drophead", context, seed=2, rate=0.5)
    masker.setup(model, tokenizer, items, 1)
    proj = output_projection(model, attention_modules(model)[0])
    assert proj is masker.projections[0]
    before, after = [], []
    h1 = proj.register_forward_pre_hook(lambda m, a: before.append(a[0].detach().clone()))
    masker.attach(model)
    h2 = proj.register_forward_pre_hook(lambda m, a: after.append(a[0].detach().clone()))
    train_steps(masker, model, batch_list[:1])
    masker.detach()
    h1.remove()
    h2.remove()
    heads = context.num_heads
    x, y = before[0].unflatten(-1, (heads, -1)), after[0].unflatten(-1, (heads, -1))
    for b in range(x.shape[0]):
        dropped = [(y[b, :, h] == 0).all().item() for h in range(heads)]
        kept = heads - sum(dropped)
        assert 1 <= kept <= heads
        for h in range(heads):
            expected = torch.zeros_like(x[b, :, h]) if dropped[h] else x[b, :, h] * (heads / kept)
            torch.testing.assert_close(y[b, :, h], expected)
    assert masker.stats()["eligible"] == batch_list[0]["input_ids"].shape[0] * heads * context.num_layers


# ---- what every masker keeps ------------------------------------------------------------------


def _eval_logits(model, batch_list):
    model.eval()
    with torch.no_grad():
        return [model(**model_inputs(b)).logits for b in batch_list]


def _hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("kind", list(ALL_KINDS))
def test_eval_identical_and_detach_restores(backbone, kind):
    arch, model, tokenizer, context, items, batch_list = backbone
    model = copy.deepcopy(model)
    reference = _eval_logits(model, batch_list)
    hooks, impl = _hook_count(model), model.config._attn_implementation
    masker = make_masker(kind, context, **ALL_KINDS[kind])
    masker.setup(model, tokenizer, items, len(batch_list))
    masker.attach(model)
    for got, ref in zip(_eval_logits(model, batch_list), reference, strict=True):
        assert torch.equal(got, ref)  # attached, eval mode: bit-identical
    train_steps(masker, model, batch_list[:1])  # lr 0: weights unchanged
    for got, ref in zip(_eval_logits(model, batch_list), reference, strict=True):
        assert torch.equal(got, ref)
    masker.detach()
    assert model.config._attn_implementation == impl and _hook_count(model) == hooks
    assert not any(hasattr(m, HOOK_ATTR) for m in model.modules())
    for got, ref in zip(_eval_logits(model, batch_list), reference, strict=True):
        assert torch.equal(got, ref)


@pytest.mark.parametrize("kind", [k for k in ALL_KINDS if k not in ("none", "attention-dropout")])
def test_maskers_never_touch_the_global_rng(kind):
    """Same global RNG consumption as `none` through training steps with dropout on.

    attention-dropout is exempt by definition: its draws are the model's own dropout.
    """
    base, tokenizer, context = tiny_backbone("qwen2" if kind == "tlm" else "bert", layers=2, dropout=0.1)
    items, batch_list = batches(tokenizer, sentences(16, seed=12, pairs=True), 8)

    def run(k):
        model = copy.deepcopy(base)
        masker = make_masker(k, context, **ALL_KINDS[k])
        masker.setup(model, tokenizer, items, len(batch_list))
        torch.manual_seed(1234)
        masker.attach(model)
        train_steps(masker, model, batch_list)
        masker.detach()
        return torch.get_rng_state()

    assert torch.equal(run(kind), run("none"))
