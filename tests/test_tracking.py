"""Tracking sinks (issue 22 §1) against a real MLflow SQLite store, read through mlflow.search_runs.

One tiny real study (1-layer MiniLM, 24 tweets, 2 epochs, select: best) runs once per module: a
baseline, a random-token masker and a masker whose first attempt fails (test-fault, once).
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed (pip install 'maskstudy[mlflow]')")

from execution.exectools import cli  # noqa: E402  (after the importorskip)

from study.protocol import parse_protocol  # noqa: E402
from study.spec import expand  # noqa: E402


def protocol(tmp: Path, uri: str | None, name: str = "p.yaml", marker: Path | None = None) -> Path:
    data = {
        "name": "trk", "seeds": [0], "store": "runs/trk.sqlite",
        "tasks": [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 24,
                   "max_eval_examples": 8, "validation_fraction": 0.25}],
        "models": [{"name": "minilm-l1", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
        "maskers": [{"name": "none", "kind": "none"}, {"name": "random", "kind": "random-token", "rate": 0.2},
                    {"name": "flaky", "kind": "test-fault", "fail": "once", "marker": str(marker or tmp / "flaky-marker")}],
        "training": {"epochs": 2, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16, "select": "best"},
        "analysis": {"baseline": "none", "n_boot": 200},
        "execution": {"threads_per_run": 1, "max_attempts": 1, "cpu_slots": 2},
        "tracking": [{"sink": "mlflow", **({"uri": uri} if uri else {})}],
    }
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def without_flaky(proto: Path) -> dict:
    """The protocol with its built-in maskers only (the test-fault kind exists only in the CLI subprocesses)."""
    data = yaml.safe_load(proto.read_text())
    data["maskers"] = data["maskers"][:2]
    proto.write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def runs_of(uri: str):
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["trk"])


def store_rows(store: Path) -> dict:
    con = sqlite3.connect(store)
    try:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT run_id, status, value, realised_mask_rate, wall_time_s, masker FROM runs")}
    finally:
        con.close()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tracked")
    proto = protocol(tmp, "sqlite:///mlflow/trk.sqlite")  # relative to the protocol file
    first = cli("run", proto, cwd=tmp)
    assert first.returncode == 1, first.stderr  # the flaky run failed (max_attempts 1)
    return tmp, proto, f"sqlite:///{tmp / 'mlflow' / 'trk.sqlite'}"


def test_one_parent_and_one_nested_run_per_run_with_tags_params_and_history(study):
    tmp, proto, uri = study
    df = runs_of(uri)
    parent = df[df["tags.role"] == "study"]
    children = df[df["tags.role"] == "run"]
    assert len(parent) == 1 and len(children) == 3
    assert set(children["tags.mlflow.parentRunId"]) == {parent["run_id"].iloc[0]}
    assert set(children["tags.mlflow.runName"]) == {f"tweets/minilm-l1/{m}/0" for m in ("none", "random", "flaky")}
    rows = store_rows(tmp / "runs" / "trk.sqlite")
    assert set(children["tags.run_id"]) == set(rows)
    for _, r in children.iterrows():
        status, value, rate, wall, masker = rows[r["tags.run_id"]]
        assert (r["tags.study"], r["tags.task"], r["tags.model"], r["tags.seed"]) == ("trk", "tweets", "minilm-l1", "0")
        assert r["tags.masker"] == masker and r["tags.status"] == status
        assert r["params.training.epochs"] == "2" and r["params.training.learning_rate"] == "0.0001"
        if status == "done":
            assert r["status"] == "FINISHED"
            assert r["metrics.final/value"] == pytest.approx(value, abs=0)
            assert r["metrics.wall_time_s"] == pytest.approx(wall, abs=0)
            client = mlflow.tracking.MlflowClient(uri)
            for key in ("train_loss", "eval/macro_f1", "validation/macro_f1"):
                assert [m.step for m in client.get_metric_history(r["run_id"], key)] == [1, 2], key
        else:
            assert r["status"] == "FAILED" and "injected failure" in r["tags.error"]
    random = children[children["tags.masker"] == "random"].iloc[0]
    assert random["params.masker.rate"] == "0.2" and random["tags.masker_kind"] == "random-token"
    assert 0 < random["metrics.realised_mask_rate"] == pytest.approx(rows[random["tags.run_id"]][2], abs=0)


def test_reruns_and_track_never_duplicate_and_a_retried_failure_is_updated_in_place(study):
    tmp, proto, uri = study
    flaky_before = runs_of(uri).query("`tags.masker` == 'flaky'")
    retried = cli("run", proto, "--retry-failed", cwd=tmp)
    assert retried.returncode == 0, retried.stderr
    again = cli("run", proto, cwd=tmp)
    assert again.returncode == 0, again.stderr
    track = cli("track", proto, cwd=tmp)
    assert track.returncode == 0, track.stderr
    assert "0 run(s) pushed, 3 already there" in track.stdout
    df = runs_of(uri)
    assert len(df) == 4 and df["tags.run_id"].dropna().is_unique
    flaky = df.query("`tags.masker` == 'flaky'").iloc[0]
    assert flaky["run_id"] == flaky_before["run_id"].iloc[0]
    assert (flaky["status"], flaky["tags.status"]) == ("FINISHED", "done")
    assert "tags.error" not in df.columns or not isinstance(flaky["tags.error"], str)
    assert [m.step for m in mlflow.tracking.MlflowClient(uri).get_metric_history(flaky["run_id"], "train_loss")] == [1, 2]


def test_analyze_and_report_log_their_files_on_the_parent_run(study):
    tmp, proto, uri = study
    assert cli("analyze", proto, cwd=tmp).returncode == 0
    assert cli("report", proto, cwd=tmp).returncode == 0
    df = runs_of(uri)
    parent = df[df["tags.role"] == "study"]["run_id"].iloc[0]
    client = mlflow.tracking.MlflowClient(uri)
    tables = {Path(a.path).name for a in client.list_artifacts(parent, "tables")}
    assert {"comparisons.csv", "summary.txt", "forest.png"} <= tables
    assert [Path(a.path).name for a in client.list_artifacts(parent, "report")] == ["report.pdf"]


def test_study_track_backfills_a_finished_store(study, tmp_path):
    tmp, _, _ = study
    shutil.copytree(tmp / "runs", tmp_path / "runs", ignore=shutil.ignore_patterns("*.work"))
    proto = protocol(tmp_path, None, marker=tmp / "flaky-marker")  # default URI: beside the store
    uri = f"sqlite:///{tmp_path / 'runs' / 'trk.mlflow.sqlite'}"
    first = cli("track", proto, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "3 run(s) pushed, 0 already there" in first.stdout
    df = runs_of(uri)
    gone = df[df["tags.masker"] == "random"]["run_id"].iloc[0]
    mlflow.tracking.MlflowClient(uri).delete_run(gone)  # a run the tracker missed
    second = cli("track", proto, cwd=tmp_path)
    assert "1 run(s) pushed, 2 already there" in second.stdout, second.stdout
    df = runs_of(uri)
    assert len(df) == 4 and sorted(df["tags.masker"].dropna()) == ["flaky", "none", "random"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_a_tracking_server_that_is_down_warns_once_and_never_fails_the_study(tmp_path):
    proto = protocol(tmp_path, f"http://127.0.0.1:{_closed_port()}")
    without_flaky(proto)
    run = cli("run", proto, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("warning: tracking") == 1 and "study track" in run.stderr
    assert [r[0] for r in store_rows(tmp_path / "runs" / "trk.sqlite").values()] == ["done", "done"]
    track = cli("track", proto, cwd=tmp_path)  # asked to push: says it could not
    assert track.returncode == 1 and track.stderr.count("warning: tracking") == 1


def test_tracking_is_in_no_run_id_and_mlflow_is_imported_only_when_used(tmp_path):
    data = without_flaky(protocol(tmp_path, None))
    with_block = [s.run_id for s in expand(parse_protocol(data))]
    data.pop("tracking")
    assert [s.run_id for s in expand(parse_protocol(data))] == with_block
    code = ("import sys; from study.cli import main; rc = main(['validate', sys.argv[1]]); "
            "assert 'mlflow' not in sys.modules; sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "p.yaml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_bad_tracking_blocks_and_a_missing_package_exit_2(tmp_path):
    from test_first_hour import run_cli

    from study.tracking import SINKS, MlflowParams, SinkKind

    proto = protocol(tmp_path, None)
    data = without_flaky(proto)
    for block, says in (([{"sink": "mlfow"}], "tracking[0].sink: unknown tracking sink 'mlfow'. Did you mean 'mlflow'?"),
                        ([{"sink": "mlflow", "url": "x"}], "tracking[0].url: unknown key"),
                        ({"sink": "mlflow"}, "tracking: expected a list of sinks")):
        proto.write_text(yaml.safe_dump({**data, "tracking": block}))
        code, _, err = run_cli("validate", proto)
        assert code == 2 and says in err, err
    with SINKS.scoped("fake", SinkKind(MlflowParams, "study.tracking.mlflow_sink:MlflowSink", "no_such_pkg_q", "fake")):
        proto.write_text(yaml.safe_dump({**data, "tracking": [{"sink": "fake"}]}))
        for command in ("validate", "run", "track"):
            code, _, err = run_cli(command, proto)
            assert code == 2 and "pip install 'maskstudy[fake]'" in err, (command, err)
    assert not (tmp_path / "runs").exists()
