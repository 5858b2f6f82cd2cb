"""``study plan`` and ``study status``: the runs, what is done, and what is left to pay.

The estimate of a pending run, best source first:

1. *measured, same cell shape*: the median wall time of finished runs with the same model,
   task data and training settings (masker and seed aside);
2. *measured, same model*: the model's median training throughput (examples/s at the same
   ``max_length``, else any) × the run's examples, plus the model's median start-up and
   evaluation overhead;
3. *calibrated*: no finished run of the model yet, so the run itself is started here, in a
   fresh process, and stopped after a few optimizer steps (``train.run_one(spec,
   max_steps=...)``): its start-up and its training throughput are measured
   (``--calibrate never`` skips it and leaves the run unestimated). With the local pool's fork
   server a run's start-up is only its model load and tokenisation (imports and data are paid
   once, by the server), and the estimate counts only that.

Calibration never waits on an unreachable hub: with ``HF_HUB_OFFLINE`` set, or when the hub's
host does not answer within a few seconds, the calibration process reads local files only
(``HF_HUB_OFFLINE=1``), and a model or dataset missing from the local cache leaves the run
"not calibrated: <reason>" instead of failing the command.

Remaining wall time comes from scheduling the estimates onto the slots (longest first);
GPU-hours = Σ run time ÷ runs per GPU. The output says which source each number came from.
"""

from __future__ import annotations

import functools
import heapq
import json
import statistics
import sys
import time
from dataclasses import dataclass

from study.progress import fmt_duration
from study.protocol import Protocol
from study.spec import RunSpec


def model_key(model: dict) -> tuple:
    return (model["source"], model.get("num_hidden_layers"), model.get("replacement_token"))


def task_key(task: dict) -> tuple:
    return (task["dataset"], task.get("max_train_examples"), task.get("max_eval_examples"), task.get("data_seed", 0),
            task.get("data_sha256"))


def shape_key(spec: RunSpec) -> tuple:
    return (model_key(spec.model), task_key(spec.task), json.dumps(spec.training, sort_keys=True))


@dataclass
class Finished:
    spec: RunSpec
    wall_s: float
    train_s: float
    examples_per_s: float

    @property
    def train_examples(self) -> float:  # n_train × epochs
        return self.examples_per_s * self.train_s

    @property
    def overhead_s(self) -> float:
        return max(0.0, self.wall_s - self.train_s)


@dataclass
class Estimate:
    seconds: float | None
    source: str  # "measured", "model", "calibrated", "uncalibrated" (see reason), "none"
    reason: str = ""  # why a run could not be calibrated


class Estimator:
    def __init__(self, finished: list[Finished], calibrate: str = "auto", stream=None, preloaded: bool = False):
        self.finished = finished
        self.calibrate = calibrate
        self.preloaded = preloaded  # workers start from a warm fork server (no imports, no data parse)
        self.stream = stream or sys.stderr
        self.calibrations: dict[tuple, dict] = {}
        self.by_shape: dict[tuple, list[float]] = {}
        for f in finished:
            self.by_shape.setdefault(shape_key(f.spec), []).append(f.wall_s)

    def n_train(self, spec: RunSpec) -> float | None:
        """Training examples per epoch: from a finished run of the same task data, else the cap."""
        for f in self.finished:
            if task_key(f.spec.task) == task_key(spec.task) and f.examples_per_s:
                return f.train_examples / f.spec.training["epochs"]
        return spec.task.get("max_train_examples")

    def estimate(self, spec: RunSpec) -> Estimate:
        if self.calibrate != "always":
            same = self.by_shape.get(shape_key(spec))
            if same:
                return Estimate(statistics.median(same), "measured")
            runs = [f for f in self.finished if model_key(f.spec.model) == model_key(spec.model) and f.examples_per_s]
            n_train = self.n_train(spec)
            if runs and n_train:
                same_len = [f for f in runs if f.spec.training["max_length"] == spec.training["max_length"]] or runs
                eps = statistics.median(f.examples_per_s for f in same_len)
                overhead = statistics.median(f.overhead_s for f in same_len)
                return Estimate(n_train * spec.training["epochs"] / eps + overhead, "model")
        if self.calibrate == "never":
            return Estimate(None, "none")
        key = (model_key(spec.model), task_key(spec.task), spec.training["max_length"], spec.training["batch_size"])
        if key not in self.calibrations:
            print(f"calibrating {spec.model['name']} on {spec.task['name']} (a few training steps on this machine) ...",
                  file=self.stream)
            self.calibrations[key] = calibrate(spec)
        c = self.calibrations[key]
        if "error" in c:
            return Estimate(None, "uncalibrated", c["error"])
        epochs, eps = spec.training["epochs"], c["examples_per_s"]
        train = c["n_train"] * epochs / eps
        # The calibration run evaluated once (inside its start-up); a run evaluates every epoch.
        more_evaluation = c["n_eval"] * (epochs - 1) / (3 * eps)  # forward only: ~1/3 of a train step
        startup = c["startup_preloaded_s"] if self.preloaded else c["startup_s"]
        return Estimate(startup + train + more_evaluation, "calibrated")


CALIBRATION_STEPS = 8
HUB_PROBE_TIMEOUT_S = 3.0


def uses_hub(spec: RunSpec) -> bool:
    """Whether the run reads a model or a dataset from the Hugging Face hub."""
    from study.models import is_hub_source
    from study.tasks import DATASETS

    dataset = spec.task["dataset"]
    hub_data = dataset in DATASETS and DATASETS.get(dataset).accepts_data_dir and not spec.task.get("data_dir")
    if dataset.startswith("hf:"):  # a hub name, unless it names a local folder (study.tasks.files)
        from pathlib import Path

        hub_data = not Path(dataset[3:].partition(":")[0]).expanduser().is_dir()
    return hub_data or is_hub_source(spec.model["source"])


@functools.lru_cache(maxsize=1)
def hub_offline() -> str:
    """'' when the hub may be used, else why not (one quick probe per process, not the hub
    libraries' five retries with back-off)."""
    import os
    import socket
    from urllib.parse import urlparse

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as e:
        return f"the hub {endpoint} is unreachable ({e})"
    return ""


def calibrate(spec: RunSpec) -> dict:
    """Start ``spec``'s run in a fresh worker-like process and stop it after a few steps, so
    start-up (interpreter, imports, data and model loading, tokenisation) is measured too.

    Returns examples_per_s, n_train, n_eval, device, startup_s (fresh interpreter) and
    startup_preloaded_s (forked from a warm server: model load, tokenisation); both include the
    run's first evaluation. Or ``{"error": reason}`` when the run could not be started here.
    """
    import subprocess
    import tempfile
    from pathlib import Path

    from study.scheduler.launch import worker_env

    env = worker_env(spec.execution.get("threads_per_run") or 1, "inherit")
    offline = hub_offline() if uses_hub(spec) else ""
    if offline:  # local files only: a miss fails at once instead of retrying the network
        env = {**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="maskstudy-calib-") as tmp:
        spec_file = Path(tmp) / "spec.json"
        spec_file.write_text(spec.to_json())
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "study.scheduler.plan", str(spec_file)], capture_output=True,
                              text=True, env=env)
    lines = proc.stdout.strip().splitlines()
    try:
        out = json.loads(lines[-1]) if lines else {}
    except ValueError:
        out = {}
    if proc.returncode != 0 or "error" in out or not out:
        err = out.get("error") or next((ln for ln in reversed(proc.stderr.splitlines()) if ln.strip()),
                                       f"exit code {proc.returncode}")
        return {"error": f"{err} ({offline})" if offline else err}
    out["startup_s"] = out.pop("done_at") - t0 - out["train_s"]
    out["startup_preloaded_s"] = out["startup_s"] - (out.pop("data_at") - t0)
    return out


def _calibrate_here(spec: RunSpec) -> dict:
    """The calibration child: what a worker does, timed; stops after CALIBRATION_STEPS steps."""
    import study.train  # noqa: F401  (the imports a fresh worker pays)
    from study.models import preload
    from study.protocol import TaskConfig
    from study.tasks import load_task
    from study.train import run_one

    stage = f"task data of {spec.task['dataset']!r}"
    try:
        task = load_task(TaskConfig(**spec.task))
        stage = f"model {spec.model['source']!r}"
        preload(spec.model["source"])
        data_at = time.time()  # what follows, a forked worker pays too; what came before, its server
        stage = "the calibration run"
        result = run_one(spec, max_steps=CALIBRATION_STEPS)
    except Exception as e:  # noqa: BLE001  (reported as the reason the run is not calibrated)
        first = (str(e).strip().splitlines() or [""])[0]
        return {"error": f"{stage}: {type(e).__name__}: {first}"}
    return {"examples_per_s": result.train_examples_per_s, "train_s": result.train_time_s,
            "data_at": data_at, "done_at": time.time(), "n_train": len(task.train), "n_eval": len(task.eval),
            "device": result.env.get("device", "?")}


def schedule_makespan(durations: list[float], slots: int) -> float:
    """Wall time of running ``durations`` on ``slots`` parallel slots, longest first (LPT)."""
    if not durations:
        return 0.0
    heap = [0.0] * max(1, slots)
    for d in sorted(durations, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + d)
    return max(heap)


def _finished_runs(store, specs_by_id: dict[str, RunSpec]) -> list[Finished]:
    df = store.load_runs(None, status="done")
    out = []
    for row in df.itertuples(index=False):
        try:
            spec = specs_by_id.get(row.run_id) or RunSpec.from_json(row.spec)
        except (TypeError, ValueError):
            continue
        if row.wall_time_s and row.train_time_s:
            # the driver's clock (claim → recorded) includes process start-up; the worker's does not
            slot_s = (row.finished_at - row.started_at) if row.finished_at and row.started_at else None
            wall = slot_s if slot_s and slot_s >= row.wall_time_s else row.wall_time_s
            out.append(Finished(spec, float(wall), float(row.train_time_s), float(row.train_examples_per_s or 0.0)))
    return out


def print_plan(protocol: Protocol, specs: list[RunSpec], gpus: list[int] | None = None, calibrate: str = "auto",
               stream=None) -> int:
    from study.scheduler.local import detect_gpus
    from study.store import Store

    out = stream or sys.stdout
    statuses: dict[str, str] = {}
    finished: list[Finished] = []
    if protocol.store_path.exists():
        with Store(protocol.store_path) as store:
            statuses = store.statuses(s.run_id for s in specs)
            finished = _finished_runs(store, {s.run_id: s for s in specs})
            stopped = _stopped_early(protocol, specs, store)
    else:
        stopped = set()
    statuses |= dict.fromkeys(stopped, "stopped")  # never to run: their comparisons have decided
    ex = protocol.execution
    gpus = detect_gpus() if gpus is None else gpus
    slots = len(gpus) * ex.runs_per_gpu if gpus else ex.cpu_slots
    est = Estimator(finished, calibrate, preloaded=ex.backend == "local" and ex.worker_start == "forkserver")
    pending = [s for s in specs if statuses.get(s.run_id, "pending") not in ("done", "stopped")]
    estimates = {s.run_id: est.estimate(s) for s in pending}

    print(f"{'run_id':16}  {'task':12} {'model':14} {'masker':16} {'seed':>4}  {'status':8} estimate", file=out)
    for s in specs:
        e = estimates.get(s.run_id)
        shown = "" if e is None else ("?" + (" (not calibrated)" if e.reason else "") if e.seconds is None
                                      else f"{fmt_duration(e.seconds)} ({e.source})")
        print(f"{s.run_id:16}  {s.task['name']:12} {s.model['name']:14} {s.masker['name']:16} {s.seed:>4}  "
              f"{statuses.get(s.run_id, 'pending'):8} {shown}", file=out)
    done = sum(1 for v in statuses.values() if v == "done")
    failed = sum(1 for s in specs if statuses.get(s.run_id) == "failed")
    print(f"\n{len(specs)} runs: {done} done, {failed} failed, {len(pending)} to run"
          + (f", {len(stopped)} stopped early by the sequential design" if stopped else "")
          + (" (at most: later looks run only for undecided comparisons)" if protocol.sequential and pending else ""),
          file=out)
    if not pending:
        return 0
    known = [e.seconds for e in estimates.values() if e.seconds is not None]
    unknown = len(pending) - len(known)
    where = (f"{len(gpus)} GPU(s) × {ex.runs_per_gpu} run(s) per GPU = {slots} slots" if gpus
             else f"no GPU: {slots} CPU slot(s)")
    if known:
        wall = schedule_makespan(known, slots)
        total = sum(known)
        cost = (f"{total / 3600 / ex.runs_per_gpu:.2f} GPU-hours" if gpus
                else f"{total / 3600:.2f} CPU-slot-hours (no GPU)")
        print(f"estimate: ~{fmt_duration(wall)} wall on {where}; {cost}"
              + (f"; {unknown} run(s) without an estimate not counted" if unknown else ""), file=out)
    sources: dict[str, int] = {}
    for e in estimates.values():
        sources[e.source] = sources.get(e.source, 0) + 1
    devices = sorted({c["device"] for c in est.calibrations.values() if "device" in c})
    reasons = sorted({e.reason for e in estimates.values() if e.source == "uncalibrated"})
    notes = {
        "measured": "median wall time of finished runs with the same model, task and training",
        "model": "measured examples/s of finished runs of the same model",
        "calibrated": "no finished run of the model yet: timed a few training steps on this machine "
                      + ", ".join(devices),
        "uncalibrated": "not calibrated: " + "; ".join(reasons),
        "none": "no finished run of the model and calibration off (--calibrate never)",
    }
    for source, n in sources.items():
        print(f"  {n} run(s) {source}: {notes[source]}" if source != "uncalibrated" else f"  {n} run(s) {notes[source]}",
              file=out)
    return 0


def _stopped_early(protocol: Protocol, specs: list[RunSpec], store) -> set[str]:
    """Pending runs a sequential study will never start (their comparisons have decided)."""
    if protocol.sequential is None:
        return set()
    from study.scheduler.looks import store_plan

    return store_plan(protocol, specs, store).stopped


def print_status(protocol: Protocol, specs: list[RunSpec], failures: bool = False, stream=None) -> int:
    from study.scheduler.lock import holder_alive
    from study.store import Store

    out = stream or sys.stdout
    counts = {"done": 0, "failed": 0, "running": 0, "pending": len(specs)}
    if not protocol.store_path.exists():
        print(f"{protocol.name}: {len(specs)} runs — no store yet at {protocol.store}", file=out)
        return 0
    with Store(protocol.store_path) as store:
        ids = [s.run_id for s in specs]
        counts = store.counts(ids)
        stopped = len(_stopped_early(protocol, specs, store))
        counts["pending"] -= stopped
        print(f"{protocol.name}: {len(specs)} runs — " + ", ".join(f"{v} {k}" for k, v in counts.items())
              + (f", {stopped} stopped early by the sequential design" if stopped else ""), file=out)
        driver = store.driver_info()
        if driver:
            alive = holder_alive(driver)
            beat = time.time() - float(driver.get("heartbeat", 0))
            print(f"driver: pid {driver.get('pid')} on {driver.get('host')} (backend {driver.get('backend')}), "
                  f"last heartbeat {beat:.0f}s ago" + ("" if alive else " — gone; `study run` resumes"), file=out)
        by_id = {s.run_id: s for s in specs}
        runs = store.load_runs(specs, status=None)
        for row in runs[runs["status"] == "running"].itertuples(index=False):
            print(f"  running  {by_id[row.run_id].label} (attempt {row.attempts}, {row.worker})", file=out)
        failed = runs[runs["status"] == "failed"]
        if len(failed):
            events = store.events(failed["run_id"])
            for row in failed.itertuples(index=False):
                ev = events[(events["run_id"] == row.run_id) & events["kind"].isin(["failure", "oom"])]
                last = ev.iloc[-1] if len(ev) else None
                msg = last["message"] if last is not None else ""
                print(f"  FAILED   {by_id[row.run_id].label} after {row.attempts} attempt(s): {msg}", file=out)
                if failures and last is not None and last["traceback"]:
                    print("    " + str(last["traceback"]).strip().replace("\n", "\n    "), file=out)
    return 0


if __name__ == "__main__":  # the calibration child: python -m study.scheduler.plan SPEC_FILE
    from pathlib import Path

    calibration = _calibrate_here(RunSpec.from_json(Path(sys.argv[1]).read_text()))
    print(json.dumps(calibration))
    sys.exit(3 if "error" in calibration else 0)
