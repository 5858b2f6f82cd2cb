"""Fast checks of the execution machinery without training anything: the driver's claim /
record / retry logic against a scripted backend and a real SQLite store, GPU-slot accounting,
the driver lock, worker environments, missing-extra messages, progress output."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
from collections import deque

import pytest
from exectools import TINY

from study.errors import UserError
from study.protocol import parse_protocol
from study.results import RunResult
from study.scheduler.driver import Driver, Job
from study.scheduler.launch import INHERIT, Outcome, describe_exit, worker_env
from study.scheduler.local import GpuAccounting, parse_gpus
from study.scheduler.lock import STALE_S, DriverLock, StoreLocked
from study.scheduler.plan import schedule_makespan
from study.spec import expand
from study.store import Store


@pytest.fixture
def grid(tmp_path):
    data = json.loads(json.dumps(TINY))
    data["store"] = str(tmp_path / "s.sqlite")
    data["seeds"] = [0, 1]
    p = parse_protocol(data)
    specs = expand(p)
    store = Store(p.store_path)
    store.register(specs)
    yield specs, store
    store.close()


def fake_result(run_id: str) -> str:
    return RunResult(run_id=run_id, primary_metric="accuracy", final_metrics={"accuracy": 0.5},
                     epochs=[{"epoch": 1, "train_loss": 0.7, "metrics": {"accuracy": 0.5}}],
                     predictions=[["0", 1, 1, 0.9], ["1", 0, 1, 0.6]], wall_time_s=1.0, train_time_s=0.5,
                     train_examples_per_s=32.0, realised_mask_rate=None, fingerprints={}).to_json()


class ScriptedBackend:
    """Each run's attempts end as scripted: "ok", "fail" or "oom"; OOM repacking works once per run."""

    name = "scripted"

    def __init__(self, script: dict[str, list[str]], slots: int = 2, harvest_dirs=(), interrupt_after: int | None = None):
        self.script = {k: list(v) for k, v in script.items()}
        self.slots = slots
        self.harvest_dirs = list(harvest_dirs)
        self.running: list[Job] = []
        self.launched: list[str] = []
        self.interrupt_after = interrupt_after
        self.closed_with_cancel = None

    def open(self):
        pass

    def inflight(self):
        return len(self.running)

    def fill(self, queue: deque[Job], claim):
        while queue and len(self.running) < self.slots:
            job = queue.popleft()
            claim(job, f"fake{len(self.running)}")
            self.running.append(job)
            self.launched.append(job.run_id)

    def poll(self, timeout):
        if self.interrupt_after is not None and len(self.launched) >= self.interrupt_after:
            raise KeyboardInterrupt
        ended = []
        for job in self.running:
            step = self.script.get(job.run_id, ["ok"]).pop(0) if self.script.get(job.run_id) else "ok"
            if step == "ok":
                ended.append((job, Outcome(returncode=0, result_json=fake_result(job.run_id))))
            else:
                ended.append((job, Outcome(returncode=3 if step == "oom" else 1, message=f"scripted {step}",
                                           traceback=f"Traceback ...\nRuntimeError: scripted {step}",
                                           oom=step == "oom")))
        self.running = []
        return ended

    def on_oom(self, job):
        if job.packing == 1:
            return None
        job.packing = 1
        return "runs packed 2 -> 1"

    def close(self, cancel):
        self.closed_with_cancel = cancel


def rows(store, sql, *args):
    return store.conn.execute(sql, args).fetchall()


def test_failing_cell_is_retried_then_failed_and_the_grid_goes_on(grid):
    specs, store = grid
    bad = specs[1].run_id
    backend = ScriptedBackend({bad: ["fail", "fail", "ok"]})
    counts = Driver(specs, store, backend, max_attempts=2).run()
    assert counts == {"done": 3, "failed": 1, "running": 0, "pending": 0}
    assert backend.launched.count(bad) == 2 and len(backend.launched) == 5
    status, attempts = rows(store, "SELECT status, attempts FROM runs WHERE run_id=?", bad)[0]
    assert (status, attempts) == ("failed", 2)
    events = rows(store, "SELECT kind, attempt, message, traceback FROM events WHERE run_id=?", bad)
    assert [(k, a) for k, a, _, _ in events] == [("failure", 1), ("failure", 2)]
    assert all("RuntimeError: scripted fail" in tb for *_, tb in events)
    assert store.integrity_check() == "ok"


def test_oom_retry_with_fewer_runs_packed_is_free(grid):
    specs, store = grid
    rid = specs[0].run_id
    # 1st OOM: packing can shrink → free retry; 2nd OOM: nothing left to shrink → counts; 3rd attempt succeeds.
    Driver(specs, store, ScriptedBackend({rid: ["oom", "oom", "ok"]}), max_attempts=2).run()
    assert rows(store, "SELECT status, attempts FROM runs WHERE run_id=?", rid)[0] == ("done", 3)
    events = rows(store, "SELECT kind, message FROM events WHERE run_id=? ORDER BY id", rid)
    assert [k for k, _ in events] == ["oom", "oom"]
    assert "runs packed 2 -> 1" in events[0][1] and "packed" not in events[1][1]


def test_interrupt_stops_attempts_and_gives_them_back(grid):
    specs, store = grid
    backend = ScriptedBackend({}, slots=2, interrupt_after=2)
    with pytest.raises(KeyboardInterrupt):
        Driver(specs, store, backend, max_attempts=2).run()
    assert backend.closed_with_cancel is True
    assert rows(store, "SELECT status, attempts FROM runs") == [("pending", 0)] * 4
    assert len(rows(store, "SELECT * FROM events WHERE kind='interrupted'")) == 2


def test_results_left_by_a_dead_driver_are_collected_not_recomputed(grid, tmp_path):
    specs, store = grid
    folder = tmp_path / "results"
    folder.mkdir()
    orphan = specs[2].run_id
    (folder / f"{orphan}.json").write_text(fake_result(orphan))
    (folder / "0123456789abcdef.json").write_text(fake_result("0123456789abcdef"))  # not this store's: left alone
    backend = ScriptedBackend({}, harvest_dirs=[folder])
    counts = Driver(specs, store, backend, max_attempts=2).run()
    assert counts["done"] == 4 and orphan not in backend.launched and len(backend.launched) == 3
    assert not (folder / f"{orphan}.json").exists() and (folder / "0123456789abcdef.json").exists()
    assert rows(store, "SELECT kind FROM events WHERE run_id=?", orphan) == [("harvested",)]


def test_gpu_accounting_spreads_pins_and_shrinks():
    acc = GpuAccounting.create([0, 1], runs_per_gpu=2)
    assert [acc.place() for _ in range(4)] == [0, 1, 0, 1] and acc.place() is None
    acc.release(1)
    assert acc.shrink(1) and acc.limit == {0: 2, 1: 1}
    assert acc.place(pinned=1) is None  # gpu1 holds 1 run, its new limit
    acc.release(1)
    assert acc.place(pinned=1) == 1
    assert not acc.shrink(1)  # never below one run per GPU
    assert acc.slots == 3


def test_parse_gpus():
    assert parse_gpus(None) is None
    assert parse_gpus("2") == [0, 1] and parse_gpus("0,3") == [0, 3]
    assert parse_gpus("none") == [] and parse_gpus("0") == []


def test_worker_env_is_set_before_python_starts():
    cpu = worker_env(threads=3, gpu=None, base={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["PYTHONHASHSEED"] == "0"  # one hash seed for all runs
    assert cpu["OMP_NUM_THREADS"] == cpu["MKL_NUM_THREADS"] == "3"
    assert cpu["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8" and cpu["MASKSTUDY_PARENT_PID"] == str(os.getpid())
    assert worker_env(1, gpu=1, base={})["CUDA_VISIBLE_DEVICES"] == "1"
    assert worker_env(1, gpu=INHERIT, base={"CUDA_VISIBLE_DEVICES": "5"})["CUDA_VISIBLE_DEVICES"] == "5"


def test_exit_descriptions():
    assert describe_exit(-9, "").message == "worker killed by SIGKILL"
    oom = describe_exit(3, "x\nTraceback (most recent call last):\n  ...\ntorch.OutOfMemoryError: CUDA out of memory")
    assert oom.oom and "CUDA out of memory" in oom.message and oom.traceback.startswith("Traceback")


def test_second_driver_is_refused_with_pid_and_host(tmp_path):
    with Store(tmp_path / "s.sqlite") as a, Store(tmp_path / "s.sqlite") as b:
        first = DriverLock(a, backend="local").acquire()
        with pytest.raises(StoreLocked) as info:
            DriverLock(b).acquire()
        msg = str(info.value)
        assert f"pid {os.getpid()} on host {socket.gethostname()}" in msg and "backend local" in msg
        first.release()
        DriverLock(b).acquire().release()
        assert b.driver_info() is None


def test_dead_or_stale_drivers_are_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with Store(tmp_path / "s.sqlite") as store:
        claim = lambda info: store.conn.execute("INSERT OR REPLACE INTO meta VALUES ('driver', ?)",  # noqa: E731
                                                (json.dumps(info),))
        claim({"pid": dead.pid, "host": socket.gethostname(), "token": "x", "heartbeat": time.time()})
        lock = DriverLock(store).acquire()
        assert lock.replaced["pid"] == dead.pid
        lock.release()
        # another host sharing the store over a network file system: live while its heartbeat is fresh
        claim({"pid": 1, "host": "other-node", "token": "y", "heartbeat": time.time()})
        with pytest.raises(StoreLocked, match="pid 1 on host other-node"):
            DriverLock(store).acquire()
        claim({"pid": 1, "host": "other-node", "token": "y", "heartbeat": time.time() - STALE_S - 1})
        DriverLock(store).acquire().release()


def test_missing_extras_say_how_to_install(monkeypatch):
    from study.scheduler.ray_backend import import_ray
    from study.scheduler.slurm import import_submitit

    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UserError, match=r"pip install 'maskstudy\[ray\]'"):
        import_ray()
    with pytest.raises(UserError, match=r"pip install 'maskstudy\[slurm\]'"):
        import_submitit()


def test_test_fault_kind_is_not_a_normal_kind():
    from study.registry import masker_kinds

    if os.environ.get("MASKSTUDY_TEST_MASKERS") != "1":
        assert "test-fault" not in masker_kinds()


def test_progress_plain_lines_and_eta():
    from study.progress import Progress

    out = io.StringIO()
    p = Progress(total=4, already_done=1, stream=out, tty=False)
    spec = expand(parse_protocol({**json.loads(json.dumps(TINY)), "store": "x.sqlite"}))[0]
    p.started(spec, "gpu0")
    p.failed_attempt(spec, final=False, message="worker killed by SIGKILL")
    p.started(spec, "gpu0")
    p.finished(spec, RunResult.from_json(fake_result(spec.run_id)))
    lines = out.getvalue().splitlines()
    assert lines[0].split(" ", 1)[1].startswith("start  tweets/minilm-l1/none/seed0 on gpu0")
    assert "retry " in lines[1] and "worker killed by SIGKILL" in lines[1]
    assert "2/4 done, 0 failed, 0 running, 1 retried" in lines[-1] and "ETA ?" not in lines[-1]


def test_schedule_makespan():
    assert schedule_makespan([3, 3, 2, 2, 2], slots=2) == 7
    assert schedule_makespan([5, 1], slots=4) == 5 and schedule_makespan([], 2) == 0


def test_local_pool_kills_a_worker_past_its_timeout(tmp_path):
    """execution.timeout_min: the worker's whole process group is killed and the attempt fails."""
    from study.scheduler.local import LocalPool, _Running

    data = {**json.loads(json.dumps(TINY)), "store": str(tmp_path / "s.sqlite")}
    data["execution"] = {**data["execution"], "timeout_min": 0.01, "cpu_slots": 1}
    p = parse_protocol(data)
    pool = LocalPool(p, p.store_path, gpus=[])
    pool.open()
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    job = Job(expand(p)[0], attempt=1, where="cpu0")
    pool.running.append(_Running(job, proc, None, time.monotonic(), tmp_path / "none.log", tmp_path / "r.json"))
    ended = pool.poll(timeout=5)
    assert [j for j, _ in ended] == [job] and proc.poll() == -9
    out = ended[0][1]
    assert not out.ok and out.message == "timed out after 0.01 min (execution.timeout_min); worker killed"


def test_ray_oom_retry_asks_for_a_bigger_gpu_share(grid):
    pytest.importorskip("ray")
    from study.scheduler.ray_backend import RayBackend

    specs, _ = grid
    data = {**json.loads(json.dumps(TINY)), "store": "x.sqlite"}
    data["execution"] = {**data["execution"], "runs_per_gpu": 2}
    backend = RayBackend(parse_protocol(data))  # (does not start Ray)
    job = Job(specs[0], packing=2)
    assert backend.on_oom(job) == "retrying with num_gpus=1/1 (fewer runs share its GPU)" and job.packing == 1
    assert backend.on_oom(job) is None


def test_plan_estimates_from_finished_runs_of_the_same_model():
    from study.scheduler.plan import Estimator, Finished

    data = {**json.loads(json.dumps(TINY)), "store": "x.sqlite", "seeds": [0, 1]}
    specs = expand(parse_protocol(data))
    done = [Finished(specs[0], wall_s=20.0, train_s=8.0, examples_per_s=2.0),  # 16 examples × 1 epoch
            Finished(specs[1], wall_s=22.0, train_s=8.0, examples_per_s=2.0)]
    est = Estimator(done, calibrate="never")
    same = est.estimate(specs[2])
    assert (same.seconds, same.source) == (21.0, "measured")  # same model, task, training: median wall
    bigger = dict(data, tasks=[{**data["tasks"][0], "max_train_examples": 64}])
    other = expand(parse_protocol(bigger))[0]
    e = est.estimate(other)  # same model, other data: 64 examples / 2 per s + median overhead 13 s
    assert e.source == "model" and e.seconds == pytest.approx(64 / 2.0 + 13.0)
    new_model = dict(data, models=[{**data["models"][0], "num_hidden_layers": 2}])
    assert Estimator(done, calibrate="never").estimate(expand(parse_protocol(new_model))[0]).source == "none"


def test_plan_calibration_times_real_steps_and_counts_what_each_launcher_pays_per_run():
    from study.scheduler.plan import Estimator

    data = {**json.loads(json.dumps(TINY)), "store": "x.sqlite"}
    spec = expand(parse_protocol(data))[0]
    spawned = Estimator([], calibrate="auto", stream=io.StringIO())
    e_spawn = spawned.estimate(spec)  # runs a few real training steps in a fresh process
    (c,) = spawned.calibrations.values()
    assert e_spawn.source == "calibrated" and c["examples_per_s"] > 0 and c["n_train"] == 16 and c["n_eval"] == 8
    # Fresh interpreter: interpreter, imports, data, model; forked from the warm server: model and tokens only.
    assert 0 < c["startup_preloaded_s"] < c["startup_s"]
    forked = Estimator([], calibrate="auto", stream=io.StringIO(), preloaded=True)
    forked.calibrations = spawned.calibrations  # the same measurement
    e_fork = forked.estimate(spec)
    assert e_spawn.seconds - e_fork.seconds == pytest.approx(c["startup_s"] - c["startup_preloaded_s"])
    assert e_spawn.seconds > e_fork.seconds  # the fork server saves at least the imports (relative: no clock bound)
