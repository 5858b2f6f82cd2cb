"""Maskers on encoder-decoders, against their specification, on a tiny random T5, a tiny random BART
and the warm-started MiniLM encoder-decoder (1 layer per stack):

- random-token and whole-word rewrite the source (``input_ids``) only; the decoder input and the
  labels are untouched;
- TLM masks the self-attention of both stacks — never the cross-attention — with the TLM mask of
  its definition, and the decoder keeps its causal triangle; a decoder position is real where it
  predicts a target token;
- attention dropout sets the self-attention dropout of both stacks and restores it;
- DropHead scales the heads of every self-attention output projection of both stacks;
- in evaluation every masker leaves the model's outputs bit-identical.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch

from study.maskers.attention import HOOK_ATTR, attention_roles, get_attention_dropout
from study.maskers.tlm import structure_mask, tlm_allowed_rowwise
from study.tasks.base import generation_example
from study.tasktypes import get_task_type
from study.tasktypes.classification import model_inputs
from study.train import make_masker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from seq2seqtools import mr_rows, tiny_seq2seq  # noqa: E402

SEQ2SEQ = get_task_type("seq2seq")
KINDS = ("t5", "bart", "minilm-ed")


@pytest.fixture(scope="module", params=KINDS)
def setup(request, tmp_path_factory):
    """(kind, loaded, batch) — the model as load_seq2seq_model gives it, and one collated batch."""
    from study.models import load_seq2seq_model

    kind = request.param
    if kind == "minilm-ed":
        cfg = {"source": "builtin:minilm-l6", "decoder": "builtin:minilm-l6", "num_hidden_layers": 1}
    else:
        cfg = {"source": str(tiny_seq2seq(kind, tmp_path_factory.mktemp(kind) / kind))}
    loaded = load_seq2seq_model(cfg, init_seed=0)
    rows = {}
    for mr, ref in mr_rows(4):
        rows.setdefault(mr, []).append(ref)
    examples = [generation_example(f"e{i}", mr, refs) for i, (mr, refs) in enumerate(rows.items())]
    items = SEQ2SEQ.encode(loaded, examples, 32)
    batch = SEQ2SEQ.collate(items, loaded.tokenizer.pad_token_id, torch.device("cpu"))
    return kind, loaded, items, batch


def masker(kind, loaded, seed=0, **params):
    return make_masker({"name": kind, "kind": kind, **params}, loaded, torch.device("cpu"), seed)


def train_forward(m, model, batch):
    model.train()
    out = m.apply({k: v.clone() for k, v in batch.items()}, 0)
    SEQ2SEQ.loss(model, out, None, "ce").backward()
    model.zero_grad(set_to_none=True)
    return out


def test_roles_separate_encoder_decoder_and_cross_attention(setup):
    kind, loaded, _, _ = setup
    roles = list(attention_roles(loaded.model).values())
    layers = 1 if kind == "minilm-ed" else 2
    assert roles.count("self") == layers and roles.count("decoder") == layers and roles.count("cross") == layers


@pytest.mark.parametrize("kind", ["random-token", "whole-word"])
def test_input_maskers_act_on_the_source_only(setup, kind):
    _, loaded, items, batch = setup
    m = masker(kind, loaded, rate=0.5)
    m.setup(loaded.model, loaded.tokenizer, items, 1)
    out = m.apply({k: v.clone() for k, v in batch.items()}, 0)
    changed = out["input_ids"] != batch["input_ids"]
    assert changed.any() and (out["input_ids"][changed] == loaded.replacement_id).all()
    assert not (changed & ~batch["attention_mask"].bool()).any()  # pads never
    assert torch.equal(out["decoder_input_ids"], batch["decoder_input_ids"])
    assert torch.equal(out["labels"], batch["labels"])


def test_tlm_masks_self_attention_of_both_stacks_never_cross(setup):
    _, loaded, items, batch = setup
    model = copy.deepcopy(loaded.model)
    m = masker("tlm", loaded, seed=5, rate=0.4)
    twin = masker("tlm", loaded, seed=5, rate=0.4)  # same stream: replays the draws
    m.setup(model, loaded.tokenizer, items, 1)
    roles = attention_roles(model)
    m.attach(model)
    seen = []
    original = m.attention_mask

    def spy(module, query, key, attention_mask, kwargs):
        out = original(module, query, key, attention_mask, kwargs)
        seen.append((roles[module], out))
        return out

    m.attention_mask = spy
    train_forward(m, model, batch)
    assert all(getattr(mod, HOOK_ATTR, None) is None for mod, r in roles.items() if r == "cross")
    m.detach()
    assert [r for r, _ in seen] == [r for r in roles.values() if r != "cross"]  # every self layer, in order
    src_real, tgt_real = batch["attention_mask"].bool(), batch["labels"] != -100
    for role, mask in seen:
        real = tgt_real if role == "decoder" else src_real
        t = real.shape[1]
        d, sib = twin.draw(real)
        allowed = tlm_allowed_rowwise(d, sib)
        if role == "decoder":
            allowed = allowed & structure_mask(t, True, None, "cpu")
            allowed = allowed | (~allowed.any(-1, keepdim=True) & torch.eye(t, dtype=torch.bool))
            above = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
            assert (mask[:, 0][:, above] == torch.finfo(mask.dtype).min).all()  # causal survives
        expected = torch.zeros(mask.shape, dtype=mask.dtype).masked_fill(~allowed[:, None], torch.finfo(mask.dtype).min)
        assert torch.equal(mask, expected), role
    assert 0.2 < m.realised_rate < 0.6


def test_attention_dropout_in_both_stacks_and_restored(setup):
    _, loaded, items, _ = setup
    model = copy.deepcopy(loaded.model)
    roles = attention_roles(model)
    before = {mod: get_attention_dropout(mod) for mod in roles}
    m = masker("attention-dropout", loaded, rate=0.37)
    m.setup(model, loaded.tokenizer, items, 1)
    m.attach(model)
    for mod, role in roles.items():
        assert get_attention_dropout(mod) == (before[mod] if role == "cross" else 0.37)
    m.detach()
    assert {mod: get_attention_dropout(mod) for mod in roles} == before


def test_drophead_scales_heads_in_both_stacks(setup):
    _, loaded, items, batch = setup
    model = copy.deepcopy(loaded.model)
    m = masker("drophead", loaded, seed=3, rate=0.5)
    m.setup(model, loaded.tokenizer, items, 1)
    layers = sum(r != "cross" for r in attention_roles(model).values())
    assert len(m.projections) == layers
    m.attach(model)
    train_forward(m, model, batch)
    m.detach()
    assert m.stats()["eligible"] == batch["input_ids"].shape[0] * loaded.num_heads * layers
    assert 0.2 < m.realised_rate < 0.8


@pytest.mark.parametrize("kind, params", [("tlm", {"rate": 0.3}), ("attention-dropout", {"rate": 0.3}),
                                          ("drophead", {"rate": 0.3}), ("random-token", {"rate": 0.3})])
def test_evaluation_is_untouched(setup, kind, params):
    _, loaded, items, batch = setup
    model = copy.deepcopy(loaded.model)
    model.eval()
    inputs = model_inputs(batch)
    with torch.no_grad():
        reference = model(**inputs).logits
    m = masker(kind, loaded, **params)
    m.setup(model, loaded.tokenizer, items, 1)
    m.attach(model)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, reference)
    m.detach()


def test_only_typhoon_refuses_seq2seq():
    assert SEQ2SEQ.check_masker("typhoon") is not None
    assert all(SEQ2SEQ.check_masker(k) is None for k in ("none", "random-token", "whole-word", "tlm",
                                                         "attention-dropout", "drophead"))


@pytest.mark.parametrize("side", ["target", "both"])
def test_random_token_side_masks_the_decoder_input(setup, side):
    """side: target masks decoder inputs that are target tokens (never the start token, pads or
    specials), leaving the labels; side: both masks the source too, drawing the source first."""
    _, loaded, items, batch = setup
    m = masker("random-token", loaded, seed=4, rate=0.5, side=side)
    src_only = masker("random-token", loaded, seed=4, rate=0.5)
    out = m.apply({k: v.clone() for k, v in batch.items()}, 0)
    changed = out["decoder_input_ids"] != batch["decoder_input_ids"]
    assert changed.any() and (out["decoder_input_ids"][changed] == loaded.replacement_id).all()
    assert not changed[:, 0].any()  # the decoder start token
    target_token = torch.zeros_like(changed)
    target_token[:, 1:] = batch["labels"][:, :-1] != -100
    special = torch.isin(batch["decoder_input_ids"], m.context.special_ids)
    assert not (changed & (~target_token | special)).any()
    assert torch.equal(out["labels"], batch["labels"])
    if side == "target":
        assert torch.equal(out["input_ids"], batch["input_ids"])
    else:  # the source draws come first: the same as a source-only masker of the same seed
        assert torch.equal(out["input_ids"], src_only.apply({k: v.clone() for k, v in batch.items()}, 0)["input_ids"])


def test_side_target_refused_on_classification(tmp_path):
    from protocoltools import study_cli, tiny_protocol_dict, write_protocol

    p = tiny_protocol_dict(store=str(tmp_path / "runs" / "t.sqlite"),
                           maskers=[{"name": "none", "kind": "none"},
                                    {"name": "r", "kind": "random-token", "rate": 0.1, "side": "target"}])
    out = study_cli("validate", write_protocol(tmp_path, p), cwd=tmp_path)
    assert out.returncode == 2 and "maskers[1].side" in out.stderr and "decoder input" in out.stderr, out.stderr
