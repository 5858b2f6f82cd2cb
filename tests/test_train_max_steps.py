"""run_one(spec, max_steps=...): stops after that many optimizer steps in total, evaluates once,
and reports the throughput of the steps it took (``study plan`` calibrates with it)."""

from __future__ import annotations

import pytest
import torch

from study.protocol import parse_protocol
from study.spec import expand
from study.train import run_one


@pytest.fixture(scope="module")
def spec():
    before = torch.get_num_threads()
    proto = parse_protocol({
        "name": "steps", "seeds": [0], "store": "unused.sqlite",
        "tasks": [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 32, "max_eval_examples": 8}],
        "models": [{"name": "minilm-l1", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
        "maskers": [{"name": "random", "kind": "random-token", "rate": 0.2}, {"name": "none", "kind": "none"}],
        "training": {"epochs": 2, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16},
        "analysis": {"baseline": "random"},
        "execution": {"threads_per_run": 1},
    })
    yield expand(proto)[0]  # 32 examples / 8 per batch × 2 epochs = 8 steps
    torch.set_num_threads(before)  # run_one applies threads_per_run: 1 process-wide


def test_max_steps_stops_mid_run_and_evaluates_once_more(spec):
    steps = []
    result = run_one(spec, lambda step, total: steps.append((step, total)), max_steps=5)
    assert steps == [(i, 5) for i in range(1, 6)]
    # 4 steps in epoch 1 (evaluated), 1 step in epoch 2, then one evaluation and stop.
    assert [e["epoch"] for e in result.epochs] == [1, 2]
    assert result.train_examples_per_s * result.train_time_s == pytest.approx(5 * 8)
    assert len(result.predictions) == 8 and result.realised_mask_rate is not None
    assert 0 < result.train_time_s < result.wall_time_s


def test_max_steps_beyond_the_run_changes_nothing(spec):
    full, capped = run_one(spec), run_one(spec, max_steps=100)
    assert capped.predictions == full.predictions and capped.epochs == full.epochs
    assert full.train_examples_per_s * full.train_time_s == pytest.approx(2 * 32)
