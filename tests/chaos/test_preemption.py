"""Pre-emption and backends (issue 23 §5), all slow and real:

- a Slurm job pre-empted mid-run (submitit's local executor, the signal Slurm sends) is requeued
  through ``checkpoint()`` and resumes from the run's checkpoint, bit-identical to a straight run;
- on Ray, a killed worker's run is retried by the driver and resumes from its checkpoint;
- a sequential study survives real ``kill -9`` of its driver in look 1 and in look 2 and ends
  with the decisions of an undisturbed study (tests/test_sequential_cli.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from exectools import alive, cli, query, start_cli, wait_for, worker_pids
from protocoltools import tiny_protocol_dict, write_protocol

from study.checkpoint import checkpoint_path
from study.protocol import load_protocol
from study.spec import expand

pytestmark = pytest.mark.slow

TRAINING = {"epochs": 2, "batch_size": 16, "learning_rate": 3.0e-4, "max_length": 32, "warmup_ratio": 0.1}
LONG_TASK = [{"name": "tweets", "dataset": "tweets-sentiment", "max_train_examples": 160, "max_eval_examples": 16}]


def long_protocol(tmp_path, **execution):
    """none + Typhoon on 160 tweets (20 steps), a checkpoint every 4 steps."""
    data = tiny_protocol_dict(
        seeds=[0], maskers=[{"name": "none", "kind": "none"}, {"name": "typhoon", "kind": "typhoon", "rate": 0.2}],
        tasks=LONG_TASK, training=TRAINING, store=str(tmp_path / "runs" / "k.sqlite"),
        execution={"threads_per_run": 1, "checkpoint_every_steps": 4, "max_attempts": 2, **execution})
    path = write_protocol(tmp_path, data)
    return path, expand(load_protocol(path))[1]  # the Typhoon run


def test_slurm_preemption_requeues_and_resumes_from_the_checkpoint(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from study.scheduler.slurm import SlurmRun
    from study.train import run_one

    _, spec = long_protocol(tmp_path)
    results = tmp_path / "slurm" / "results"
    ckpt = checkpoint_path(results.parent / "checkpoints", spec.run_id)  # where SlurmRun keeps them
    executor = submitit.AutoExecutor(folder=str(tmp_path / "slurm" / "%j"), cluster="local")
    executor.update_parameters(timeout_min=30, gpus_per_node=0)
    job = executor.submit(SlurmRun(), spec.to_json(), 1, str(results))
    wait_for(lambda: ckpt.is_file(), timeout=600, what="the job's first checkpoint")
    (worker,) = worker_pids("maskstudy-", f"SUBMITIT_LOCAL_JOB_ID={job.job_id}")
    job_process = int(Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[1])
    os.kill(job_process, signal.SIGUSR2)  # what Slurm sends on pre-emption
    out = job.result()
    assert out["returncode"] == 0, out.get("log_tail", "")[-3000:]
    resumed = json.loads(out["result_json"])
    log = "".join(p.read_text() for p in sorted((tmp_path / "slurm").rglob("*_log.*")))
    assert "Caught signal SIGUSR2" in log and "Requeued job" in log
    assert resumed["resumed_from_step"] and resumed["resumed_from_step"] % 4 == 0
    straight = run_one(spec)
    assert resumed["predictions"] == json.loads(json.dumps(straight.predictions))
    assert resumed["masker_state"] == json.loads(json.dumps(straight.masker_state))


def test_ray_killed_worker_is_retried_and_resumes_from_its_checkpoint(tmp_path):
    pytest.importorskip("ray")
    path, spec = long_protocol(tmp_path, ray={"num_cpus": 2})
    store = tmp_path / "runs" / "k.sqlite"
    ckpt = checkpoint_path(tmp_path / "runs" / "k.work" / "checkpoints", spec.run_id)
    log = tmp_path / "driver.log"
    driver = start_cli("run", path, "--backend", "ray", cwd=tmp_path, log=log)
    try:
        wait_for(lambda: alive(driver, log) and ckpt.is_file(), timeout=600, what="the Typhoon run's checkpoint")

        def typhoon_worker():
            for pid in worker_pids("maskstudy-"):
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                spec_file = next((Path(a.decode()) for a in cmd if a.endswith(b"spec.json")), None)
                try:
                    if spec_file and json.loads(spec_file.read_text())["masker"]["kind"] == "typhoon":
                        return pid
                except (OSError, ValueError):
                    continue
            return None

        os.kill(wait_for(typhoon_worker, what="the Typhoon run's worker"), signal.SIGKILL)
        assert driver.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert query(store, "SELECT status, attempts FROM runs WHERE run_id=?", spec.run_id) == [("done", 2)]
    events = query(store, "SELECT kind, message FROM events WHERE run_id=? ORDER BY id", spec.run_id)
    assert events[0][0] == "failure" and "worker killed by SIGKILL" in events[0][1]
    assert events[-1][0] == "resumed" and int(events[-1][1].rsplit(" ", 1)[1]) % 4 == 0
    assert not ckpt.parent.exists() or not list(ckpt.parent.iterdir())


def test_sequential_looks_resume_after_kill_9_of_the_driver(tmp_path):
    data = tiny_protocol_dict(seeds={"start": 0, "count": 4}, store=str(tmp_path / "seq.sqlite"))
    data["maskers"] = [{"name": "none", "kind": "none"},
                       {"name": "class-0", "kind": "test-fault", "favour_class": 0},
                       {"name": "twin", "kind": "test-fault"}]
    data["analysis"] |= {"margin": 0.2}
    data["sequential"] = {"looks": [3, 4], "spending": "obf", "futility": True}
    path = write_protocol(tmp_path, data, "seq.yaml")
    store = tmp_path / "seq.sqlite"

    def kill_when(sql, what):
        log = tmp_path / f"{what}.log"
        driver = start_cli("run", path, cwd=tmp_path, log=log)
        try:
            wait_for(lambda: alive(driver, log) and query(store, sql), timeout=600, what=what)
        finally:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        wait_for(lambda: not worker_pids(str(tmp_path)), timeout=30, what="workers to die with their driver")
        time.sleep(0.5)

    kill_when("SELECT 1 FROM runs WHERE seed < 3 GROUP BY status HAVING status='done' AND COUNT(*) >= 2",
              "look 1 half done")
    kill_when("SELECT 1 FROM runs WHERE seed = 3 AND status = 'running'", "a look-2 run running")
    final = cli("run", path, cwd=tmp_path, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "11 done, 0 failed, 0 pending, 1 stopped early by the sequential design" in final.stderr
    decisions = [json.loads(m) for (m,) in query(store, "SELECT message FROM events WHERE kind='sequential' ORDER BY id")]
    # what the undisturbed study decides (tests/test_sequential_cli.py), each decision recorded once
    assert [(d["treatment"], d["look"], d["n_pairs"], d["decision"]) for d in decisions] == [
        ("class-0", 1, 3, "equivalent"), ("twin", 2, 4, "futile")]
    assert query(store, "SELECT COUNT(*) FROM events WHERE kind='interrupted'")[0][0] >= 2
    assert query(store, "SELECT MAX(attempts) FROM runs") == [(1,)]
    assert query(store, "PRAGMA integrity_check") == [("ok",)]
