"""A tiny real sequential grid through the real CLI: looks, events, runs stopped early, resume
mid-look, status and the report's "Sequential design" section."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from protocoltools import ROOT, tiny_protocol_dict, write_protocol

from study.maskers import testing
from study.maskers.kinds import MASKERS
from study.protocol import load_protocol
from study.scheduler.looks import logged_decisions
from study.spec import expand
from study.store import Store


def _cli(*args, cwd):
    env = {**os.environ, "MASKSTUDY_TEST_MASKERS": "1"}  # the `test-fault` kind: trains like `none`
    return subprocess.run([sys.executable, "-m", "study.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


@pytest.fixture
def fault_kind():
    """The `test-fault` kind in this process too (the CLI's processes get it from the env)."""
    with MASKERS.scoped(testing.KIND, testing.ENTRY):
        yield


def test_sequential_study_runs_look_by_look_and_resumes(tmp_path, fault_kind):
    data = tiny_protocol_dict(seeds={"start": 0, "count": 4}, store=str(tmp_path / "seq.sqlite"))
    # `twin` trains exactly like `none`: zero differences, no test, so it never stops early and
    # runs to the last look. `class-0` predicts class 0 everywhere (a real, known effect; the tiny
    # model's `none` runs predict one seed-dependent class), so its differences from `none` vary
    # by seed and stay far inside the (deliberately wide) 20-point margin: TOST stops it at look 1.
    data["maskers"] = [{"name": "none", "kind": "none"},
                       {"name": "class-0", "kind": "test-fault", "favour_class": 0},
                       {"name": "twin", "kind": "test-fault"}]
    data["analysis"] |= {"margin": 0.2}
    data["sequential"] = {"looks": [3, 4], "spending": "obf", "futility": True}
    path = write_protocol(tmp_path, data, "seq.yaml")
    out = _cli("run", path, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "look 1 of 2 (3 seeds): 9 run(s) for 2 undecided comparison(s)" in out.stderr
    assert "tweets/minilm-l1 class-0 vs none: equivalent at look 1 (3 seed pairs)" in out.stderr
    assert "look 2 of 2 (4 seeds): 2 run(s) for 1 undecided comparison(s)" in out.stderr
    assert "tweets/minilm-l1 twin vs none: futile at look 2 (4 seed pairs)" in out.stderr
    assert "11 done, 0 failed, 0 pending, 1 stopped early by the sequential design" in out.stderr
    p = load_protocol(path)
    specs = expand(p)
    with Store(p.store_path) as store:
        runs = store.load_runs(specs, status=None)
        first = logged_decisions(store.events())
        stopped = runs[runs.status == "pending"]
        assert list(zip(stopped.masker, stopped.seed, strict=True)) == [("class-0", 3)]
        assert first[["treatment", "look", "n_pairs", "decision"]].values.tolist() == [
            ["class-0", 1, 3, "equivalent"], ["twin", 2, 4, "futile"]]
        # resume mid-look: look 2's runs and its decision undone, as if the driver died there
        look2 = runs[(runs.seed == 3) & (runs.status == "done")].run_id.tolist()
        store.conn.execute(f"UPDATE runs SET status='pending' WHERE run_id IN ({','.join('?' * len(look2))})",
                           look2)
        store.conn.execute("DELETE FROM events WHERE kind='sequential' AND message LIKE '%twin%'")
        store.conn.commit()
    status = _cli("status", path, cwd=ROOT)
    assert "1 stopped early by the sequential design" in status.stdout, status.stdout
    assert "2 pending" in status.stdout
    again = _cli("run", path, cwd=ROOT)
    assert again.returncode == 0, again.stderr
    assert "2 to run; 1 stopped early" in again.stderr
    assert "look 2 of 2 (4 seeds): 2 run(s)" in again.stderr and "look 1 of 2" not in again.stderr
    with Store(p.store_path) as store:
        second = logged_decisions(store.events())
    assert second.drop(columns="estimate").values.tolist() == first.drop(columns="estimate").values.tolist()
    assert second.estimate.tolist() == first.estimate.tolist()  # a pure function of the store
    report = _cli("report", path, "--out", tmp_path / "r.pdf", cwd=ROOT)
    assert report.returncode == 0, report.stderr
    from pypdf import PdfReader

    text = "\n".join(pg.extract_text() for pg in PdfReader(tmp_path / "r.pdf").pages)
    for part in ("Sequential design", "Stopped at look", "biased toward larger effects", "Naive"):
        assert part in text, part
