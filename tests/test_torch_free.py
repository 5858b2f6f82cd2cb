"""The config layer and every command that only reads protocols and the store run without torch.

Each command is the real CLI in a fresh interpreter under ``-X importtime``, which lists every
module the process imported; torch (and transformers, which imports it) must not be among them.
The store is written through the real Store with results whose numbers are made up: training
is not what these commands do. Also: ``study plan`` with an unreachable hub exits 0 quickly and
says why its runs are not calibrated.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from study.protocol import load_protocol
from study.results import RunResult
from study.spec import expand
from study.store import Store

REPO = Path(__file__).resolve().parents[1]
TORCH_MODULES = ("torch", "transformers")

PROTOCOL = {
    "name": "torchfree",
    "seeds": {"start": 0, "count": 3},
    "tasks": [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 16, "max_eval_examples": 8}],
    "models": [{"name": "minilm-l1", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
    "maskers": [{"name": "none", "kind": "none"}, {"name": "random", "kind": "random-token", "rate": 0.2},
                {"name": "tlm", "kind": "tlm", "rate": 0.1}],
    "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16},
    "analysis": {"baseline": "none", "n_boot": 200},
    "execution": {"threads_per_run": 1},
}


def _write(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _cli(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "study.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env or os.environ.copy())


def imported(stderr: str) -> set[str]:
    """Module names from ``-X importtime`` lines: ``import time: self | cumulative | name``."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.fixture(scope="module")
def study_with_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torchfree")
    path = _write(tmp, {**PROTOCOL, "store": str(tmp / "runs" / "s.sqlite")})
    protocol = load_protocol(path)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 8)
    with Store(protocol.store_path) as store:
        specs = expand(protocol)
        store.register(specs)
        for spec in specs:
            preds = np.where(rng.random(8) < 0.7, labels, (labels + 1) % 3)
            value = 0.5 + 0.01 * spec.seed + 0.01 * len(spec.masker["name"])
            store.record_result(RunResult(
                run_id=spec.run_id, primary_metric="macro_f1", final_metrics={"macro_f1": value, "accuracy": value},
                epochs=[{"epoch": 1, "train_loss": 1.0, "metrics": {"macro_f1": value, "accuracy": value}}],
                predictions=[[f"dev-{i}", int(y), int(q), 0.9] for i, (y, q) in enumerate(zip(labels, preds, strict=True))],
                wall_time_s=3.0, train_time_s=2.0, train_examples_per_s=8.0,
                realised_mask_rate=None if spec.masker["kind"] == "none" else 0.2,
                fingerprints={"data": "d", "data_order": f"o{spec.seed}", "head_init": f"h{spec.seed}"},
                env={"device": "cpu", "determinism": {"deterministic": False}}))
    return tmp, path


COMMANDS = {
    "validate": lambda p, out: ["validate", p],
    "plan": lambda p, out: ["plan", p, "--calibrate", "never", "--gpus", "none"],
    "status": lambda p, out: ["status", p],
    "analyze": lambda p, out: ["analyze", p, "--out", out / "analysis"],
    "report": lambda p, out: ["report", p, "--out", out / "report.pdf"],
    "export": lambda p, out: ["export", p, "--out", out / "export"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_command_never_imports_torch(study_with_store, command):
    tmp, path = study_with_store
    proc = _cli(*COMMANDS[command](path, tmp / command), cwd=tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = imported(proc.stderr)
    assert "study.cli" in modules or "study.protocol" in modules  # the probe itself works
    assert not modules & set(TORCH_MODULES), f"study {command} imported {sorted(modules & set(TORCH_MODULES))}"


def test_the_probe_sees_torch_when_it_is_imported(tmp_path):
    """The check above can fail: a command that trains (run) imports torch, and the probe sees it."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import study.registry as r; r.masker_class('tlm')"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch" in imported(proc.stderr)


def test_plan_with_an_unreachable_hub_exits_0_quickly_and_says_why(tmp_path):
    data = {**PROTOCOL, "store": str(tmp_path / "s.sqlite"),
            "models": [{"name": "bert", "source": "bert-base-uncased"}]}
    path = _write(tmp_path, data)
    base = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    for env in ({**base, "HF_HUB_OFFLINE": "1"},  # declared offline
                {**base, "HF_ENDPOINT": "http://127.0.0.1:9"}):  # a hub that refuses connections
        t0 = time.monotonic()
        proc = _cli("plan", path, "--gpus", "none", cwd=tmp_path, env=env)
        took = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "Traceback" not in proc.stdout + proc.stderr
        assert "? (not calibrated)" in proc.stdout
        why = next(line for line in proc.stdout.splitlines() if "not calibrated:" in line)
        assert "bert-base-uncased" in why
        assert ("HF_HUB_OFFLINE is set" if "HF_HUB_OFFLINE" in env else "127.0.0.1:9 is unreachable") in why
        assert took < 60  # the hub libraries' own retries alone take ~25 s per file


def test_generation_metrics_never_import_torch():
    """Every generation metric, its paired tests and the multibootstrap module run without torch
    (the analysis layer scores seq2seq runs from their stored statistics)."""
    code = ("from analysis import textmetrics as tm, generation, multiboot\n"
            "for m in tm.TEXT_METRICS:\n"
            "    s = [tm.example_stats(m, h, ['a b c d', 'a c'], 'a b') for h in ('a b c', 'a c d', 'b')]\n"
            "    tm.corpus_score(m, s); tm.paired_bootstrap(s, s[::-1], m, n_samples=20)\n"
            "    tm.paired_ar(s, s[::-1], m, n_samples=20)\n")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = imported(proc.stderr)
    assert {"sacrebleu", "rouge_score", "analysis.textmetrics"} <= modules  # the probe sees them
    assert not modules & set(TORCH_MODULES), sorted(modules & set(TORCH_MODULES))
