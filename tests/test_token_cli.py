"""A tiny token-level LinCE study end to end through the real CLI (validate, run in worker
processes, SQLite, analyze with the sentence-resampling multibootstrap), and the protocol
errors of token tasks and best-epoch selection as exit-2 messages."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import pandas as pd
import pytest
from protocoltools import SHARED_DATA, tiny_protocol_dict, write_protocol

from study.protocol import load_protocol
from study.spec import expand
from study.store import Store

LINCE = SHARED_DATA / "lince-lid-spaeng"
TASK = {"name": "lid", "dataset": "lince-lid", "task_type": "token-classification", "data_dir": str(LINCE),
        "max_train_examples": 48, "max_eval_examples": 20, "validation_fraction": 0.25}


def study(*args, cwd):
    return subprocess.run([sys.executable, "-m", "study.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


def token_protocol(tmp, **training):
    data = tiny_protocol_dict(seeds=[0, 1], tasks=[dict(TASK)], store=str(tmp / "runs" / "lid.sqlite"))
    data["training"] = {**data["training"], "epochs": 2, "max_length": 48, "select": "best", **training}
    return write_protocol(tmp, data)


@pytest.mark.skipif(not LINCE.is_dir(), reason="needs ../shared/data/lince-lid-spaeng")
def test_token_level_lince_study_through_the_cli(tmp_path):
    path = token_protocol(tmp_path)
    out = study("run", path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    p = load_protocol(path)
    specs = expand(p)
    with Store(p.store_path) as store:
        runs = store.load_runs(specs)
        preds = store.load_predictions(specs)
        metrics = store.load_epoch_metrics()
    assert len(runs) == 4 and set(runs.status) == {"done"} and runs.metric.eq("weighted_f1").all()
    # One prediction per scored word, ids "<sentence id>:<word index>", 20 sentences, labels 0..2.
    per_run = preds.groupby("run_id").size()
    assert per_run.nunique() == 1 and per_run.iloc[0] > 20
    sentences = preds.example_id.str.rsplit(":", n=1).str[0]
    assert preds.example_id.str.match(r"^dev-\d+:\d+$").all() and sentences.nunique() == 20
    assert set(preds.label) <= {0, 1, 2}
    # The stored value is the selected epoch's weighted F1, recomputed from the stored words.
    from sklearn.metrics import f1_score

    for run_id, grp in preds.groupby("run_id"):
        value = runs.set_index("run_id").value[run_id]
        assert f1_score(grp.label, grp.prediction, average="weighted") == pytest.approx(value, abs=1e-12)
        final = metrics[(metrics.run_id == run_id) & (metrics.is_final == 1)].set_index("name").value
        assert final["weighted_f1"] == value and "macro_f1" in final and "validation:weighted_f1" in final

    out = study("analyze", path, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    mb = pd.read_csv(tmp_path / "reports" / "tiny" / "multibootstrap.csv")
    assert len(mb) == 1 and mb.n_examples.iloc[0] == 20 and mb.metric.iloc[0] == "weighted_f1"
    con = sqlite3.connect(p.store_path)
    assert con.execute("SELECT COUNT(DISTINCT epoch) FROM metrics WHERE is_final = 1").fetchone()[0] >= 1


@pytest.mark.parametrize(("task", "training", "key", "fix"), [
    ({"task_type": "sequence-classification"}, {}, "tasks[0].task_type", "task_type: token-classification"),
    ({"validation_fraction": None}, {"select": "best"}, "tasks[0].validation_fraction", "validation_fraction"),
    ({"validation_fraction": 1.5}, {}, "tasks[0].validation_fraction", "0.1"),
    ({}, {"select": "last", "early_stopping_patience": 2}, "training.early_stopping_patience", "select: best"),
    ({}, {"select": "first"}, "training.select", ""),
])
def test_protocol_errors_exit_2_naming_file_and_key(tmp_path, task, training, key, fix):
    data = tiny_protocol_dict(tasks=[{**TASK, **task}], store=str(tmp_path / "runs" / "x.sqlite"))
    data["tasks"][0] = {k: v for k, v in data["tasks"][0].items() if v is not None}
    data["training"] = {**data["training"], **training}
    path = write_protocol(tmp_path, data)
    out = study("validate", path, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert str(path.name) in out.stderr and key in out.stderr and fix in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists()
