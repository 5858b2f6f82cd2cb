"""Helpers for the execution tests: tiny real protocols, the real CLI in a subprocess, store reads.

Runs are real (1-layer pretrained MiniLM, 16 tweets, one epoch): a worker takes a few seconds,
mostly imports. ``MASKSTUDY_TEST_MASKERS=1`` makes the ``test-fault`` masker kind available to
the driver and its workers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

TINY = {
    "name": "exec",
    "seeds": [0],
    "tasks": [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 16, "max_eval_examples": 8}],
    "models": [{"name": "minilm-l1", "source": "builtin:minilm-l6", "num_hidden_layers": 1}],
    "maskers": [{"name": "none", "kind": "none"}, {"name": "random", "kind": "random-token", "rate": 0.2}],
    "training": {"epochs": 1, "batch_size": 8, "learning_rate": 1.0e-4, "max_length": 16},
    "analysis": {"baseline": "none", "n_boot": 200},
    "execution": {"threads_per_run": 1},
}


def write_protocol(tmp: Path, name: str = "p.yaml", **overrides) -> Path:
    data = json.loads(json.dumps(TINY))
    data["store"] = str(tmp / "runs" / "exec.sqlite")
    for key, value in overrides.items():
        if key == "execution":
            data["execution"] = {**data["execution"], **value}
        else:
            data[key] = value
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def env() -> dict:
    return {**os.environ, "MASKSTUDY_TEST_MASKERS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "study.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env(), timeout=timeout)


def start_cli(*args, cwd: Path, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "study.cli", *map(str, args)], cwd=cwd, env=env(),
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def query(store: Path, sql: str, *params) -> list[tuple]:
    """Read the store the way a user would (read-only, while a driver may be writing)."""
    if not Path(store).exists():
        return []
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        con.close()


def alive(driver, log) -> bool:
    """True while the driver runs; fails the test with its log if it exited early."""
    if driver.poll() is not None:
        raise AssertionError(f"driver exited early ({driver.returncode}):\n{log.read_text()[-3000:]}")
    return True


def wait_for(predicate, timeout: float = 180, every: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def live_processes(with_environ: bool = False):
    """(pid, command line, stdout target, initial environment) of every live, non-zombie process."""
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if (d / "stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (d / "environ").read_bytes().decode(errors="replace").split("\0") if with_environ else []
        except OSError:
            continue
        try:
            stdout = os.readlink(d / "fd" / "1")
        except OSError:
            stdout = ""
        yield int(d.name), cmd, stdout, environ


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: state, ppid, ... (["gone"] once the process is gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return ["gone"]


def worker_pids(marker: str, env_marker: str | None = None) -> list[int]:
    """Live worker processes whose command line (spawned) or log file (forked) mentions ``marker``
    (e.g. a run id) and, if given, whose environment holds ``env_marker`` (e.g.
    ``SUBMITIT_LOCAL_JOB_ID=123``; forked workers keep their server's initial environment)."""
    return [pid for pid, cmd, stdout, environ in live_processes(with_environ=env_marker is not None)
            if (("study.worker" in cmd and marker in cmd)  # spawned
                or ("study.scheduler.forkserver" in cmd and marker in stdout))  # forked: its own log
            and (not env_marker or env_marker in environ)]


def fork_servers(marker: str) -> list[int]:
    """Live fork servers whose command line (their warm-up plan's path) mentions ``marker``. (Its
    forked workers share that command line; they write to a log, the server to a pipe.)"""
    return [pid for pid, cmd, stdout, _ in live_processes()
            if "study.scheduler.forkserver" in cmd and marker in cmd and stdout.startswith("pipe:")]


def run_env(store: Path, run_id: str) -> dict:
    (value,) = query(store, "SELECT env FROM runs WHERE run_id=?", run_id)[0]
    return json.loads(value)
