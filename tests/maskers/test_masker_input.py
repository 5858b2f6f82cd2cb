"""Input-level maskers: realised rates (every schedule), specials/pads, whole words, decoders,
schedules and their validation, and the Token Masking paper's training options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from maskertools import (
    batches,
    make_masker,
    pooled_index,
    sentences,
    single_thread,  # noqa: F401  (autouse fixture)
    tiny_backbone,
    train_steps,
)

from study.errors import ProtocolError
from study.maskers.base import ParamError, eligible_positions
from study.maskers.schedules import ScheduledRate, schedule_rate
from study.maskers.whole_word import word_keys
from study.models import choose_replacement
from study.protocol import parse_protocol
from study.tasktypes.classification import class_weights, model_inputs, training_loss

SCHEDULES = [
    {"schedule": "constant"},
    {"schedule": "linear-warmup", "warmup": 0.5},
    {"schedule": "curriculum", "start": 0.05, "end": 0.4},
]


@pytest.fixture(scope="module")
def bert():
    model, tokenizer, context = tiny_backbone("bert", layers=1)
    items, batch_list = batches(tokenizer, sentences(192, seed=1, pairs=True), 16)
    return model, tokenizer, context, items, batch_list


def within_binomial(observed: float, expected: float, variance: float, z: float = 4.5) -> bool:
    return abs(observed - expected) <= z * math.sqrt(max(variance, 1e-12)) + 1e-9


# ---- schedules ----------------------------------------------------------------------------------


def test_schedule_values():
    assert schedule_rate("constant", 0.2, 0, 10) == 0.2
    assert schedule_rate("constant", 0.2, 9, 10) == 0.2
    # linear-warmup: 0 at the first step, rate after warmup·total steps, then flat
    assert schedule_rate("linear-warmup", 0.2, 0, 100, warmup=0.1) == 0.0
    assert schedule_rate("linear-warmup", 0.2, 5, 100, warmup=0.1) == pytest.approx(0.1)
    assert schedule_rate("linear-warmup", 0.2, 10, 100, warmup=0.1) == pytest.approx(0.2)
    assert schedule_rate("linear-warmup", 0.2, 99, 100, warmup=0.1) == pytest.approx(0.2)
    # curriculum: start at the first step, end (default rate) at the last, linear between
    assert schedule_rate("curriculum", 0.3, 0, 11, start=0.1) == pytest.approx(0.1)
    assert schedule_rate("curriculum", 0.3, 5, 11, start=0.1) == pytest.approx(0.2)
    assert schedule_rate("curriculum", 0.3, 10, 11, start=0.1) == pytest.approx(0.3)
    assert schedule_rate("curriculum", 0.3, 10, 11, start=0.5, end=0.0) == pytest.approx(0.0)


@pytest.mark.parametrize("bad, field", [
    ({"rate": 1.5}, "rate"),
    ({"rate": 0.1, "warmup": 0.2}, "warmup"),  # warmup without linear-warmup
    ({"rate": 0.1, "schedule": "linear-warmup", "warmup": 0.0}, "warmup"),
    ({"rate": 0.1, "start": 0.2}, "start"),  # start without curriculum
    ({"rate": 0.1, "schedule": "curriculum", "end": 2.0}, "end"),
])
def test_schedule_params_are_validated(bad, field):
    with pytest.raises(ParamError) as err:
        ScheduledRate(**bad)
    assert err.value.field == field


def test_protocol_names_the_bad_schedule_key():
    data = {
        "name": "p", "seeds": [0], "store": "x.sqlite",
        "tasks": [{"name": "t", "dataset": "tweets-sentiment"}],
        "models": [{"name": "m", "source": "builtin:minilm-l6"}],
        "maskers": [{"name": "none", "kind": "none"},
                    {"name": "ww", "kind": "whole-word", "rate": 0.1, "schedule": "linear-warmup", "warmup": 2}],
        "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16},
        "analysis": {"baseline": "none"},
    }
    with pytest.raises(ProtocolError, match=r"maskers\[1\]\.warmup"):
        parse_protocol(data)
    data["maskers"][1].update(warmup=0.5)
    proto = parse_protocol(data)
    assert proto.maskers[1].to_dict()["schedule"] == "linear-warmup"
    data["maskers"][1] = {"name": "ty", "kind": "typhoon", "rate": 0.1, "schedule": "curriculm"}
    with pytest.raises(ProtocolError, match="curriculum"):
        parse_protocol(data)
    # an unset schedule is not part of the run's identity: old run_ids survive the new options
    data["maskers"][1] = {"name": "rt", "kind": "random-token", "rate": 0.1}
    assert parse_protocol(data).maskers[1].to_dict() == {"name": "rt", "kind": "random-token", "rate": 0.1}
    data["maskers"][1]["schedule"] = "constant"
    assert parse_protocol(data).maskers[1].to_dict() == {"name": "rt", "kind": "random-token", "rate": 0.1}


# ---- realised rates ---------------------------------------------------------------------------


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s["schedule"])
@pytest.mark.parametrize("kind", ["random-token", "whole-word", "typhoon"])
def test_realised_rate_within_binomial_tolerance(bert, kind, sched):
    """Masked count vs its expectation under the scheduled rate, 4.5 σ of the exact variance.

    random-token: Σ_t rate_t·eligible_t, variance Σ rate(1−rate). whole-word: each word is one
    Bernoulli draw that masks all of its tokens, so the variance sums rate(1−rate)·len(word)².
    typhoon: Σ q[token] at each step (Poisson-binomial).
    """
    model, tokenizer, context, items, batch_list = bert
    masker = make_masker(kind, context, seed=3, rate=0.3, **sched)
    masker.setup(model, tokenizer, items, len(batch_list))
    masker.attach(model)
    expected = variance = 0.0
    masked = eligible_total = 0
    for step, batch in enumerate(batch_list):
        rate = masker.rate_at(step)
        if kind == "typhoon":
            masker._calibrate(rate)
        out = masker.apply(batch, step)
        eligible = eligible_positions(batch["input_ids"], batch["attention_mask"], context.special_ids)
        hit = out["input_ids"] != batch["input_ids"]
        masked += int(hit.sum())
        eligible_total += int(eligible.sum())
        if kind == "random-token":
            n = int(eligible.sum())
            expected += rate * n
            variance += rate * (1 - rate) * n
        elif kind == "whole-word":
            keys = word_keys(batch["_word_ids"], batch["_sequence_ids"], batch["input_ids"].shape[1])
            for row in range(keys.shape[0]):
                _, sizes = torch.unique(keys[row][eligible[row]], return_counts=True)
                expected += rate * float(sizes.sum())
                variance += rate * (1 - rate) * float((sizes.double() ** 2).sum())
        else:
            q = masker.q[batch["input_ids"]][eligible].double()
            expected += float(q.sum())
            variance += float((q * (1 - q)).sum())
            # a typhoon step: harvest saliency so q moves between batches
            model.train()
            F.cross_entropy(model(**model_inputs(out)).logits, out["labels"]).backward()
            masker.after_backward(step)
            model.zero_grad(set_to_none=True)
    masker.detach()
    assert masker.realised_rate == pytest.approx(masked / eligible_total)
    assert masker.stats()["masked"] == masked
    assert within_binomial(masked, expected, variance), (kind, sched, masked, expected, math.sqrt(variance))


# ---- what may be masked -----------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["bert", "qwen2", "llama"])
@pytest.mark.parametrize("kind", ["random-token", "whole-word", "typhoon"])
def test_specials_and_pads_never_masked_and_pooling_never_moves(arch, kind):
    model, tokenizer, context = tiny_backbone(arch, layers=1)
    items, batch_list = batches(tokenizer, sentences(48, seed=2, pairs=True), 12)
    masker = make_masker(kind, context, seed=0, rate=0.9)
    masker.setup(model, tokenizer, items, len(batch_list))
    masker.attach(model)
    seen = []
    train_steps(masker, model, batch_list, record=seen)
    masker.detach()
    special = context.special_ids
    total = 0
    for before, after in seen:
        changed = after["input_ids"] != before["input_ids"]
        total += int(changed.sum())
        protected = ~before["attention_mask"].bool() | torch.isin(before["input_ids"], special)
        assert not (changed & protected).any()
        assert (after["input_ids"][changed] == context.replacement_id).all()
        assert context.replacement_id != tokenizer.pad_token_id
        if context.is_decoder:  # HF pools the rightmost non-pad token: it must stay where it was
            pad = tokenizer.pad_token_id
            assert torch.equal(pooled_index(before["input_ids"], pad), pooled_index(after["input_ids"], pad))
    assert total > 0


def test_decoder_replacement_is_explicit_and_recorded():
    _, _, qwen = tiny_backbone("qwen2", layers=1)
    _, _, llama = tiny_backbone("llama", layers=1)
    assert "added special token" in qwen.replacement and int(qwen.replacement_id) in qwen.special_ids.tolist()
    assert llama.replacement.startswith("unk token")
    masker = make_masker("random-token", qwen, rate=0.1)
    assert masker.stats()["replacement"] == qwen.replacement
    # an explicit protocol choice (models[].replacement_token) wins; the pad token is refused
    model, tokenizer, _ = tiny_backbone("llama", layers=1)
    rid, how = choose_replacement(model, tokenizer, "great")
    assert rid == tokenizer.convert_tokens_to_ids("great") and "requested" in how
    rid, how = choose_replacement(model, tokenizer, "<newmask>")
    assert rid == len(tokenizer) - 1 and "added" in how
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer)
    with pytest.raises(ValueError, match="pad"):
        choose_replacement(model, tokenizer, tokenizer.pad_token)


def test_whole_word_masks_whole_words_only():
    model, tokenizer, context = tiny_backbone("bert", layers=1)
    items, batch_list = batches(tokenizer, sentences(64, seed=4, pairs=True), 16)
    masker = make_masker("whole-word", context, seed=1, rate=0.5)
    masker.setup(model, tokenizer, items, len(batch_list))
    split_words = independent = 0
    for step, batch in enumerate(batch_list):
        out = masker.apply(batch, step)
        hit = out["input_ids"] != batch["input_ids"]
        eligible = eligible_positions(batch["input_ids"], batch["attention_mask"], context.special_ids)
        words, seqs = batch["_word_ids"], batch["_sequence_ids"]
        for row in range(hit.shape[0]):
            groups: dict = {}
            for t in torch.nonzero(eligible[row]).squeeze(1).tolist():
                groups.setdefault((int(seqs[row, t]), int(words[row, t])), []).append(bool(hit[row, t]))
            for flags in groups.values():
                assert all(flags) or not any(flags)  # a word is masked entirely or not at all
                split_words += len(flags) > 1
            # word k of sentence A and word k of sentence B are different words: drawn independently
            for (s, w), flags in groups.items():
                if s == 0 and (1, w) in groups and flags[0] != groups[(1, w)][0]:
                    independent += 1
    assert split_words > 0 and independent > 0


# ---- the Token Masking paper's training options --------------------------------------------------


def test_class_weights_formula_and_normalisation():
    labels = [0] * 60 + [1] * 30 + [2] * 10
    w = class_weights(labels, 3, "sqrt-inverse").numpy()
    n, c = 100, 3
    raw = np.sqrt(n / (c * np.array([60.0, 30.0, 10.0])))
    assert w.sum() == pytest.approx(3.0, abs=1e-6)
    np.testing.assert_allclose(w, raw * c / raw.sum(), rtol=1e-6)
    assert w[2] > w[1] > w[0]
    assert class_weights(labels, 3, None) is None


def test_focal_loss_matches_hand_computation():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0]])
    labels = torch.tensor([0, 2, 0])
    weights = torch.tensor([0.5, 1.0, 1.5])
    loss = training_loss(logits, labels, weights, "focal")
    expected = 0.0
    for row, y in zip(logits.tolist(), labels.tolist(), strict=True):
        log_z = math.log(sum(math.exp(v) for v in row))
        ce = weights[y].item() * (log_z - row[y])  # per-example weighted cross-entropy
        expected += (1 - math.exp(-ce)) * ce
    assert loss.item() == pytest.approx(expected / 3, rel=1e-6)
    plain = training_loss(logits, labels, None, "ce")
    assert plain.item() == pytest.approx(F.cross_entropy(logits, labels).item())
