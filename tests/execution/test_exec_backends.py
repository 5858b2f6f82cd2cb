"""Scale-out backends on one CPU box: a local Ray with fake GPUs, and the Slurm code path through
submitit's local executor (including a pre-emption that requeues a running job)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from exectools import cli, query, run_env, start_cli, wait_for, worker_pids, write_protocol


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
    from study.maskers import MASKERS
    from study.maskers.testing import ENTRY, KIND

    monkeypatch.setenv("MASKSTUDY_TEST_MASKERS", "1")  # (inherited by the submitit job and its worker)
    if KIND in MASKERS:  # this session already runs with MASKSTUDY_TEST_MASKERS=1
        yield
        return
    with MASKERS.scoped(KIND, ENTRY):
        yield


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
    job = executor.submit(SlurmRun(), spec.to_json(), 1, str(tmp_path / "results"))
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


def test_slurm_jobs_that_outlive_a_killed_driver_are_reattached_not_resubmitted(tmp_path):
    """kill -9 the driver while its (local-executor) Slurm job runs: the job and its worker live on;
    the next `study run` (with a seed added) re-attaches to it — same attempt, no second
    submission — records its result when it ends, and submits only the new runs beside it."""
    pytest.importorskip("submitit")
    from submitit.core.utils import DelayedSubmission

    folder = tmp_path / "runs" / "slurm"
    marker = tmp_path / "slow-marker"  # (sleeps only in the attempt that creates it: seed 1 is fast)
    maskers = [{"name": "slow", "kind": "test-fault", "sleep_s": 12, "marker": str(marker)},
               {"name": "none", "kind": "none"}]
    execution = {"slurm": {"executor": "local", "gpus_per_task": 0, "time_min": 10, "array_parallelism": 2,
                           "folder": str(folder)}}
    path = write_protocol(tmp_path, maskers=maskers, execution=execution)
    store = tmp_path / "runs" / "exec.sqlite"
    started = time.monotonic()
    driver = start_cli("run", path, "--backend", "slurm", cwd=tmp_path, log=tmp_path / "first.log")
    try:
        def mid_run():
            if driver.poll() is not None:
                raise AssertionError(f"driver exited early:\n{(tmp_path / 'first.log').read_text()[-3000:]}")
            return marker.exists() and query(store, "SELECT 1 FROM runs WHERE masker='none' AND status='done'")

        wait_for(mid_run, what="the slow run to be mid-run and the other one recorded")
        ((slow_id, recorded),) = query(store, "SELECT run_id, worker FROM runs WHERE masker='slow'")
        host, pid, where = recorded.split(":", 2)
        assert (host, pid) == (socket.gethostname(), str(driver.pid)) and where.startswith("slurm:")
        job_id = where.removeprefix("slurm:")  # the local executor's job id: its controller's pid
        (worker,) = worker_pids("maskstudy-", f"SUBMITIT_LOCAL_JOB_ID={job_id}")
        os.kill(driver.pid, signal.SIGKILL)  # the driver only, not its process group
        driver.wait()
        assert process_alive(int(job_id)) and process_alive(worker)  # the job outlived its driver
        assert query(store, "SELECT masker, status, attempts FROM runs ORDER BY masker") == [
            ("none", "done", 1), ("slow", "running", 1)]

        killed = time.monotonic()
        more = write_protocol(tmp_path, seeds=[0, 1], maskers=maskers, execution=execution)
        out = cli("run", more, "--backend", "slurm", cwd=tmp_path)
        print(f"driver killed after {killed - started:.1f}s; the resumed run took {time.monotonic() - killed:.1f}s")
    finally:
        try:  # leftovers of a failed test: the orphaned job stayed in the first driver's process group
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert out.returncode == 0, out.stderr[-3000:]
    assert "re-attached to 1 run(s) still running from the previous driver (not resubmitted)" in out.stderr
    assert "4 runs (2 new), 1 done, 0 failed, 2 to run" in out.stderr  # (no 'interrupted run(s)')
    assert f"start  tweets/minilm-l1/slow/seed0 on slurm:{job_id} (re-attached)" in out.stderr
    assert not process_alive(worker) and not process_alive(int(job_id))

    # Every run done exactly once; the slow run kept its first (and only) attempt.
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
    assert query(store, "SELECT masker, seed, status, attempts FROM runs ORDER BY masker, seed") == [
        ("none", 0, "done", 1), ("none", 1, "done", 1), ("slow", 0, "done", 1), ("slow", 1, "done", 1)]
    assert query(store, "SELECT COUNT(*), COUNT(DISTINCT run_id) FROM predictions") == [(4 * 8, 4)]
    assert query(store, "SELECT run_id, kind, attempt FROM events") == [(slow_id, "adopted", 1)]
    ((now,),) = query(store, "SELECT worker FROM runs WHERE run_id=?", slow_id)
    assert now.endswith(f":slurm:{job_id}") and f":{driver.pid}:" not in now  # the new driver's now
    # One submission per run: the slow run was not submitted a second time.
    submitted = [json.loads(DelayedSubmission.load(p).args[0]) for p in folder.glob("*/*_submitted.pkl")]
    assert sorted((s["masker"]["name"], s["seed"]) for s in submitted) == [
        ("none", 0), ("none", 1), ("slow", 0), ("slow", 1)]
    assert not list((folder / "results").glob("*.json"))


def test_slurm_adopt_leaves_jobs_that_are_gone_to_the_resubmission_path(tmp_path):
    """Only a live submitit job is re-attached: not a run without a recorded job id, not an ended
    job, not a recycled pid (some other process), and nothing with the in-process debug executor."""
    pytest.importorskip("submitit")
    from study.protocol import load_protocol
    from study.scheduler.driver import Job
    from study.scheduler.slurm import SlurmBackend
    from study.spec import expand

    def backend(executor):
        path = write_protocol(tmp_path, execution={"slurm": {"executor": executor, "gpus_per_task": 0,
                                                             "folder": str(tmp_path / "slurm")}})
        return SlurmBackend(load_protocol(path))

    spec = expand(load_protocol(write_protocol(tmp_path)))[0]
    ended = subprocess.Popen(["true"])
    ended.wait()
    jobs = [Job(spec, attempt=1, where=w) for w in ("slurm", f"slurm:{ended.pid}", f"slurm:{os.getpid()}", "cpu0")]
    for executor in ("local", "debug"):
        be = backend(executor)
        assert be.adopt(jobs) == [] and be.inflight() == 0


def test_slurm_adopt_asks_sacct_once_and_keeps_only_unfinished_jobs(tmp_path, monkeypatch):
    """The cluster branch of adopt, against stand-in `srun`/`sacct` commands (no Slurm here): one
    sacct call for all recorded jobs; pending and running array tasks are re-attached, ended or
    unknown ones are not."""
    pytest.importorskip("submitit")
    from study.protocol import load_protocol
    from study.scheduler.driver import Job
    from study.scheduler.slurm import SlurmBackend
    from study.spec import expand

    bin_dir, calls = tmp_path / "bin", tmp_path / "sacct-calls"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "sacct").write_text(
        f"#!/bin/sh\necho \"$@\" >> {calls}\nprintf 'JobID|State|NodeList\\n"
        "9100_0|RUNNING|n1\\n9100_0.batch|RUNNING|n1\\n9100_1|COMPLETED|n1\\n9100_[2-3%%1]|PENDING|None\\n"
        "9101|CANCELLED by 0|n2\\n'\n")
    for f in ("srun", "sacct"):
        (bin_dir / f).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = write_protocol(tmp_path, execution={"slurm": {"executor": "slurm", "folder": str(tmp_path / "slurm")}})
    spec = expand(load_protocol(path))[0]
    recorded = ["9100_0", "9100_1", "9100_2", "9100_3", "9101", "9102"]
    be = SlurmBackend(load_protocol(path))
    adopted = be.adopt([Job(spec, attempt=1, where=f"slurm:{jid}") for jid in recorded])
    assert [j.where for j in adopted] == ["slurm:9100_0", "slurm:9100_2", "slurm:9100_3"]
    assert sorted(be.jobs) == ["9100_0", "9100_2", "9100_3"] and be.inflight() == 3
    assert len(calls.read_text().splitlines()) == 1  # one sacct call asks about every job


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
