"""Mid-run checkpoints: a run stopped after a checkpoint and resumed is bit-identical to one that
ran straight through (every input- and attention-level masker, Typhoon's learned state too), and
through the real CLI a worker killed with SIGKILL resumes, gets a `resumed` event, and leaves no
checkpoint behind. Real pretrained MiniLM (1 layer, dropout on), real tweets, CPU."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from protocoltools import tiny_protocol_dict, write_protocol

from study import checkpoint
from study.checkpoint import checkpoint_path
from study.protocol import load_protocol, parse_protocol
from study.spec import expand
from study.train import run_one

MASKERS = [
    {"name": "random", "kind": "random-token", "rate": 0.2},
    {"name": "wwm", "kind": "whole-word", "rate": 0.2},
    {"name": "typhoon", "kind": "typhoon", "rate": 0.2},
    {"name": "tlm", "kind": "tlm", "rate": 0.1},
    {"name": "attn-dropout", "kind": "attention-dropout", "rate": 0.2},
    {"name": "drophead", "kind": "drophead", "rate": 0.2},
]
TRAINING = {"epochs": 2, "batch_size": 16, "learning_rate": 3.0e-4, "max_length": 24, "warmup_ratio": 0.1,
            "weight_decay": 0.01}  # 48 examples: 3 steps per epoch, 6 in all


def spec_for(masker: dict, **execution):
    data = tiny_protocol_dict(seeds=[1], maskers=[{"name": "none", "kind": "none"}, masker], training=TRAINING,
                              execution={"threads_per_run": 1, **execution})
    return expand(parse_protocol(data))[1]


def same_run(a, b) -> None:
    assert a.predictions == b.predictions  # ids, labels, predictions and scores, exactly
    assert a.epochs == b.epochs  # every epoch's train loss and metrics
    assert a.masker_stats == b.masker_stats and a.masker_state == b.masker_state
    assert a.fingerprints == b.fingerprints


@pytest.mark.parametrize("masker", MASKERS, ids=[m["kind"] for m in MASKERS])
def test_stopped_and_resumed_run_is_bit_identical(masker, tmp_path):
    straight = run_one(spec_for(masker))
    assert straight.resumed_from_step is None
    # Typhoon stops at an epoch boundary (checkpoint after the last batch, before that epoch's
    # evaluation); the others stop mid-epoch.
    every, stop, at = (3, 4, 3) if masker["kind"] == "typhoon" else (2, 5, 4)
    spec = spec_for(masker, checkpoint_every_steps=every)
    partial = run_one(spec, max_steps=stop, checkpoint_dir=tmp_path)
    assert partial.epochs[-1]["epoch"] == 2 and partial.predictions != []
    assert checkpoint_path(tmp_path, spec.run_id).is_file()
    resumed = run_one(spec, checkpoint_dir=tmp_path)
    assert resumed.resumed_from_step == at
    same_run(straight, resumed)


def test_resume_is_not_a_rerun(tmp_path):
    """Negative control: a checkpoint with different weights changes the result, so the test above can fail."""
    masker = MASKERS[0]
    spec = spec_for(masker, checkpoint_every_steps=2)
    run_one(spec, max_steps=2, checkpoint_dir=tmp_path)
    path = checkpoint_path(tmp_path, spec.run_id)
    state = checkpoint.load(path, spec.run_id)
    state["masker"]["generator"] = torch.Generator().manual_seed(12345).get_state()
    checkpoint.save(path, state)
    changed = run_one(spec, checkpoint_dir=tmp_path)
    straight = run_one(spec_for(masker))
    assert changed.resumed_from_step == 2
    assert changed.masker_stats["masked"] != straight.masker_stats["masked"]


def test_checkpoint_of_another_run_is_ignored(tmp_path, capsys):
    spec = spec_for(MASKERS[0], checkpoint_every_steps=2)
    other = spec_for(MASKERS[1], checkpoint_every_steps=2)
    run_one(other, max_steps=2, checkpoint_dir=tmp_path)
    os.replace(checkpoint_path(tmp_path, other.run_id), checkpoint_path(tmp_path, spec.run_id))
    result = run_one(spec, max_steps=1, checkpoint_dir=tmp_path)
    assert result.resumed_from_step is None
    assert "belongs to another run" in capsys.readouterr().err


# ---- through the CLI: a real worker killed with SIGKILL ------------------------------------------


def _worker_pid(run_id: str) -> int | None:
    """The forked worker of ``run_id`` (the fork server names it ms-<run_id[:12]>)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == f"ms-{run_id[:12]}":
                    return int(proc.name)
            except OSError:
                continue
    return None


def _study(path, tmp_path):
    return subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(path)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kill_after_checkpoint(driver, spec, ckpt_dir, *, whom: str) -> None:
    """SIGKILL the run's worker (or its driver) as soon as the run has written a checkpoint."""
    deadline = time.monotonic() + 300
    while driver.poll() is None and time.monotonic() < deadline:
        pid = _worker_pid(spec.run_id)
        if pid and checkpoint_path(ckpt_dir, spec.run_id).is_file():
            os.kill(pid if whom == "worker" else driver.pid, signal.SIGKILL)
            return
        time.sleep(0.02)
    pytest.fail("the run finished before it could be killed: " + driver.communicate()[1][-2000:])


def _check_resumed(p, spec, ckpt_dir, attempts: int) -> None:
    con = sqlite3.connect(p.store_path)
    status, n = con.execute("SELECT status, attempts FROM runs WHERE run_id=?", (spec.run_id,)).fetchone()
    assert (status, n) == ("done", attempts)
    kinds = [k for k, in con.execute("SELECT kind FROM events WHERE run_id=? ORDER BY time", (spec.run_id,))]
    assert kinds[-1] == "resumed" and kinds.count("resumed") == 1
    message = con.execute("SELECT message FROM events WHERE kind='resumed'").fetchone()[0]
    step = int(message.rsplit(" ", 1)[1])
    assert step > 0 and step % 4 == 0
    assert not list(ckpt_dir.glob("*")), "checkpoints are deleted once the run is recorded"

    # What was stored equals a run that was never interrupted (and never checkpointed).
    straight = run_one(spec)
    stored = {i: (y, pr, s) for i, y, pr, s in
              con.execute("SELECT example_id, label, prediction, score FROM predictions WHERE run_id=?",
                          (spec.run_id,))}
    assert stored == {i: (y, pr, s) for i, y, pr, s in straight.predictions}
    state = con.execute("SELECT masker_state FROM runs WHERE run_id=?", (spec.run_id,)).fetchone()[0]
    assert json.loads(state) == json.loads(json.dumps(straight.masker_state))


@pytest.fixture
def killable(tmp_path):
    """A protocol whose typhoon run (seed 0) lasts long enough to be killed between checkpoints."""
    data = tiny_protocol_dict(
        seeds=[0], maskers=[{"name": "none", "kind": "none"}, {"name": "typhoon", "kind": "typhoon", "rate": 0.2}],
        tasks=[{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 320, "max_eval_examples": 32}],
        training={**TRAINING, "max_length": 32}, store=str(tmp_path / "runs" / "k.sqlite"),
        execution={"threads_per_run": 1, "checkpoint_every_steps": 4, "max_attempts": 2})
    path = write_protocol(tmp_path, data)
    p = load_protocol(path)
    return path, p, expand(p)[1], tmp_path / "runs" / "k.work" / "checkpoints"


@pytest.mark.slow  # the default suite kills the driver (next test); tests/chaos kills workers at random
def test_killed_worker_resumes_from_its_checkpoint(killable, tmp_path):
    path, p, spec, ckpt_dir = killable
    driver = _study(path, tmp_path)
    _kill_after_checkpoint(driver, spec, ckpt_dir, whom="worker")
    _, err = driver.communicate(timeout=600)
    assert driver.returncode == 0, err[-3000:]
    _check_resumed(p, spec, ckpt_dir, attempts=2)  # the killed attempt failed, the retry resumed


def test_killed_driver_resumes_from_the_checkpoint_on_the_next_run(killable, tmp_path):
    path, p, spec, ckpt_dir = killable
    driver = _study(path, tmp_path)
    _kill_after_checkpoint(driver, spec, ckpt_dir, whom="driver")
    driver.communicate(timeout=60)
    assert driver.returncode == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while _worker_pid(spec.run_id) and time.monotonic() < deadline:  # the worker dies with its driver
        time.sleep(0.05)
    assert checkpoint_path(ckpt_dir, spec.run_id).is_file()
    again = _study(path, tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-3000:]
    _check_resumed(p, spec, ckpt_dir, attempts=1)  # the dead driver's attempt was given back, then resumed


@pytest.mark.parametrize("key, value, problem", [
    ("checkpoint_every_steps", 0, "must be positive"),
    ("checkpoint_every_min", -1.0, "must be positive"),
    ("checkpoint_every_steps", "often", "checkpoint_every_steps"),
])
def test_bad_checkpoint_options_are_protocol_errors(key, value, problem):
    from study.errors import ProtocolError

    with pytest.raises(ProtocolError) as info:
        parse_protocol(tiny_protocol_dict(execution={key: value}), file="p.yaml")
    assert f"execution.{key}" in str(info.value) and problem in str(info.value)


def test_bad_precision_is_a_protocol_error():
    from study.errors import ProtocolError

    with pytest.raises(ProtocolError) as info:
        parse_protocol(tiny_protocol_dict(training={**TRAINING, "precision": "fp8"}), file="p.yaml")
    assert "training.precision" in str(info.value) and "bf16" in str(info.value)
