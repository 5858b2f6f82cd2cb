"""A damaged checkpoint is never resumed from (issue 23 §4).

Every checkpoint carries a SHA-256 of its payload. A flipped byte, a truncated file or a file
without the header is set aside (``.bad``) with a warning; the run resumes from the previous
checkpoint (``.prev``) or from step 0, and its result equals a run that was never interrupted.
A checkpoint that passes its checksum but cannot be continued from costs one attempt, not all
of them. Real runs (1-layer MiniLM, 48 tweets, 6 optimizer steps), CPU.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
import torch
from protocoltools import tiny_protocol_dict

from study import checkpoint
from study.protocol import parse_protocol
from study.spec import expand
from study.train import run_one

TRAINING = {"epochs": 2, "batch_size": 16, "learning_rate": 3.0e-4, "max_length": 24, "warmup_ratio": 0.1,
            "weight_decay": 0.01}  # 48 examples: 3 steps per epoch, 6 in all


def spec_for(**execution):
    data = tiny_protocol_dict(seeds=[1], maskers=[{"name": "none", "kind": "none"},
                                                  {"name": "typhoon", "kind": "typhoon", "rate": 0.2}],
                              training=TRAINING, execution={"threads_per_run": 1, **execution})
    return expand(parse_protocol(data))[1]


@pytest.fixture(scope="module")
def straight():
    """The run straight through, never checkpointed: what every resume must reproduce."""
    return run_one(spec_for())


def same_run(a, b) -> None:
    assert a.predictions == b.predictions and a.epochs == b.epochs
    assert a.masker_stats == b.masker_stats and a.masker_state == b.masker_state


def flip_a_weight_byte(path) -> bytes:
    """Flip one byte in the middle of the payload (tensor data); returns the damaged payload."""
    raw = bytearray(path.read_bytes())
    middle = raw.index(b"\n") + 1 + (len(raw) - raw.index(b"\n")) // 2
    raw[middle] ^= 0xFF
    path.write_bytes(bytes(raw))
    return bytes(raw[raw.index(b"\n") + 1:])


def test_flipped_byte_falls_back_to_the_previous_checkpoint(tmp_path, straight, capsys):
    spec = spec_for(checkpoint_every_steps=2)
    run_one(spec, max_steps=4, checkpoint_dir=tmp_path)  # checkpoints at steps 2 (.prev) and 4
    path = checkpoint.checkpoint_path(tmp_path, spec.run_id)
    assert checkpoint.previous_path(path).is_file()
    damaged = flip_a_weight_byte(path)
    # Without the checksum this file would be resumed from silently: it unpickles, with other weights.
    state = torch.load(io.BytesIO(damaged), map_location="cpu", weights_only=False)
    assert state["run_id"] == spec.run_id and state["position"]["step"] == 4
    capsys.readouterr()
    resumed = run_one(spec, checkpoint_dir=tmp_path)
    err = capsys.readouterr().err
    assert f"warning: checkpoint {path} is not used: checksum mismatch" in err
    assert "Trying the previous checkpoint." in err and "from the previous checkpoint" in err
    assert resumed.resumed_from_step == 2
    same_run(straight, resumed)
    assert path.with_name(path.name + ".bad").is_file()  # kept for a look, deleted with the run's others
    checkpoint.discard(tmp_path, spec.run_id)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("damage", ["truncated", pytest.param("no header", marks=pytest.mark.slow),
                                    pytest.param("both damaged", marks=pytest.mark.slow)])
def test_damaged_checkpoint_without_a_good_one_restarts_from_step_0(damage, tmp_path, straight, capsys):
    spec = spec_for(checkpoint_every_steps=2)
    run_one(spec, max_steps=4, checkpoint_dir=tmp_path)
    path = checkpoint.checkpoint_path(tmp_path, spec.run_id)
    prev = checkpoint.previous_path(path)
    if damage == "truncated":  # (an interrupted copy; no previous checkpoint to fall back to)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
        prev.unlink()
        expect = "truncated or extended"
    elif damage == "no header":  # what maskstudy wrote before checksums: plain torch.save
        torch.save(checkpoint.load(path, spec.run_id), path)
        prev.unlink()
        expect = "no maskstudy-checkpoint-v2 header"
    else:
        flip_a_weight_byte(path)
        flip_a_weight_byte(prev)
        expect = "checksum mismatch"
    capsys.readouterr()
    resumed = run_one(spec, checkpoint_dir=tmp_path)
    err = capsys.readouterr().err
    assert expect in err and "Starting the run from step 0." in err
    assert resumed.resumed_from_step is None
    same_run(straight, resumed)


def test_a_checkpoint_that_cannot_be_continued_costs_one_attempt_not_a_crash_loop(tmp_path):
    """A checksum-valid checkpoint whose model state does not fit (as one from another maskstudy
    version might): the attempt fails, the worker sets the checkpoints aside, the retry starts
    from step 0 and succeeds. Real worker processes (`python -m study.worker`)."""
    spec = spec_for(checkpoint_every_steps=2)
    run_one(spec, max_steps=2, checkpoint_dir=tmp_path / "ck")
    path = checkpoint.checkpoint_path(tmp_path / "ck", spec.run_id)
    state = checkpoint.load(path, spec.run_id)
    state["model"] = {k: v for k, v in list(state["model"].items())[1:]}  # one weight missing
    checkpoint.save(path, state)
    (tmp_path / "spec.json").write_text(spec.to_json())

    def attempt():
        env = {**os.environ, checkpoint.CHECKPOINT_DIR_ENV: str(tmp_path / "ck")}
        return subprocess.run([sys.executable, "-m", "study.worker", str(tmp_path / "spec.json"),
                               str(tmp_path / "result.json")], capture_output=True, text=True, env=env, timeout=600)

    first = attempt()
    assert first.returncode == 1 and "Missing key(s) in state_dict" in first.stderr
    assert "the run's checkpoints were set aside (.bad), so the next attempt starts from step 0" in first.stderr
    assert not path.exists()
    second = attempt()
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((tmp_path / "result.json").read_text())["resumed_from_step"] is None
