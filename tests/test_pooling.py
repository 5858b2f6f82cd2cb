"""``models[].pooling: mean``: the head reads the attention-mask-weighted mean of the token
states (the sentence-transformers pooling), padding never changes a prediction, the head is
seeded like the built-in heads, every masker family trains through it, and the default leaves
run_ids unchanged."""

from __future__ import annotations

import pytest
import torch
from protocoltools import tiny_protocol_dict, write_protocol

from study.models import load_model
from study.pooling import MeanPooledClassifier
from study.protocol import ProtocolError, load_protocol, parse_protocol
from study.spec import expand
from study.train import run_one

MINILM_L1 = {"name": "minilm-l1", "source": "builtin:minilm-l6", "num_hidden_layers": 1}


@pytest.fixture(autouse=True)
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_logits_are_the_linear_head_on_the_masked_mean_of_token_states():
    loaded = load_model({**MINILM_L1, "pooling": "mean"}, num_labels=3, init_seed=0)
    model = loaded.model.eval()
    assert isinstance(model, MeanPooledClassifier)
    ids = torch.tensor([[101, 2023, 2003, 2307, 102], [101, 2204, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        hidden = model.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
    # By hand: the mean over the real tokens of each row only.
    pooled = torch.stack([hidden[0, :5].mean(0), hidden[1, :3].mean(0)])
    expected = pooled @ model.classifier.weight.T + model.classifier.bias
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-6)


def test_padding_does_not_change_the_prediction():
    model = load_model({**MINILM_L1, "pooling": "mean"}, num_labels=2, init_seed=1).model.eval()
    short = torch.tensor([[101, 2204, 2154, 102]])
    padded = torch.tensor([[101, 2204, 2154, 102, 0, 0, 0]])
    with torch.no_grad():
        a = model(input_ids=short, attention_mask=torch.ones_like(short)).logits
        b = model(input_ids=padded, attention_mask=(padded != 0).long()).logits
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_head_comes_from_the_init_seed_and_the_pretrained_pooler_is_dropped():
    cfg = {**MINILM_L1, "pooling": "mean"}
    a, b, c = (load_model(cfg, 3, seed) for seed in (7, 7, 8))
    assert a.head_fingerprint == b.head_fingerprint != c.head_fingerprint
    torch.testing.assert_close(a.model.classifier.weight, b.model.classifier.weight)
    assert torch.count_nonzero(a.model.classifier.bias) == 0
    assert a.model.backbone.pooler is None  # not computed, not trained
    assert a.model.config is a.model.backbone.config
    assert a.model.get_input_embeddings() is a.model.backbone.get_input_embeddings()
    # The backbone is the pretrained one, not re-initialised.
    cls = load_model(MINILM_L1, 3, 7).model
    torch.testing.assert_close(a.model.backbone.embeddings.word_embeddings.weight,
                               cls.bert.embeddings.word_embeddings.weight)


@pytest.mark.parametrize("masker", [
    {"name": "random", "kind": "random-token", "rate": 0.2},
    {"name": "tlm", "kind": "tlm", "rate": 0.2},
    {"name": "drophead", "kind": "drophead", "rate": 0.2},
    {"name": "typhoon", "kind": "typhoon", "rate": 0.15},
])
def test_every_masker_family_trains_through_mean_pooling(masker):
    proto = parse_protocol(tiny_protocol_dict(
        seeds=[0], models=[{**MINILM_L1, "pooling": "mean"}], maskers=[masker], analysis={"baseline": masker["name"]},
        execution={"threads_per_run": 1}))
    result = run_one(expand(proto)[0], max_steps=2)
    assert len(result.predictions) == 32
    assert result.realised_mask_rate is not None and result.realised_mask_rate > 0


def test_default_pooling_keeps_run_ids_and_mean_changes_them():
    cls = expand(parse_protocol(tiny_protocol_dict()))
    explicit = expand(parse_protocol(tiny_protocol_dict(models=[{**MINILM_L1, "pooling": "cls"}])))
    mean = expand(parse_protocol(tiny_protocol_dict(models=[{**MINILM_L1, "pooling": "mean"}])))
    assert [s.run_id for s in cls] == [s.run_id for s in explicit]
    assert not {s.run_id for s in cls} & {s.run_id for s in mean}


def test_bad_pooling_is_refused_with_the_field_and_the_fix(tmp_path):
    with pytest.raises(ProtocolError) as e:
        load_protocol(write_protocol(tmp_path, tiny_protocol_dict(models=[{**MINILM_L1, "pooling": "max"}])))
    assert "models[0].pooling" in str(e.value) and "mean" in str(e.value)


def test_token_tasks_ignore_pooling_so_one_model_list_serves_both_task_types():
    """A sentence task and a token task share the models: the sentence runs are mean pooled, the
    token runs are exactly the runs without pooling (same spec, same run_id)."""
    tweets = tiny_protocol_dict()["tasks"][0]
    token_task = {"name": "lid", "dataset": "lince-lid", "task_type": "token-classification", "data_dir": "x"}
    mean = expand(parse_protocol(tiny_protocol_dict(tasks=[tweets, token_task],
                                                    models=[{**MINILM_L1, "pooling": "mean"}])))
    plain = expand(parse_protocol(tiny_protocol_dict(tasks=[tweets, token_task], models=[MINILM_L1])))
    by_task = {t: [s for s in mean if s.task["name"] == t] for t in ("tweets", "lid")}
    assert {s.model["pooling"] for s in by_task["lid"]} == {"cls"}
    assert {s.model["pooling"] for s in by_task["tweets"]} == {"mean"}
    lid_plain = [s.run_id for s in plain if s.task["name"] == "lid"]
    assert [s.run_id for s in by_task["lid"]] == lid_plain
    assert not {s.run_id for s in by_task["tweets"]} & {s.run_id for s in plain}


def test_labels_give_the_cross_entropy_as_hugging_face_heads_do():
    """transformers.Trainer (bench/vs_trainer.py) reads the loss from the model's output."""
    model = load_model({**MINILM_L1, "pooling": "mean"}, num_labels=3, init_seed=0).model.eval()
    ids = torch.tensor([[101, 2023, 2003, 102], [101, 2204, 102, 0]])
    mask = (ids != 0).long()
    labels = torch.tensor([0, 2])
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.loss is not None and model(input_ids=ids, attention_mask=mask).loss is None
    assert torch.allclose(out.loss, torch.nn.functional.cross_entropy(out.logits, labels))
