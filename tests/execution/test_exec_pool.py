"""The local pool end to end: real `study run` drivers, real worker subprocesses, real SQLite.

Kill -9 of the driver mid-grid and of a worker, a second driver on the same store, an
always-failing cell next to healthy ones, an out-of-memory retry on fake GPU slots, the
environment workers really see, and adding seeds to a finished study.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import time

import pytest
from exectools import (
    alive,
    cli,
    fork_servers,
    query,
    run_env,
    start_cli,
    wait_for,
    worker_pids,
    write_protocol,
)


def check_exactly_once(store, n_runs: int, n_eval: int = 8) -> None:
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    assert query(store, "SELECT COUNT(*) FROM runs WHERE status='done'") == [(n_runs,)]
    assert not query(store, "SELECT 1 FROM runs WHERE status IN ('running', 'pending')")
    assert query(store, "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM predictions") == [(n_runs * n_eval, n_runs)]
    per_run = query(store, "SELECT run_id, COUNT(*) FROM metrics GROUP BY run_id")
    assert len(per_run) == n_runs and len({n for _, n in per_run}) == 1  # same rows for every run, none twice


def test_failures_oom_killed_worker_and_worker_environment(tmp_path):
    """One grid on 2 fake GPUs × 2 runs per GPU: a healthy cell, an always-failing cell, a cell
    whose first attempt runs out of GPU memory, and a cell whose worker we kill -9 mid-run."""
    path = write_protocol(
        tmp_path,
        maskers=[{"name": "none", "kind": "none"},
                 {"name": "boom", "kind": "test-fault", "fail": "always"},
                 {"name": "oom-once", "kind": "test-fault", "fail": "once", "error": "oom",
                  "marker": str(tmp_path / "oom-marker")},
                 {"name": "slow", "kind": "test-fault", "sleep_s": 60, "marker": str(tmp_path / "slow-marker")}],
        execution={"runs_per_gpu": 2, "max_attempts": 2, "deterministic": True})
    store = tmp_path / "runs" / "exec.sqlite"
    log = tmp_path / "d.log"
    driver = start_cli("run", path, "--gpus", "2", cwd=tmp_path, log=log)  # 2 fake GPUs × 2 = 4 slots
    try:
        wait_for(lambda: alive(driver, log) and (tmp_path / "slow-marker").exists(), what="the slow worker mid-run")
        ((slow_id,),) = query(store, "SELECT run_id FROM runs WHERE masker='slow'")
        (pid,) = worker_pids(slow_id)
        os.killpg(pid, signal.SIGKILL)  # the worker's process group (it runs in its own session)
        assert driver.wait(timeout=300) == 1, log.read_text()[-3000:]  # a cell failed; the grid finished
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    text = log.read_text()
    assert "2 GPU(s) [0, 1] × 2 run(s) per GPU = 4 slots" in text
    by_masker = {m: (rid, st, att, worker) for rid, m, st, att, worker in
                 query(store, "SELECT run_id, masker, status, attempts, worker FROM runs")}
    assert by_masker["none"][1:3] == ("done", 1)
    # The always-failing cell: retried, then recorded as failed with its traceback each time.
    boom = by_masker["boom"][0]
    assert by_masker["boom"][1:3] == ("failed", 2)
    events = query(store, "SELECT kind, attempt, traceback FROM events WHERE run_id=? ORDER BY id", boom)
    assert [(k, a) for k, a, _ in events] == [("failure", 1), ("failure", 2)]
    assert all("RuntimeError: injected failure (test-fault masker)" in tb for *_, tb in events)
    # The OOM: recorded, that GPU packs one run fewer, the retry runs on the same GPU (and is free).
    oom_id, status, attempts, worker = by_masker["oom-once"]
    assert (status, attempts) == ("done", 2)
    ((kind, message, tb),) = query(store, "SELECT kind, message, traceback FROM events WHERE run_id=?", oom_id)
    assert kind == "oom" and "OutOfMemoryError" in tb
    gpu = worker.rsplit(":gpu", 1)[1]
    assert f"on gpu{gpu})" in message and f"GPU {gpu}: runs packed 2 -> 1; retrying there" in message
    # The killed worker: recorded as a failed attempt, retried, done.
    assert by_masker["slow"][1:3] == ("done", 2)
    ((kind, attempt, message),) = query(store, "SELECT kind, attempt, message FROM events WHERE run_id=?", slow_id)
    assert (kind, attempt) == ("failure", 1) and message.startswith("worker killed by SIGKILL")
    assert "retry  tweets/minilm-l1/slow/seed0: worker killed by SIGKILL" in text
    check_exactly_once(store, 3)  # (the failed cell has no rows)
    # What the workers saw, set before Python started.
    for rid in (by_masker["none"][0], oom_id, slow_id):
        env = run_env(store, rid)
        assert env["env_vars"]["CUDA_VISIBLE_DEVICES"] in ("0", "1")
        assert env["env_vars"]["PYTHONHASHSEED"] == "0" and env["env_vars"]["OMP_NUM_THREADS"] == "1"
        assert env["env_vars"]["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert env["determinism"]["use_deterministic_algorithms"] is True
        assert {"python", "torch", "transformers", "datasets", "cuda", "cudnn", "gpu", "hostname",
                "git_commit"} <= set(env)
    assert run_env(store, oom_id)["env_vars"]["CUDA_VISIBLE_DEVICES"] == gpu
    status = cli("status", path, "--failures", cwd=tmp_path)
    assert "FAILED   tweets/minilm-l1/boom/seed0 after 2 attempt(s)" in status.stdout
    assert "RuntimeError: injected failure" in status.stdout


def test_kill_driver_mid_grid_then_resume_and_add_seeds(tmp_path):
    maskers = [{"name": "none", "kind": "none"},  # runs first (one CPU slot), then the slow one is killed mid-run
               {"name": "slow", "kind": "test-fault", "sleep_s": 60, "marker": str(tmp_path / "slow-marker")}]
    path = write_protocol(tmp_path, maskers=maskers)
    store = tmp_path / "runs" / "exec.sqlite"
    work = str(tmp_path / "runs" / "exec.work")
    driver = start_cli("run", path, cwd=tmp_path, log=tmp_path / "a.log")
    try:
        # The marker appears when the slow worker has loaded everything and sleeps: mid-run.
        wait_for(lambda: alive(driver, tmp_path / "a.log") and (tmp_path / "slow-marker").exists(),
                 what="the second run to be mid-run")
        assert query(store, "SELECT masker, status FROM runs ORDER BY masker") == [("none", "done"), ("slow", "running")]
        # A second driver on the same store refuses, naming the first.
        second = cli("run", path, cwd=tmp_path)
        assert second.returncode == 3
        assert f"pid {driver.pid} on host {socket.gethostname()}" in second.stderr, second.stderr
        status = cli("status", path, cwd=tmp_path).stdout
        assert f"driver: pid {driver.pid}" in status and "running  tweets/minilm-l1/slow/seed0" in status
        workers, servers = worker_pids(work), fork_servers(work)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        wait_for(lambda: not worker_pids(work) and not fork_servers(work), timeout=10,
                 what="the orphaned worker and fork server to die with their driver")
        assert workers and len(servers) == 1
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert query(store, "SELECT masker, status, attempts FROM runs ORDER BY masker") == [
        ("none", "done", 1), ("slow", "running", 1)]

    # Resume: the stale 'running' row is recovered (its attempt given back) and the grid finishes.
    resumed = cli("run", path, cwd=tmp_path)  # (the slow masker sleeps only in its first attempt)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 interrupted run(s) set back to pending" in resumed.stderr
    check_exactly_once(store, 2)
    assert query(store, "SELECT masker, attempts FROM runs ORDER BY masker") == [("none", 1), ("slow", 1)]
    assert query(store, "SELECT COUNT(*) FROM events WHERE kind='interrupted'") == [(1,)]
    finished_before = dict(query(store, "SELECT run_id, finished_at FROM runs"))

    # Adding a seed runs only the new runs; plan estimates them from the finished ones first.
    more = write_protocol(tmp_path, seeds=[0, 1], maskers=maskers, execution={"cpu_slots": 2})
    plan = cli("plan", more, cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    assert "2 to run" in plan.stdout and "(measured)" in plan.stdout
    assert "estimate: ~" in plan.stdout and "2 CPU slot(s)" in plan.stdout
    added = cli("run", more, cwd=tmp_path)
    assert added.returncode == 0, added.stderr[-3000:]
    assert "4 runs (2 new), 2 done, 0 failed, 2 to run" in added.stderr
    check_exactly_once(store, 4)
    after = dict(query(store, "SELECT run_id, finished_at FROM runs"))
    assert all(after[r] == t for r, t in finished_before.items())  # nothing re-ran


@pytest.mark.slow
def test_kill_driver_at_random_moments_until_done(tmp_path):
    """kill -9 the driver again and again at random moments (during start-up, claims, worker runs,
    result writes); a last plain `study run` finishes the grid: every run once, store intact."""
    path = write_protocol(tmp_path, seeds=[0, 1], execution={"cpu_slots": 2})
    store = tmp_path / "runs" / "exec.sqlite"
    work = str(tmp_path / "runs" / "exec.work")
    rng = random.Random(0)
    for i in range(6):
        driver = start_cli("run", path, cwd=tmp_path, log=tmp_path / f"kill{i}.log")
        time.sleep(rng.uniform(0.5, 9.0))
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        wait_for(lambda: not worker_pids(work) and not fork_servers(work), timeout=10,
                 what="workers and the fork server to die with their driver")
        assert query(store, "PRAGMA integrity_check") in ([], [("ok",)])
    final = cli("run", path, cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    check_exactly_once(store, 4)
    # Interrupted attempts are given back, never counted as failures.
    assert query(store, "SELECT attempts, COUNT(*) FROM runs GROUP BY attempts") == [(1, 4)]
    assert query(store, "SELECT COUNT(*) FROM events WHERE kind != 'interrupted'") == [(0,)]
