"""Readers never fail or stall a run (issue 23 §2).

The store is in WAL mode (``study.store``): a reader works on a snapshot and never blocks the
driver's commits, and the driver never blocks a reader. Every connection waits up to 30 s
(busy timeout) for the rare moments that need a lock (a reader's first open, the driver's
write of a result), so the longest a reader can make a run wait is one such moment, never the
length of its read. Here a plain sqlite3 connection holds a read transaction across the
driver's commits while `study status` and `study analyze` run beside a real `study run`.
A negative control shows the same held read blocks a writer in SQLite's default rollback
journal, so the test can fail.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest
from exectools import alive, cli, query, start_cli, wait_for, write_protocol

MASKERS = [{"name": "none", "kind": "none"}, {"name": "random", "kind": "random-token", "rate": 0.2},
           {"name": "wwm", "kind": "whole-word", "rate": 0.2}]


def hold_a_read_while_the_driver_commits(tmp_path, hold_s: float):
    path = write_protocol(tmp_path, seeds=[0, 1], maskers=MASKERS)  # 6 runs, one CPU slot
    store = tmp_path / "runs" / "exec.sqlite"
    log = tmp_path / "driver.log"
    driver = start_cli("run", path, cwd=tmp_path, log=log)
    try:
        wait_for(lambda: alive(driver, log) and query(store, "SELECT 1 FROM runs WHERE status='running'"),
                 what="a run to start")
        reader = sqlite3.connect(store, timeout=0)  # no waiting at all on the reader's side
        reader.execute("BEGIN")
        (done_then,) = reader.execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone()
        held_since = time.monotonic()
        # While the read is held: `study status` answers, and the driver goes on recording runs.
        status = cli("status", path, cwd=tmp_path, timeout=120)
        assert status.returncode == 0, status.stderr
        wait_for(lambda: alive(driver, log) and query(store, "SELECT COUNT(*) FROM runs WHERE status='done'")[0][0]
                 > done_then, timeout=180, what="the driver to record a run during the held read")
        recorded_after = time.monotonic() - held_since
        time.sleep(max(0.0, hold_s - recorded_after))
        # The held snapshot never moved: the read really spanned the driver's commits.
        assert reader.execute("SELECT COUNT(*) FROM runs WHERE status='done'").fetchone() == (done_then,)
        reader.execute("COMMIT")
        reader.close()
        held = time.monotonic() - held_since
        if query(store, "SELECT COUNT(*) FROM runs WHERE status='done'")[0][0] >= 1:
            analyzed = cli("analyze", path, "--out", tmp_path / "tables", cwd=tmp_path, timeout=300)
            assert analyzed.returncode in (0, 2), analyzed.stderr  # 2: no pair finished yet, said so
            assert "Traceback" not in analyzed.stderr
        assert driver.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    text = log.read_text()
    assert "database is locked" not in text and "Traceback" not in text
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    assert query(store, "SELECT status, COUNT(*) FROM runs GROUP BY status") == [("done", 6)]
    return held, recorded_after


def test_a_held_read_transaction_and_status_never_stall_the_run(tmp_path):
    held, recorded_after = hold_a_read_while_the_driver_commits(tmp_path, hold_s=8)
    assert held >= 8 and recorded_after < held


@pytest.mark.slow
def test_a_read_transaction_held_for_a_minute(tmp_path):
    held, _ = hold_a_read_while_the_driver_commits(tmp_path, hold_s=60)
    assert held >= 60


def test_negative_control_a_held_read_blocks_writers_without_wal(tmp_path):
    """What WAL buys: in the rollback journal a held read transaction makes a writer fail."""
    for mode, blocked in (("DELETE", True), ("WAL", False)):
        db = tmp_path / f"{mode}.sqlite"
        writer = sqlite3.connect(db, timeout=0.5, isolation_level=None)
        writer.execute(f"PRAGMA journal_mode={mode}")
        writer.execute("CREATE TABLE t (x)")
        reader = sqlite3.connect(db, timeout=0)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM t").fetchone()
        try:
            writer.execute("BEGIN IMMEDIATE")
            writer.execute("INSERT INTO t VALUES (1)")
            writer.execute("COMMIT")
            failed = False
        except sqlite3.OperationalError as e:
            assert "locked" in str(e)
            failed = True
        assert failed is blocked, mode
        reader.close()
        writer.close()
