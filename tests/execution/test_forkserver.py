"""The fork server (the local pool's default launcher): forked workers are real, separate
processes that compute exactly what a fresh interpreter computes, and losing the server costs
an attempt, never a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from exectools import alive, cli, proc_stat, query, start_cli, wait_for, worker_pids, write_protocol

from study.scheduler.forkserver import fork_safety


def _runs(store):
    rows = query(store, "SELECT run_id, masker, status, attempts, value, realised_mask_rate, env FROM runs "
                        "ORDER BY run_id")
    return {rid: (m, st, att, val, rate, json.loads(env) if env else {}) for rid, m, st, att, val, rate, env in rows}


def _predictions(store):
    return query(store, "SELECT run_id, example_id, label, prediction, score FROM predictions "
                        "ORDER BY run_id, example_id")


# two threads a run: slow (the default suite keeps the one-thread case, bit for bit)
@pytest.mark.parametrize("threads", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_forked_and_spawned_workers_compute_the_same_runs(tmp_path, threads):
    """One thread per run: bit for bit. Two (as the demo; the server must still be single-threaded,
    OpenBLAS!): the same predictions, scores to 1e-6 — torch's two-thread CPU kernels are not
    bit-reproducible from one process to the next (CI once saw a score differ by 3e-8)."""
    stores = {}
    for start in ("forkserver", "spawn"):
        folder = tmp_path / start
        folder.mkdir()
        path = write_protocol(folder, seeds=[0, 1], execution={"worker_start": start, "threads_per_run": threads})
        out = cli("run", path, cwd=folder)
        assert out.returncode == 0, out.stderr[-3000:]
        assert ("workers forked from a preloaded server" if start == "forkserver" else "workers fresh interpreters") \
            in out.stderr
        assert "fresh interpreter instead" not in out.stderr  # the fork server did not fall back
        stores[start] = folder / "runs" / "exec.sqlite"
    fork, spawn = _runs(stores["forkserver"]), _runs(stores["spawn"])
    assert fork.keys() == spawn.keys() and len(fork) == 4
    for rid in fork:  # same metric, same masking
        assert fork[rid][:5] == spawn[rid][:5] and fork[rid][1] == "done"
    forked, spawned = _predictions(stores["forkserver"]), _predictions(stores["spawn"])
    if threads == 1:  # same per-example predictions and scores, bit for bit
        assert forked == spawned
    else:
        assert [r[:4] for r in forked] == [r[:4] for r in spawned]
        assert max(abs(a[4] - b[4]) for a, b in zip(forked, spawned, strict=True)) < 1e-6
    for runs, start in ((fork, "forkserver"), (spawn, "spawn")):
        envs = [r[5] for r in runs.values()]
        assert {e["env_vars"]["MASKSTUDY_WORKER_START"] for e in envs} == {start}
        assert {e["env_vars"]["PYTHONHASHSEED"] for e in envs} == {"0"}
        assert {e["env_vars"]["CUDA_VISIBLE_DEVICES"] for e in envs} == {""}  # CPU slots see no GPU
        assert {e["env_vars"]["MASKSTUDY_SLOT"] for e in envs} == {"cpu0"}
        assert len({e["pid"] for e in envs}) == 4  # one fresh process per run
        assert {e["cpu_threads"] for e in envs} == {threads}  # threads_per_run, also in a forked child
        assert {e["env_vars"]["OMP_NUM_THREADS"] for e in envs} == {str(threads)}


def test_killing_the_fork_server_costs_an_attempt_not_a_run(tmp_path):
    path = write_protocol(tmp_path, maskers=[
        {"name": "none", "kind": "none"},
        {"name": "slow", "kind": "test-fault", "sleep_s": 60, "marker": str(tmp_path / "slow-marker")}],
        execution={"max_attempts": 2})
    store = tmp_path / "runs" / "exec.sqlite"
    log = tmp_path / "d.log"
    driver = start_cli("run", path, cwd=tmp_path, log=log)
    try:
        wait_for(lambda: alive(driver, log) and (tmp_path / "slow-marker").exists(), what="the slow worker mid-run")
        ((slow_id,),) = query(store, "SELECT run_id FROM runs WHERE masker='slow'")
        (worker,) = worker_pids(slow_id)
        server = int(proc_stat(worker)[1])  # its parent
        assert "study.scheduler.forkserver" in Path(f"/proc/{server}/cmdline").read_text()
        os.kill(server, signal.SIGKILL)
        wait_for(lambda: not Path(f"/proc/{worker}").exists() or proc_stat(worker)[0] == "Z",
                 timeout=30, what="the forked worker to die with its server")
        assert driver.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    text = log.read_text()
    assert "starting each worker as a fresh interpreter instead" in text, text[-3000:]
    runs = _runs(store)
    by_masker = {r[0]: r for r in runs.values()}
    assert by_masker["slow"][1:3] == ("done", 2)  # the killed attempt, then a spawned retry
    assert by_masker["slow"][5]["env_vars"]["MASKSTUDY_WORKER_START"] == "spawn"
    assert by_masker["none"][1] == "done"
    events = query(store, "SELECT kind, message FROM events WHERE run_id=? ORDER BY id", slow_id)
    assert any(k == "failure" and "killed by SIGKILL" in m for k, m in events), events
    assert query(store, "PRAGMA integrity_check") == [("ok",)]


def test_fork_safety_refuses_a_process_with_threads():
    code = ("import threading, time\n"
            "from study.scheduler.forkserver import fork_safety\n"
            "assert fork_safety() == '', fork_safety()\n"
            "threading.Thread(target=time.sleep, args=(5,), daemon=True).start()\n"
            "print(fork_safety())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "2 threads" in out.stdout and "deadlock" in out.stdout


def test_fork_safety_in_this_test_process_sees_its_threads():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, daemon=True)
    t.start()
    try:
        assert "threads" in fork_safety()
    finally:
        stop.set()
        t.join()


def _hub_cache_with_minilm(root: Path, repo: str) -> Path:
    """A Hugging Face hub cache (``models--org--name/snapshots/<rev>``, ``refs/main``) holding the
    built-in MiniLM's files, as `huggingface-cli download` would leave it."""
    from study.models import resolve_source

    model = root / ("models--" + repo.replace("/", "--"))
    snapshot = model / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (model / "refs").mkdir()
    (model / "refs" / "main").write_text("0123abcd")
    src = Path(resolve_source("builtin:minilm-l6"))
    for name in ("config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
                 "tokenizer_config.json", "vocab.txt"):
        (snapshot / name).symlink_to(src / name)
    return root


def test_fork_server_warms_up_a_hub_model_from_the_local_cache_only(tmp_path):
    repo = "sentence-transformers/all-MiniLM-L6-v2"
    cache = _hub_cache_with_minilm(tmp_path / "hub", repo)
    path = write_protocol(tmp_path, models=[{"name": "minilm-hub", "source": repo, "num_hidden_layers": 1}])
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    out = subprocess.run([sys.executable, "-m", "study.cli", "run", str(path)], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "fresh interpreter instead" not in out.stderr
    server_log = (tmp_path / "runs" / "exec.work" / "logs" / "forkserver.log").read_text()
    assert "warm-up:" not in server_log, server_log  # config, model and tokenizer classes came from the cache
    envs = [json.loads(e) for (e,) in query(tmp_path / "runs" / "exec.sqlite", "SELECT env FROM runs")]
    assert len(envs) == 2 and {e["env_vars"]["MASKSTUDY_WORKER_START"] for e in envs} == {"forkserver"}

    # Not in the cache: the server says so and carries on (it never reaches for the network);
    # the run itself then fails to load the model, as it would have anyway.
    (tmp_path / "runs").rename(tmp_path / "runs-1")
    empty = {**env, "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    out = subprocess.run([sys.executable, "-m", "study.cli", "run", str(path)], capture_output=True, text=True,
                         cwd=tmp_path, env=empty, timeout=300)
    assert out.returncode == 1 and "fresh interpreter instead" not in out.stderr, out.stderr[-3000:]
    server_log = (tmp_path / "runs" / "exec.work" / "logs" / "forkserver.log").read_text()
    assert "warm-up: model minilm-hub: OSError" in server_log, server_log
