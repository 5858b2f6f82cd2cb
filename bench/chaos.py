"""Random kill -9 against `study run`, then a comparison with an undisturbed run of the same grid.

    .venv/bin/python bench/chaos.py                 # 50 kills
    .venv/bin/python bench/chaos.py --kills 15 --seed 1 --keep /tmp/chaos   # keep the stores and logs

The grid: 12 runs (maskers none, random-token and Typhoon — whose EMA is state a resume must
restore — × 4 seeds), 1-layer MiniLM on 24 tweets, 2 epochs of 3 steps, a mid-run checkpoint
every 2 optimizer steps, fp32 on the CPU, one thread per run, ``--slots`` runs at a time.

First the grid runs once undisturbed, without checkpoints: the reference. Then a real
`study run` on a fresh store is killed ``--kills`` times with SIGKILL at random moments
(uniform in ``--min-wait``..``--max-wait`` seconds after the previous start or kill): either
the driver's process group (its workers and fork server die with it; the next `study run`
resumes) or one live worker (the driver retries the run, which resumes from its checkpoint).
If the grid finishes before all kills are spent, its store is checked and a new round starts on
a fresh store. After the last kill a plain `study run` finishes the grid.

Prints, over all rounds: ``N kills: L lost, D duplicated, X differing from an undisturbed run,
R resumed from checkpoints``, where *lost* counts runs not done at the end, *duplicated* runs
recorded twice (a done run whose ``finished_at`` later changed, or with more rows than one
result has), *differing* runs whose any prediction (label, prediction, score), any epoch metric
or masker state differs in any bit from the reference, and *resumed* the ``resumed`` events;
then the attempts per run and each store's ``PRAGMA integrity_check``. Exit code 0 exactly when
nothing was lost, duplicated or differing and every store is intact.

Only processes this script started are killed: the driver it launched and workers whose command
line or log file lies in its own work folder.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
MASKERS = [{"name": "none", "kind": "none"}, {"name": "random", "kind": "random-token", "rate": 0.2},
           {"name": "typhoon", "kind": "typhoon", "rate": 0.2}]


def protocol(folder: Path, slots: int, checkpoints: bool) -> Path:
    data = {
        "name": "chaos",
        "seeds": [0, 1, 2, 3],
        "tasks": [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 24, "max_eval_examples": 16}],
        "models": [{"name": "minilm-l1", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
        "maskers": MASKERS,
        "training": {"epochs": 2, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16},
        "analysis": {"baseline": "none", "n_boot": 200},
        "execution": {"threads_per_run": 1, "cpu_slots": slots, "max_attempts": 20,
                      **({"checkpoint_every_steps": 2} if checkpoints else {})},
        "store": str(folder / "runs" / "chaos.sqlite"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chaos.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1"}


def start(path: Path, log: Path) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(path)], cwd=path.parent, env=env(),
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def run_to_the_end(path: Path, log: Path) -> None:
    """A plain `study run` to the end (exit 1, runs failed, shows up as lost runs)."""
    proc = start(path, log)
    if proc.wait() not in (0, 1):
        raise SystemExit(f"`study run {path}` failed ({proc.returncode}); see {log}")


def our_workers(folder: Path) -> list[int]:
    """Live worker processes of this script's grid: spawned (``study.worker`` with a spec in
    ``folder``) or forked (the fork server's command line, writing to a log in ``folder``)."""
    mine = str(folder)
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stdout = os.readlink(d / "fd" / "1")
        except OSError:
            continue
        if ("study.worker" in cmd and mine in cmd) or ("study.scheduler.forkserver" in cmd and mine in stdout
                                                       and "/logs/" in stdout and ".attempt" in stdout):
            pids.append(int(d.name))
    return pids


def our_processes(folder: Path) -> list[int]:
    """Every live process whose command line mentions ``folder`` (workers, fork servers)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    continue
                cmd = (d / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if str(folder) in cmd:
                pids.append(int(d.name))
    return pids


def wait_until_gone(folder: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while our_processes(folder) and time.monotonic() < deadline:
        time.sleep(0.1)


def read(store: Path, sql: str) -> list[tuple]:
    if not store.exists():
        return []
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql).fetchall()
    except sqlite3.OperationalError:  # no tables yet (killed during the first start)
        return []
    finally:
        con.close()


def results(store: Path) -> dict[str, tuple]:
    """run_id → everything a run computed: predictions, epoch metrics, value, masker state, fingerprints."""
    out = {}
    for rid, value, state, rate, order_fp, head_fp in read(
            store, "SELECT run_id, value, masker_state, realised_mask_rate, data_order_fp, head_init_fp FROM runs "
                   "WHERE status='done'"):
        preds = read(store, f"SELECT example_id, label, prediction, score FROM predictions WHERE run_id='{rid}' "
                            "ORDER BY example_id")
        metrics = read(store, f"SELECT epoch, name, value, is_final FROM metrics WHERE run_id='{rid}' "
                              "ORDER BY epoch, name")
        out[rid] = (preds, metrics, value, state, rate, order_fp, head_fp)
    return out


class Round:
    """One fresh store driven through kills until its grid is done."""

    def __init__(self, folder: Path, slots: int):
        self.folder = folder
        self.path = protocol(folder, slots, checkpoints=True)
        self.store = folder / "runs" / "chaos.sqlite"
        self.log = folder / "driver.log"
        self.first_finished: dict[str, float] = {}
        self.duplicated: set[str] = set()
        self.driver: subprocess.Popen | None = None
        self.starts = 0

    def watch(self) -> None:
        """Note when each run was first recorded; a later change means it was recorded twice."""
        for rid, finished in read(self.store, "SELECT run_id, finished_at FROM runs WHERE status='done'"):
            if self.first_finished.setdefault(rid, finished) != finished:
                self.duplicated.add(rid)

    def ensure_driver(self) -> None:
        if self.driver is None or self.driver.poll() is not None:
            self.driver = start(self.path, self.log)
            self.starts += 1

    def done(self) -> bool:
        """The driver ended by itself: the grid is done (0) or has failed runs (1, counted as lost)."""
        return self.driver is not None and self.driver.poll() in (0, 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slots", type=int, default=2, help="runs at a time (CPU slots)")
    ap.add_argument("--min-wait", type=float, default=0.5)
    ap.add_argument("--max-wait", type=float, default=40.0,
                    help="longest wait before a kill (a driver takes ~25 s to start its first runs here)")
    ap.add_argument("--worker-share", type=float, default=0.5, help="share of kills aimed at one worker")
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder, removed)")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    base = Path(args.keep or tempfile.mkdtemp(prefix="maskstudy-chaos-")).absolute()
    base.mkdir(parents=True, exist_ok=True)
    print(f"chaos: 12-run grid (maskers {', '.join(m['kind'] for m in MASKERS)} × 4 seeds), checkpoint every 2 "
          f"steps, {args.slots} CPU slot(s), fp32, 1 thread per run; {args.kills} kills at random moments in "
          f"{args.min_wait:g}-{args.max_wait:g} s, seed {args.seed}; work folder {base}", flush=True)

    t0 = time.monotonic()
    ref_dir = base / "reference"
    run_to_the_end(protocol(ref_dir, args.slots, checkpoints=False), ref_dir / "driver.log")
    reference = results(ref_dir / "runs" / "chaos.sqlite")
    print(f"reference: undisturbed grid, {len(reference)} runs in {time.monotonic() - t0:.0f} s", flush=True)

    rounds = [Round(base / "round1", args.slots)]
    by_target: collections.Counter = collections.Counter()
    in_flight = 0  # kills that came while workers were running (the rest hit a driver starting up or between runs)
    t0 = time.monotonic()
    for k in range(args.kills):
        r = rounds[-1]
        r.ensure_driver()
        time.sleep(rng.uniform(args.min_wait, args.max_wait))
        r.watch()
        if r.done():  # the grid finished before this kill: a fresh store takes the remaining kills
            r = Round(base / f"round{len(rounds) + 1}", args.slots)
            rounds.append(r)
            r.ensure_driver()
            time.sleep(rng.uniform(args.min_wait, args.max_wait))
        workers = our_workers(r.folder)
        target = "worker" if workers and rng.random() < args.worker_share else "driver"
        if target == "worker":
            os.kill(rng.choice(workers), signal.SIGKILL)  # the driver sees a failed attempt and retries
        else:
            try:
                os.killpg(r.driver.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            r.driver.wait()
            wait_until_gone(r.folder)  # workers die with their driver (PDEATHSIG, parent watch)
        by_target[target] += 1
        in_flight += bool(workers)
        r.watch()
        print(f"  kill {k + 1:3d}: {target:6s} (round {len(rounds)}: {len(r.first_finished)} of 12 runs done)",
              flush=True)
    for r in rounds:  # the last round (and any whose driver is still running) goes to the end undisturbed
        if r.driver is not None and r.driver.poll() is None:
            r.driver.wait()
        run_to_the_end(r.path, r.log)
        r.starts += 1
        r.watch()
    chaos_s = time.monotonic() - t0

    lost = duplicated = differing = resumed = 0
    attempts: collections.Counter = collections.Counter()
    integrity = []
    for r in rounds:
        got = results(r.store)
        lost += len(set(reference) - set(got))
        bad_rows = {rid for rid, (preds, metrics, *_) in got.items()
                    if len(preds) != len(reference[rid][0]) or len(metrics) != len(reference[rid][1])}
        duplicated += len(r.duplicated | bad_rows)
        differing += sum(1 for rid, v in got.items() if v != reference.get(rid))
        resumed += read(r.store, "SELECT COUNT(*) FROM events WHERE kind='resumed'")[0][0]
        attempts.update(a for (a,) in read(r.store, "SELECT attempts FROM runs"))
        integrity.append(read(r.store, "PRAGMA integrity_check")[0][0])
    n = by_target.total()
    print(f"{len(rounds)} round(s) of the grid, {sum(r.starts for r in rounds)} driver starts, {chaos_s:.0f} s; "
          f"kills: {by_target['driver']} of the driver's process group, {by_target['worker']} of one worker; "
          f"{in_flight} while runs were in flight")
    print(f"{n} kills: {lost} lost, {duplicated} duplicated, {differing} differing from an undisturbed run, "
          f"{resumed} resumed from checkpoints")
    print("attempts per run: " + ", ".join(f"{a} attempt(s) × {c}" for a, c in sorted(attempts.items())))
    print("PRAGMA integrity_check: " + ", ".join(integrity))
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    ok = lost == duplicated == differing == 0 and all(i == "ok" for i in integrity)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
