"""Scale-out backends on one CPU box: a local Ray with fake GPUs, and the Slurm code path through
submitit's local executor (including a pre-emption that requeues a running job)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from exectools import cli, query, run_env, wait_for, worker_pids, write_protocol


def test_ray_local_cluster_gives_tasks_distinct_gpus(tmp_path):
    pytest.importorskip("ray")
    path = write_protocol(tmp_path, execution={"ray": {"num_cpus": 2, "num_gpus": 2}})
    out = cli("run", path, "--backend", "ray", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ray: a local Ray, 2 GPU(s) × 1 run(s) per GPU, at most 2 runs in flight" in out.stderr
    store = tmp_path / "runs" / "exec.sqlite"
    rows = query(store, "SELECT run_id, status, worker FROM runs")
    assert [st for _, st, _ in rows] == ["done", "done"]
    assert all(w.endswith(":ray:gpu/1") for *_, w in rows)  # num_gpus = 1 / runs_per_gpu
    devices = sorted(run_env(store, rid)["env_vars"]["CUDA_VISIBLE_DEVICES"] for rid, _, _ in rows)
    assert devices == ["0", "1"]  # Ray gave each task its own (fake) GPU, and the worker saw it


def test_slurm_backend_through_submitit_local_executor(tmp_path):
    pytest.importorskip("submitit")
    folder = tmp_path / "runs" / "slurm"
    path = write_protocol(tmp_path, execution={"slurm": {"executor": "local", "gpus_per_task": 0, "time_min": 10,
                                                         "array_parallelism": 2, "folder": str(folder)}})
    out = cli("run", path, "--backend", "slurm", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "slurm (local executor): job arrays of ≤ 2 parallel tasks" in out.stderr
    store = tmp_path / "runs" / "exec.sqlite"
    assert query(store, "SELECT status, COUNT(*) FROM runs GROUP BY status") == [("done", 2)]
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    assert not list((folder / "results").glob("*.json"))  # copies for crash recovery, removed once recorded
    assert len([p for p in folder.iterdir() if p.name.isdigit()]) == 2  # one submitit job per run


@pytest.fixture
def test_fault_here(monkeypatch):
    """Register the test-fault kind in this process for one test (to build its spec), then remove it."""
    import sys

    from study.registry import MASKERS

    monkeypatch.setenv("MASKSTUDY_TEST_MASKERS", "1")  # (inherited by the submitit job and its worker)
    import study.maskers.testing  # noqa: F401

    yield
    MASKERS._items.pop("test-fault", None)
    sys.modules.pop("study.maskers.testing", None)


def test_slurm_job_preempted_mid_run_is_requeued(tmp_path, test_fault_here):
    """A pre-emption signal (USR2) reaches the job mid-run: its worker is killed, submitit requeues
    the checkpointable job, and the rerun returns the result. (The local executor's own
    ``job._interrupt()`` signals its controller, not the job, so the test signals the job.)"""
    submitit = pytest.importorskip("submitit")
    from study.protocol import load_protocol
    from study.scheduler.slurm import SlurmRun
    from study.spec import expand

    marker = tmp_path / "slow-marker"
    path = write_protocol(tmp_path, maskers=[
        {"name": "slow", "kind": "test-fault", "sleep_s": 120, "marker": str(marker)},
        {"name": "none", "kind": "none"}])
    spec = expand(load_protocol(path))[0]
    executor = submitit.AutoExecutor(folder=str(tmp_path / "slurm" / "%j"), cluster="local")
    executor.update_parameters(timeout_min=10, gpus_per_node=0)
    job = executor.submit(SlurmRun(), spec.to_json(), spec.seed, 1, str(tmp_path / "results"))
    wait_for(lambda: marker.exists(), what="the job's worker to be mid-run")
    mine = f"SUBMITIT_LOCAL_JOB_ID={job.job_id}"
    (first_worker,) = worker_pids("maskstudy-", mine)  # the worker runs in a private temp folder
    job_process = int(Path(f"/proc/{first_worker}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(job_process, signal.SIGUSR2)  # what Slurm sends a job step on pre-emption (submitit's signal)
    out = job.result()  # blocks until the requeued job finishes
    assert out["returncode"] == 0 and json.loads(out["result_json"])["run_id"] == spec.run_id
    assert first_worker not in worker_pids("maskstudy-", mine)
    log = "".join(p.read_text() for p in sorted((tmp_path / "slurm").rglob("*_log.*")))
    # (the local executor cannot tell pre-emption from time-out; both take the same requeue path)
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    assert (tmp_path / "results" / f"{spec.run_id}.json").exists()  # the copy a restarted driver would collect
