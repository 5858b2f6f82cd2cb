"""training.optimizer: "adamw" (default) keeps run_ids and the CPU's for-loop AdamW; "adamw-fused"
is a different run (its own run_id) that really uses the fused kernel, and learns the same thing
to float noise."""

from __future__ import annotations

import pytest
import torch
from protocoltools import tiny_protocol_dict

from study.protocol import parse_protocol
from study.spec import expand
from study.train import build_optimizer, run_one


def spec(optimizer: str | None):
    training = {**tiny_protocol_dict()["training"]}
    if optimizer is not None:
        training["optimizer"] = optimizer
    return expand(parse_protocol(tiny_protocol_dict(seeds=[0], training=training,
                                                    execution={"threads_per_run": 1})))[0]


def test_default_keeps_run_ids_and_fused_changes_them():
    assert spec(None).run_id == spec("adamw").run_id
    assert spec("adamw-fused").run_id != spec("adamw").run_id


def test_unknown_optimizer_is_refused_with_the_choices():
    from study.errors import UserError

    with pytest.raises(UserError, match=r"training\.optimizer.*adamw-fused"):
        spec("sgd")


@pytest.mark.parametrize(("optimizer", "fused"), [("adamw", None), ("adamw-fused", True)])
def test_the_kernel_is_the_one_asked_for_on_the_cpu(optimizer, fused):
    model = torch.nn.Linear(4, 2)
    opt, _ = build_optimizer(model, {"learning_rate": 1e-3, "weight_decay": 0.01, "warmup_ratio": 0.0,
                                     "optimizer": optimizer}, 10, torch.device("cpu"))
    assert opt.defaults["fused"] is fused


def test_fused_run_matches_the_for_loop_run_to_float_noise():
    a, b = run_one(spec("adamw")), run_one(spec("adamw-fused"))
    sa, sb = torch.tensor([r[3] for r in a.predictions]), torch.tensor([r[3] for r in b.predictions])
    assert (sa - sb).abs().max() < 1e-3
    assert a.epochs[-1]["train_loss"] == pytest.approx(b.epochs[-1]["train_loss"], rel=1e-4)
