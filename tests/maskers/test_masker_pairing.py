"""Every masker through the real training loop (run_one): pairing fingerprints identical across
maskers for one seed, realised rates and learned state recorded, results JSON-serialisable."""

from __future__ import annotations

import json

import pytest
from maskertools import single_thread  # noqa: F401  (autouse fixture)

from study.protocol import parse_protocol
from study.registry import masker_kinds
from study.spec import expand
from study.train import run_one

MASKERS = [
    {"name": "none", "kind": "none"},
    {"name": "random", "kind": "random-token", "rate": 0.2},
    {"name": "random-cur", "kind": "random-token", "rate": 0.3, "schedule": "curriculum", "start": 0.1},
    {"name": "whole-word", "kind": "whole-word", "rate": 0.2, "schedule": "linear-warmup", "warmup": 0.5},
    {"name": "typhoon", "kind": "typhoon", "rate": 0.2},
    {"name": "tlm", "kind": "tlm", "rate": 0.2},
    {"name": "attention-dropout", "kind": "attention-dropout", "rate": 0.2},
    {"name": "drophead", "kind": "drophead", "rate": 0.2},
]


@pytest.fixture(scope="module")
def results():
    proto = parse_protocol({
        "name": "pairing", "seeds": [0], "store": "unused.sqlite",
        "tasks": [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 24, "max_eval_examples": 16}],
        "models": [{"name": "minilm-l1", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
        "maskers": MASKERS,
        "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 24},
        "analysis": {"baseline": "none"},
        "execution": {"threads_per_run": 1},
    })
    return {spec.masker["name"]: run_one(spec) for spec in expand(proto)}


def test_every_registered_kind_is_covered():
    assert {m["kind"] for m in MASKERS} >= set(masker_kinds()) - {"test-fault"}


def test_pairing_fingerprints_identical_across_maskers(results):
    reference = results["none"].fingerprints
    assert set(reference) >= {"data", "data_order", "head_init"}
    for name, result in results.items():
        assert result.fingerprints == reference, name


def test_realised_behaviour_recorded(results):
    assert results["none"].realised_mask_rate is None
    for name, result in results.items():
        json.loads(result.to_json())  # stats and state are JSON
        if name != "none":
            assert 0.0 < result.realised_mask_rate < 0.6, name
    assert results["attention-dropout"].realised_mask_rate == 0.2
    assert results["random"].masker_stats["replacement"] == "mask token '[MASK]'"
    state = results["typhoon"].masker_state
    assert state["top_salient"] and state["least_salient"] and state["updates"] == 3
    # the maskers change training: at least the input-level ones give different predictions or losses
    losses = {n: r.epochs[-1]["train_loss"] for n, r in results.items()}
    assert losses["random"] != losses["none"] and losses["tlm"] != losses["none"]
