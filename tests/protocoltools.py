"""Helpers shared by the top-level tests: tiny, real protocols (1-layer pretrained MiniLM, a few
dozen tweets) and the real ``study`` CLI in a subprocess.

A plain module that tests import by name: conftest.py is for pytest to import, not tests.
"""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"  # public GLUE / UCI / LinCE copies; tests skip without them

TINY = {
    "name": "tiny",
    "seeds": [0, 1, 2],
    "store": "runs/tiny.sqlite",
    "tasks": [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 48, "max_eval_examples": 32}],
    "models": [{"name": "minilm-l1", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
    "maskers": [{"name": "none", "kind": "none"}, {"name": "random-0.2", "kind": "random-token", "rate": 0.2}],
    "training": {"epochs": 1, "batch_size": 16, "learning_rate": 3.0e-4, "max_length": 24,
                 "warmup_ratio": 0.1, "weight_decay": 0.01},
    "analysis": {"baseline": "none", "alpha": 0.05, "n_boot": 500},
}


def tiny_protocol_dict(**overrides) -> dict:
    data = copy.deepcopy(TINY)
    data.update(overrides)
    return data


def write_protocol(directory: Path, data: dict, name: str = "p.yaml") -> Path:
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def study_cli(*args, cwd, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``study ARGS...`` as a user would (a fresh interpreter), capturing its output as text."""
    return subprocess.run([sys.executable, "-m", "study.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)
