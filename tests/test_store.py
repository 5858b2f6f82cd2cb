"""SQLite store: round trip, atomic 'done', stable table names, export."""

from __future__ import annotations

import sqlite3

import pandas as pd
import pytest
from protocoltools import tiny_protocol_dict

from study.protocol import parse_protocol
from study.results import RunResult
from study.spec import expand
from study.store import Store


@pytest.fixture
def specs():
    return expand(parse_protocol(tiny_protocol_dict()))


def fake_result(spec, value=0.5, n=4) -> RunResult:
    preds = [[f"dev-{i}", i % 2, (i + 1) % 2 if i == 0 else i % 2, 0.9] for i in range(n)]
    return RunResult(
        run_id=spec.run_id, primary_metric="macro_f1",
        final_metrics={"macro_f1": value, "accuracy": 0.75},
        epochs=[{"epoch": 1, "train_loss": 1.1, "metrics": {"macro_f1": value - 0.1, "accuracy": 0.7}},
                {"epoch": 2, "train_loss": 0.9, "metrics": {"macro_f1": value, "accuracy": 0.75}}],
        predictions=preds, wall_time_s=3.0, train_time_s=2.0, train_examples_per_s=50.0,
        realised_mask_rate=0.2, fingerprints={"data": "d", "data_order": "o", "head_init": "h"},
        masker_stats={"realised_rate": 0.2}, masker_state={}, env={"torch": "x"})


def test_register_is_idempotent_and_counts(tmp_path, specs):
    with Store(tmp_path / "s.sqlite") as store:
        assert store.register(specs) == 6
        assert store.register(specs) == 0
        assert store.counts(s.run_id for s in specs) == {"done": 0, "failed": 0, "running": 0, "pending": 6}


def test_round_trip(tmp_path, specs):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.register(specs)
        store.mark_running(specs[0].run_id, "host:1")
        store.record_result(fake_result(specs[0], 0.61))
    with Store(path) as store:  # reopen: everything persisted
        runs = store.load_runs(specs)
        assert len(runs) == 1
        row = runs.iloc[0]
        assert (row.task, row.model, row.masker, row.seed) == ("tweets", "minilm-l1", "none", 0)
        assert row.metric == "macro_f1" and row.value == pytest.approx(0.61) and row.accuracy == pytest.approx(0.75)
        assert (row.data_order_fp, row.head_init_fp) == ("o", "h") and row.attempts == 1
        preds = store.load_predictions(specs)
        assert len(preds) == 4 and set(preds.columns) >= {"run_id", "example_id", "label", "prediction", "score",
                                                          "masker", "seed"}
        epochs = store.load_epoch_metrics()
        assert len(epochs[(epochs.name == "macro_f1")]) == 2
        assert epochs[(epochs.name == "macro_f1") & (epochs.is_final == 1)].value.item() == pytest.approx(0.61)
        assert store.integrity_check() == "ok"


def test_plain_sqlite3_sees_documented_tables(tmp_path, specs):
    path = tmp_path / "s.sqlite"
    with Store(path) as store:
        store.register(specs)
        store.record_result(fake_result(specs[1]))
    con = sqlite3.connect(path)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "metrics", "predictions", "events"} <= tables
    status, spec_json = con.execute("SELECT status, spec FROM runs WHERE run_id=?", (specs[1].run_id,)).fetchone()
    assert status == "done" and '"random-token"' in spec_json


def test_failed_write_leaves_run_not_done_and_no_rows(tmp_path, specs):
    with Store(tmp_path / "s.sqlite") as store:
        store.register(specs)
        bad = fake_result(specs[0])
        bad.predictions = [["a", 0, 0, 0.5], ["a", 1, 1, 0.5]]  # duplicate example id → constraint error
        with pytest.raises(sqlite3.IntegrityError):
            store.record_result(bad)
        assert store.statuses([specs[0].run_id])[specs[0].run_id] == "pending"
        n_metrics = store.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        n_preds = store.conn.execute("SELECT COUNT(*) FROM predictions").fetchone()[0]
        assert (n_metrics, n_preds) == (0, 0)


def test_failure_events_and_final_status(tmp_path, specs):
    with Store(tmp_path / "s.sqlite") as store:
        store.register(specs)
        rid = specs[2].run_id
        store.mark_running(rid, "h")
        store.record_failure(rid, "boom", "Traceback ...", final=False)
        assert store.statuses([rid])[rid] == "pending"
        store.mark_running(rid, "h")
        store.record_failure(rid, "boom again", "Traceback ...", final=True)
        assert store.statuses([rid])[rid] == "failed"
        ev = store.events([rid])
        assert list(ev.attempt) == [1, 2] and list(ev.message) == ["boom", "boom again"]
        assert store.reset_failed([rid]) == 1 and store.statuses([rid])[rid] == "pending"


def test_recover_stale_running(tmp_path, specs):
    with Store(tmp_path / "s.sqlite") as store:
        store.register(specs)
        store.mark_running(specs[0].run_id, "dead-driver")
        assert store.recover_stale() == 1
        assert store.statuses([specs[0].run_id])[specs[0].run_id] == "pending"


def test_recover_stale_keeps_reattached_runs_and_worker_placements(tmp_path, specs):
    a, b = specs[0].run_id, specs[1].run_id
    with Store(tmp_path / "s.sqlite") as store:
        store.register(specs)
        store.mark_running(a, "h:1:slurm")
        store.mark_running(b, "h:1:slurm")
        store.set_workers([(a, "h:1:slurm:123_0"), (b, "h:1:slurm:123_1")])
        assert store.running() == {a: ("h:1:slurm:123_0", 1), b: ("h:1:slurm:123_1", 1)}
        assert store.running([b]) == {b: ("h:1:slurm:123_1", 1)}
        store.log_event("adopted", "re-attached", run_id=a, attempt=1)
        assert store.recover_stale(keep=[a]) == 1
        assert store.statuses([a, b]) == {a: "running", b: "pending"}
        assert store.running() == {a: ("h:1:slurm:123_0", 1)}
        ev = store.events()
        assert list(zip(ev.run_id, ev.kind, ev.attempt, strict=True)) == [(a, "adopted", 1), (b, "interrupted", 1)]
        store.set_workers([(b, "h:2:slurm:9")])  # only running runs are touched
        assert store.conn.execute("SELECT worker FROM runs WHERE run_id=?", (b,)).fetchone() == ("h:1:slurm:123_1",)


def test_renamed_masker_relabels_old_results(tmp_path, specs):
    with Store(tmp_path / "s.sqlite") as store:
        store.register(specs)
        store.record_result(fake_result(specs[1]))
        data = tiny_protocol_dict()
        data["maskers"][1]["name"] = "tokmask"
        renamed = expand(parse_protocol(data))
        assert store.load_runs(renamed).masker.tolist() == ["tokmask"]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(tmp_path, specs, fmt):
    with Store(tmp_path / "s.sqlite") as store:
        store.register(specs)
        store.record_result(fake_result(specs[0]))
        files = store.export(tmp_path / "out", fmt)
    assert {f.name for f in files} == {f"{t}.{fmt}" for t in ("runs", "metrics", "predictions", "events")}
    runs = pd.read_csv(files[0]) if fmt == "csv" else pd.read_parquet(files[0])
    assert len(runs) == 6 and (runs.status == "done").sum() == 1
