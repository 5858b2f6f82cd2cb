"""The results store: one SQLite file (WAL) per study, written only by the driver.

Tables (names are stable: users query them with plain ``sqlite3``):

- ``runs``: one row per run_id — ``status`` (pending | running | done | failed), ``attempts``,
  ``spec`` (JSON), the labels (study, task, model, masker, masker_kind, seed), the result
  (primary_metric, value), timings, realised masking rate, fingerprints, env JSON.
- ``metrics``: (run_id, epoch, name, value, is_final) — every evaluation of every epoch: the
  eval split's metrics under their own names (``accuracy``, ``macro_f1``, ``train_loss``), the
  validation split's (when the task has one) as ``validation:<name>``. ``is_final`` marks the
  epoch whose eval metrics are the run's result: the last, or with ``training.select: best``
  the selected one (so the selected epoch is the one epoch with ``is_final = 1``).
- ``predictions``: (run_id, example_id, label, prediction, score) — the evaluation of the
  ``is_final`` epoch; token classification: one row per scored word, example_id
  ``<sentence id>:<word index>``.
- ``generations``: (run_id, example_id, generation, stats) — generation tasks (seq2seq): the text
  the ``is_final`` epoch's model generated for each eval example, and the primary metric's
  per-example sufficient statistics (JSON list, :func:`analysis.textmetrics.example_stats`), from
  which the run's ``value`` is the corpus score.
- ``refs``: (data_fp, example_id, ref_index, text) — the references of generation tasks' eval
  examples, once per data fingerprint (the runs' ``data_fp``).
- ``events``: failures and notices with tracebacks.
- ``meta``: ``schema_version`` (see ``study.storecheck``), ``study`` (the name of the study whose
  runs were registered first; the store refuses other studies) and ``driver`` (the lock).

A run becomes ``done`` in the same transaction that writes its metrics and predictions, so a
crash at any moment leaves either a complete run or none.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from study.errors import ProtocolError
from study.results import RunResult
from study.spec import RunSpec
from study.storecheck import SCHEMA_VERSION, check_store

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    task TEXT NOT NULL, model TEXT NOT NULL, masker TEXT NOT NULL, masker_kind TEXT NOT NULL,
    seed INTEGER NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL, started_at REAL, finished_at REAL,
    worker TEXT,
    primary_metric TEXT, value REAL,
    wall_time_s REAL, train_time_s REAL, train_examples_per_s REAL,
    realised_mask_rate REAL,
    data_fp TEXT, data_order_fp TEXT, head_init_fp TEXT,
    env TEXT, masker_stats TEXT, masker_state TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    epoch INTEGER NOT NULL, name TEXT NOT NULL, value REAL, is_final INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, epoch, name)
);
CREATE TABLE IF NOT EXISTS predictions (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    example_id TEXT NOT NULL, label INTEGER NOT NULL, prediction INTEGER NOT NULL, score REAL,
    PRIMARY KEY (run_id, example_id)
);
CREATE TABLE IF NOT EXISTS generations (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    example_id TEXT NOT NULL, generation TEXT NOT NULL, stats TEXT NOT NULL,
    PRIMARY KEY (run_id, example_id)
);
CREATE TABLE IF NOT EXISTS refs (
    data_fp TEXT NOT NULL, example_id TEXT NOT NULL, ref_index INTEGER NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (data_fp, example_id, ref_index)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT, time REAL NOT NULL, kind TEXT NOT NULL, attempt INTEGER,
    message TEXT, traceback TEXT
);
CREATE INDEX IF NOT EXISTS runs_status ON runs(status);
CREATE INDEX IF NOT EXISTS events_run ON events(run_id);
"""

EXPORT_TABLES = ("runs", "metrics", "predictions", "events", "references")
RUN_COLUMNS = ["study", "run_id", "task", "model", "masker", "masker_kind", "seed", "status", "metric",
               "value", "accuracy", "data_order_fp", "head_init_fp", "data_fp", "realised_mask_rate",
               "wall_time_s", "train_examples_per_s", "attempts"]


def _labels(spec: RunSpec) -> dict:
    """A run's labels from its spec. ``rate`` is the masker's ``rate`` parameter (0 for the
    ``none`` masker, NaN for a kind without one) and ``sweep`` its kind and every other parameter:
    maskers of one sweep differ only in rate (``analysis.rate_response``)."""
    params = {k: v for k, v in spec.masker.items() if k not in ("name", "kind", "rate")}
    rate = 0.0 if spec.masker["kind"] == "none" else float(spec.masker.get("rate", float("nan")))
    sweep = spec.masker["kind"] + (f"({', '.join(f'{k}={v}' for k, v in sorted(params.items()))})"
                                   if params else "")
    return {"run_id": spec.run_id, "study": spec.study, "task": spec.task["name"], "model": spec.model["name"],
            "masker": spec.masker["name"], "masker_kind": spec.masker["kind"], "seed": spec.seed,
            "rate": rate, "sweep": sweep}


def _make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    try:
        for f in reversed(missing):
            f.mkdir(exist_ok=True)  # (another process may create it at the same moment)
    except OSError as e:
        for f in missing:
            if f.exists():
                f.rmdir()
        raise ProtocolError(None, "store", f"cannot create the folder {e.filename} ({e.strerror})",
                            "point `store:` at a path in a folder you can write") from None
    return missing[::-1]


VALIDATION_PREFIX = "validation:"  # metrics-table names of the validation split's metrics


def _epoch_metrics(epoch: dict) -> dict:
    return {**epoch["metrics"], "train_loss": epoch["train_loss"],
            **{VALIDATION_PREFIX + k: v for k, v in epoch.get("validation_metrics", {}).items()}}


class Store:
    def __init__(self, path: str | Path, study: str | None = None):
        """Open (or create) the store at ``path``; with ``study``, refuse the store of another study.

        Raises ProtocolError (a UserError: exit 2 in the CLI) for a path that is not, and cannot
        become, a results store; a failed first open leaves no file or folder behind.
        """
        self.path = Path(path)
        check_store(self.path, study)
        new_folders = _make_folders(self.path.parent)
        is_new = not self.path.exists()
        try:
            # The driver may write from slot threads; it serialises them itself, so sharing is safe.
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.executescript(SCHEMA)  # idempotent (IF NOT EXISTS), safe for concurrent openers
            self.conn.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.Error as e:
            if hasattr(self, "conn"):
                self.conn.close()
            if is_new:
                for leftover in (self.path, *(Path(f"{self.path}{s}") for s in ("-wal", "-shm", "-journal"))):
                    leftover.unlink(missing_ok=True)
            for folder in reversed(new_folders):
                folder.rmdir()
            raise ProtocolError(None, "store", f"cannot open the results store {self.path} ({e})",
                                "check that its folder can be written, or point `store:` at a new file") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @contextmanager
    def transaction(self):
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # -- writing (driver only) -------------------------------------------------------------
    def register(self, specs: Iterable[RunSpec]) -> int:
        """Add runs not yet known as pending; returns how many were new. Known runs are untouched."""
        now = time.time()
        rows = [(s.run_id, s.study, s.task["name"], s.model["name"], s.masker["name"], s.masker["kind"],
                 s.seed, s.to_json(), now) for s in specs]
        with self.transaction() as c:
            # The first registration names the store's study (check_store refuses other studies).
            if rows:
                c.execute("INSERT OR IGNORE INTO meta VALUES ('study', ?)", (rows[0][1],))
            before = c.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            c.executemany("INSERT OR IGNORE INTO runs (run_id, study, task, model, masker, masker_kind, seed,"
                          " spec, created_at) VALUES (?,?,?,?,?,?,?,?,?)", rows)
            return c.execute("SELECT COUNT(*) FROM runs").fetchone()[0] - before

    def mark_running(self, run_id: str, worker: str) -> int:
        """Claim a run for an attempt; returns the attempt number (1-based)."""
        with self.transaction() as c:
            c.execute("UPDATE runs SET status='running', attempts=attempts+1, started_at=?, worker=? "
                      "WHERE run_id=?", (time.time(), worker, run_id))
            return c.execute("SELECT attempts FROM runs WHERE run_id=?", (run_id,)).fetchone()[0]

    def record_result(self, result: RunResult) -> None:
        """Write everything about a finished run and mark it done, atomically."""
        fp = result.fingerprints
        with self.transaction() as c:
            c.execute("DELETE FROM metrics WHERE run_id=?", (result.run_id,))
            c.execute("DELETE FROM predictions WHERE run_id=?", (result.run_id,))
            c.execute("DELETE FROM generations WHERE run_id=?", (result.run_id,))
            final = result.selected_epoch or result.epochs[-1]["epoch"]
            c.executemany(
                "INSERT INTO metrics VALUES (?,?,?,?,?)",
                [(result.run_id, e["epoch"], name, value, int(e["epoch"] == final))
                 for e in result.epochs for name, value in _epoch_metrics(e).items()])
            c.executemany("INSERT INTO predictions VALUES (?,?,?,?,?)",
                          [(result.run_id, str(i), int(y), int(p), float(s)) for i, y, p, s in result.predictions])
            c.executemany("INSERT INTO generations VALUES (?,?,?,?)",
                          [(result.run_id, str(i), text, json.dumps(stats)) for i, text, stats in result.generations])
            c.executemany("INSERT OR IGNORE INTO refs VALUES (?,?,?,?)",
                          [(fp.get("data"), str(i), int(k), text) for i, k, text in result.references])
            updated = c.execute(
                "UPDATE runs SET status='done', finished_at=?, primary_metric=?, value=?, wall_time_s=?,"
                " train_time_s=?, train_examples_per_s=?, realised_mask_rate=?, data_fp=?, data_order_fp=?,"
                " head_init_fp=?, env=?, masker_stats=?, masker_state=? WHERE run_id=?",
                (time.time(), result.primary_metric, result.final_metrics[result.primary_metric],
                 result.wall_time_s, result.train_time_s, result.train_examples_per_s, result.realised_mask_rate,
                 fp.get("data"), fp.get("data_order"), fp.get("head_init"), json.dumps(result.env),
                 json.dumps(result.masker_stats), json.dumps(result.masker_state), result.run_id)).rowcount
            if updated != 1:
                raise KeyError(f"run {result.run_id} is not registered in {self.path}")

    def set_workers(self, placements: Iterable[tuple[str, str]]) -> None:
        """Refine where running attempts run, once a backend knows (e.g. ``host:pid:slurm:<job id>``
        after the job array was submitted): a later driver re-attaches to such jobs instead of
        resubmitting them. ``placements``: (run_id, worker) pairs; runs no longer running are untouched."""
        with self.transaction() as c:
            c.executemany("UPDATE runs SET worker=? WHERE run_id=? AND status='running'",
                          [(worker, run_id) for run_id, worker in placements])

    def record_failure(self, run_id: str, message: str, traceback: str = "", final: bool = False,
                       kind: str = "failure") -> None:
        with self.transaction() as c:
            attempt = c.execute("SELECT attempts FROM runs WHERE run_id=?", (run_id,)).fetchone()
            c.execute("INSERT INTO events (run_id, time, kind, attempt, message, traceback) VALUES (?,?,?,?,?,?)",
                      (run_id, time.time(), kind, attempt[0] if attempt else None, message, traceback))
            c.execute("UPDATE runs SET status=?, finished_at=? WHERE run_id=?",
                      ("failed" if final else "pending", time.time(), run_id))

    def log_event(self, kind: str, message: str, run_id: str | None = None, attempt: int | None = None) -> None:
        with self.transaction() as c:
            c.execute("INSERT INTO events (run_id, time, kind, attempt, message) VALUES (?,?,?,?,?)",
                      (run_id, time.time(), kind, attempt, message))

    def recover_stale(self, keep: Iterable[str] = ()) -> int:
        """Runs left 'running' by a dead driver go back to pending; call while holding the driver lock.

        The interrupted attempt is not a failure of the run, so it is given back (and logged as an
        ``interrupted`` event): a driver killed twice never costs a run its retries. Runs in ``keep``
        (attempts the new driver re-attached to, see ``driver.adopt``) stay running.
        """
        keep = set(keep)
        with self.transaction() as c:
            now = time.time()
            stale = [(rid,) for (rid,) in c.execute("SELECT run_id FROM runs WHERE status='running'")
                     if rid not in keep]
            c.executemany("INSERT INTO events (run_id, time, kind, attempt, message) SELECT run_id, ?, 'interrupted',"
                          " attempts, 'attempt interrupted (driver stopped); run set back to pending' FROM runs"
                          " WHERE run_id=?", [(now, rid) for (rid,) in stale])
            c.executemany("UPDATE runs SET status='pending', attempts=MAX(attempts - 1, 0) WHERE run_id=?", stale)
            return len(stale)

    def reset_failed(self, run_ids: Iterable[str]) -> int:
        """Give failed runs a fresh set of attempts (``study run --retry-failed``)."""
        ids = list(run_ids)
        with self.transaction() as c:
            return c.executemany("UPDATE runs SET status='pending', attempts=0 WHERE run_id=? AND status='failed'",
                                 [(i,) for i in ids]).rowcount

    # -- the driver lock (DESIGN.md §6: one driver per store) --------------------------------
    def claim_driver(self, info: dict, holder_alive) -> tuple[dict | None, dict | None]:
        """Atomically make ``info`` (pid, host, token, ...) the store's driver.

        ``holder_alive(previous_info) -> bool`` decides whether a recorded driver still runs.
        Returns ``(live_holder, None)`` when another live driver holds the store (nothing written),
        else ``(None, previous)`` where ``previous`` is a dead driver's record that was replaced.
        """
        with self.transaction() as c:
            row = c.execute("SELECT value FROM meta WHERE key='driver'").fetchone()
            previous = json.loads(row[0]) if row else None
            if previous and previous.get("token") != info.get("token") and holder_alive(previous):
                return previous, None
            c.execute("INSERT OR REPLACE INTO meta VALUES ('driver', ?)",
                      (json.dumps({**info, "heartbeat": time.time()}),))
            return None, previous

    def driver_info(self) -> dict | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key='driver'").fetchone()
        return json.loads(row[0]) if row else None

    def driver_heartbeat(self, token: str) -> None:
        with self.transaction() as c:
            row = c.execute("SELECT value FROM meta WHERE key='driver'").fetchone()
            info = json.loads(row[0]) if row else None
            if info and info.get("token") == token:
                c.execute("UPDATE meta SET value=? WHERE key='driver'", (json.dumps({**info, "heartbeat": time.time()}),))

    def release_driver(self, token: str) -> None:
        with self.transaction() as c:
            row = c.execute("SELECT value FROM meta WHERE key='driver'").fetchone()
            if row and json.loads(row[0]).get("token") == token:
                c.execute("DELETE FROM meta WHERE key='driver'")

    def running(self, run_ids: Iterable[str] | None = None) -> dict[str, tuple[str | None, int]]:
        """Runs marked running: run_id → (worker, attempts). ``worker`` is ``host:pid:where`` of the claim."""
        rows = self.conn.execute("SELECT run_id, worker, attempts FROM runs WHERE status='running'").fetchall()
        wanted = None if run_ids is None else set(run_ids)
        return {rid: (worker, attempts) for rid, worker, attempts in rows if wanted is None or rid in wanted}

    def status_of(self, run_id: str) -> str | None:
        row = self.conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return row[0] if row else None

    # -- reading ---------------------------------------------------------------------------
    def statuses(self, run_ids: Iterable[str] | None = None) -> dict[str, str]:
        rows = self.conn.execute("SELECT run_id, status FROM runs").fetchall()
        found = dict(rows)
        if run_ids is None:
            return found
        return {r: found.get(r, "pending") for r in run_ids}

    def counts(self, run_ids: Iterable[str]) -> dict[str, int]:
        out = {"done": 0, "failed": 0, "running": 0, "pending": 0}
        for status in self.statuses(run_ids).values():
            out[status] += 1
        return out

    def load_runs(self, specs: Iterable[RunSpec] | None = None, status: str | None = "done") -> pd.DataFrame:
        """The analysis frame: one row per run (DESIGN.md §3).

        With ``specs`` (the current protocol's grid) only those runs are returned and their labels
        come from the specs, so renaming a masker in the protocol relabels old results.
        """
        df = pd.read_sql_query(
            "SELECT r.*, m.value AS accuracy FROM runs r LEFT JOIN metrics m ON m.run_id = r.run_id "
            "AND m.name = 'accuracy' AND m.is_final = 1", self.conn)
        df = df.rename(columns={"primary_metric": "metric"})
        if specs is not None:
            labels = pd.DataFrame([_labels(s) for s in specs])
            df = labels.merge(df.drop(columns=["study", "task", "model", "masker", "masker_kind", "seed"]),
                              on="run_id", how="inner")
        if status is not None:
            df = df[df["status"] == status]
        extra = [c for c in df.columns if c not in RUN_COLUMNS]
        return df[RUN_COLUMNS + extra].reset_index(drop=True)

    def load_grid(self, specs: list[RunSpec]) -> pd.DataFrame:
        """Every run of the grid, whatever its status: the store's rows (as ``load_runs``) and a
        ``pending`` row for each spec never started. The analysis counts each masker's finished
        runs from it, so a masker whose runs all failed is named, not silently absent."""
        df = self.load_runs(specs, status=None)
        never = [_labels(s) | {"status": "pending"} for s in specs if s.run_id not in set(df["run_id"])]
        if never:
            df = pd.concat([df, pd.DataFrame(never)], ignore_index=True)
        return df

    def load_predictions(self, specs: Iterable[RunSpec]) -> pd.DataFrame:
        """Per-example predictions of done runs, labelled like ``load_runs``: classification rows
        (label, prediction, score) and, for generation runs, rows with ``generation`` and ``stats``
        (label and prediction NaN) — the frame analysis.analyze reads."""
        runs = self.load_runs(specs)[["run_id", "task", "model", "masker", "seed"]]
        preds = pd.read_sql_query("SELECT p.* FROM predictions p JOIN runs r ON r.run_id = p.run_id "
                                  "WHERE r.status = 'done'", self.conn)
        gens = pd.read_sql_query("SELECT g.* FROM generations g JOIN runs r ON r.run_id = g.run_id "
                                 "WHERE r.status = 'done'", self.conn)
        if not gens.empty:
            preds = pd.concat([preds, gens], ignore_index=True)
        return runs.merge(preds, on="run_id", how="inner")

    def load_generations(self, specs: Iterable[RunSpec]) -> pd.DataFrame:
        """Per-example generations of done runs (``run_id, task, model, masker, seed, example_id,
        generation, stats``), labelled like ``load_runs``; empty when no run generated."""
        runs = self.load_runs(specs)[["run_id", "task", "model", "masker", "seed"]]
        gens = pd.read_sql_query("SELECT g.* FROM generations g JOIN runs r ON r.run_id = g.run_id "
                                 "WHERE r.status = 'done'", self.conn)
        return runs.merge(gens, on="run_id", how="inner")

    def load_references(self) -> pd.DataFrame:
        """``task, example_id, ref_index, text`` of every generation task with a done run (the task
        named as in the runs table)."""
        return pd.read_sql_query(
            "SELECT DISTINCT r.task, f.example_id, f.ref_index, f.text FROM refs f "
            "JOIN runs r ON r.data_fp = f.data_fp AND r.status = 'done' ORDER BY r.task, f.example_id, f.ref_index",
            self.conn)

    def load_epoch_metrics(self) -> pd.DataFrame:
        return pd.read_sql_query("SELECT * FROM metrics ORDER BY run_id, epoch, name", self.conn)

    def events(self, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        df = pd.read_sql_query("SELECT * FROM events ORDER BY id", self.conn)
        return df if run_ids is None else df[df["run_id"].isin(set(run_ids))]

    def integrity_check(self) -> str:
        return self.conn.execute("PRAGMA integrity_check").fetchone()[0]

    # -- export ----------------------------------------------------------------------------
    def _export_frame(self, table: str) -> pd.DataFrame:
        """A table as ``study export`` writes it: ``predictions`` holds classification rows and, for
        generation runs, one row per example with its ``generation`` text and ``stats``;
        ``references`` is ``task, example_id, ref_index, text`` (enough to recompute every metric)."""
        if table == "references":
            return self.load_references()
        df = pd.read_sql_query(f"SELECT * FROM {table}", self.conn)
        if table == "predictions":
            gens = pd.read_sql_query("SELECT * FROM generations", self.conn)
            if not gens.empty:
                df = pd.concat([df.assign(generation=pd.NA, stats=pd.NA), gens], ignore_index=True)
        return df

    def export(self, out_dir: str | Path, fmt: str = "csv", specs: Iterable[RunSpec] | None = None,
               tables: Iterable[str] = EXPORT_TABLES, compress: bool = False) -> list[Path]:
        """Write every table to ``out_dir`` as CSV or parquet; returns the files written.

        With ``specs`` (a protocol's grid), only that grid's runs and their rows, labelled by the
        specs as :meth:`load_runs` labels them (a masker renamed in the protocol is published
        under its new name); driver events, which belong to no run, are left out. ``compress``
        gzips CSV files (``<table>.csv.gz``, no timestamp inside: the same rows give the same bytes).
        A generation study also gets ``references`` (see :meth:`_export_frame`).
        """
        if fmt not in ("csv", "parquet"):
            raise ValueError(f"unknown export format {fmt!r}; use csv or parquet")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        labels = None if specs is None else pd.DataFrame([_labels(s) for s in specs])
        written = []
        for table in tables:
            df = self._export_frame(table)
            if table == "references" and df.empty:
                continue  # a classification study: nothing to write
            if labels is not None and "run_id" in df.columns:
                df = df[df["run_id"].isin(set(labels["run_id"]))]
                if table == "runs":  # the specs' labels, in the table's own columns
                    by_id = labels.set_index("run_id")
                    df = df.assign(**{c: df["run_id"].map(by_id[c]) for c in by_id.columns if c in df.columns})
            path = out_dir / f"{table}.{fmt}"
            if fmt == "csv":
                if compress:
                    path = path.with_name(path.name + ".gz")
                df.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0} if compress else None)
            else:
                df.to_parquet(path, index=False)
            written.append(path)
        return written
