"""Local backend (the default): a pool of GPU slots, each run a fresh worker subprocess.

Slots = GPUs × ``execution.runs_per_gpu``; on a machine without GPUs, ``execution.cpu_slots``
CPU slots (default one run at a time). A run goes to the GPU with the most free room. Each
GPU keeps its own packing limit: a CUDA out-of-memory failure lowers that GPU's limit by one
(never below one) and pins the retry to the same GPU, so it runs with fewer neighbours.

Each run is a fresh process of its own (own pid, own process group — so a time-out or an
interrupt kills the worker and anything it spawned — with ``PR_SET_PDEATHSIG`` so it dies with
the driver even on ``kill -9``). By default it is forked from a preloaded fork server
(``forkserver.py``: imports and data paid once per ``study run`` instead of once per run);
with ``execution.worker_start: spawn``, or when the server finds forking unsafe, it is
``python -m study.worker`` started with ``Popen``. A worker writes its result into
``<store>.work/results/``, its output into ``<store>.work/logs/`` and its mid-run checkpoints
(when ``execution.checkpoint_every_*`` asks for them) into ``<store>.work/checkpoints/``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from study.protocol import Protocol
from study.scheduler.driver import Job, work_dir
from study.scheduler.forkserver import ForkedWorker, ForkServer, ForkServerUnavailable
from study.scheduler.launch import (
    Outcome,
    describe_exit,
    die_with_parent,
    read_tail,
    worker_command,
    worker_env,
)


def detect_gpus() -> list[int | str]:
    """Visible GPUs without initialising CUDA in the driver (nvidia-smi).

    An existing ``CUDA_VISIBLE_DEVICES`` is kept as given: its entries (indices, ``GPU-<uuid>``,
    ``MIG-<uuid>``) are what each worker's ``CUDA_VISIBLE_DEVICES`` is set to, one entry per
    worker, so a cluster's allocation is never widened to GPUs it did not grant. Indices are
    read in PCI bus order, as nvidia-smi numbers GPUs (the workers get ``CUDA_DEVICE_ORDER=PCI_BUS_ID``).
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        # CUDA stops at the first invalid entry ("-1" hides every GPU after it)
        ids = ids[:next((i for i, v in enumerate(ids) if v.startswith("-")), len(ids))]
        return [int(v) if v.isdigit() else v for v in ids]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if out.returncode != 0:
        return []
    return list(range(sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))))


def parse_gpus(value: str | int | None) -> list[int] | None:
    """``--gpus``: a count (``2`` → GPUs 0 and 1), a list (``0,2``), ``none`` / ``0`` for CPU only;
    None → detect. Counts may exceed the real GPUs (fake slots, for tests and dry runs)."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if text in ("none", "cpu", "0", ""):
        return []
    if "," in text:
        return [int(v) for v in text.split(",") if v.strip()]
    return list(range(int(text)))


@dataclass
class _Running:
    job: Job
    proc: subprocess.Popen | ForkedWorker
    gpu: int | None
    started: float
    log_path: Path
    result_path: Path


@dataclass
class GpuAccounting:
    """How many runs each GPU may hold now, and holds. Pure bookkeeping (unit-tested)."""

    limit: dict[int, int]
    busy: dict[int, int] = field(default_factory=dict)

    @classmethod
    def create(cls, gpus: list[int], runs_per_gpu: int) -> GpuAccounting:
        return cls({g: runs_per_gpu for g in gpus}, {g: 0 for g in gpus})

    def place(self, pinned: int | None = None) -> int | None:
        """A GPU with room (``pinned`` only, if given), the emptiest first; None if all are full."""
        candidates = [pinned] if pinned is not None else list(self.limit)
        free = [(self.limit[g] - self.busy[g], -g) for g in candidates if self.busy[g] < self.limit[g]]
        if not free:
            return None
        g = -max(free)[1]
        self.busy[g] += 1
        return g

    def release(self, gpu: int) -> None:
        self.busy[gpu] -= 1

    def shrink(self, gpu: int) -> bool:
        """After an OOM on ``gpu``: one run fewer there. False if it already held one at a time."""
        if self.limit[gpu] <= 1:
            return False
        self.limit[gpu] -= 1
        return True

    @property
    def slots(self) -> int:
        return sum(self.limit.values())


class LocalPool:
    name = "local"

    def __init__(self, protocol: Protocol, store_path: str | Path, gpus: list[int] | None = None):
        ex = protocol.execution
        self.gpus = detect_gpus() if gpus is None else list(gpus)
        self.accounting = GpuAccounting.create(self.gpus, ex.runs_per_gpu) if self.gpus else None
        self.cpu_slots = ex.cpu_slots
        n_slots = self.accounting.slots if self.accounting else self.cpu_slots
        self.threads = ex.threads_per_run or max(1, (os.cpu_count() or 1) // n_slots)
        self.timeout_s = ex.timeout_min * 60 if ex.timeout_min else None
        self.work = work_dir(store_path)
        self.harvest_dirs = [self.work / "results"]
        self.checkpoint_dir = self.work / "checkpoints"  # the driver deletes a run's once it is recorded
        self.running: list[_Running] = []
        self.worker_start = ex.worker_start
        self.server: ForkServer | None = None  # started with the first runs (it warms up for them)

    def describe(self) -> str:
        start = "forked from a preloaded server" if self.worker_start == "forkserver" else "fresh interpreters"
        if self.accounting:
            return (f"local pool: {len(self.gpus)} GPU(s) {self.gpus} × {self.accounting.limit[self.gpus[0]]} "
                    f"run(s) per GPU = {self.accounting.slots} slots, {self.threads} thread(s) per run, "
                    f"workers {start}")
        return (f"local pool: no GPU, {self.cpu_slots} CPU slot(s), {self.threads} thread(s) per run, "
                f"workers {start}")

    # -- Backend interface ---------------------------------------------------------------------
    def slots(self) -> int:
        return self.accounting.slots if self.accounting else self.cpu_slots

    def open(self) -> None:
        for sub in ("specs", "logs", "results"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)

    def inflight(self) -> int:
        return len(self.running)

    def fill(self, queue: deque[Job], claim: Callable[[Job, str], None]) -> None:
        if self.worker_start == "forkserver" and self.server is None and queue:
            self._start_server([job.spec for job in queue])
        for job in list(queue):
            if self.accounting:
                gpu = self.accounting.place(job.gpu)
                if gpu is None:
                    if all(self.accounting.busy[g] >= self.accounting.limit[g] for g in self.gpus):
                        return
                    continue  # pinned to a full GPU: let other runs go first
                where = f"gpu{gpu}"
            else:
                if len(self.running) >= self.cpu_slots:
                    return
                used = {r.job.where for r in self.running}
                gpu, where = None, next(f"cpu{k}" for k in range(self.cpu_slots) if f"cpu{k}" not in used)
            queue.remove(job)
            claim(job, where)
            self._start(job, gpu, where)

    def _start(self, job: Job, gpu: int | None, where: str) -> None:
        rid = job.run_id
        spec_path = self.work / "specs" / f"{rid}.json"
        spec_path.write_text(job.spec.to_json())
        result_path = self.work / "results" / f"{rid}.json"
        result_path.unlink(missing_ok=True)
        log_path = self.work / "logs" / f"{rid}.attempt{job.attempt}.log"
        proc = None
        if self.server is not None:
            env = worker_env(self.threads, gpu, slot=where, start="forkserver", checkpoint_dir=self.checkpoint_dir)
            try:
                proc = self.server.launch(spec_path, result_path, log_path, env, name=f"ms-{rid[:12]}")
            except ForkServerUnavailable as e:
                self._give_up_server(str(e))
        if proc is None:
            env = worker_env(self.threads, gpu, slot=where, checkpoint_dir=self.checkpoint_dir)
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(worker_command(spec_path, result_path), env=env, stdout=log,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True, preexec_fn=die_with_parent)
        self.running.append(_Running(job, proc, gpu, time.monotonic(), log_path, result_path))

    # -- the fork server -----------------------------------------------------------------------
    def _start_server(self, specs: list) -> None:
        """Start the fork server, warmed for these runs' tasks and models; on failure, spawn instead."""
        warm = {"tasks": _distinct(s.task for s in specs), "models": _distinct(s.model for s in specs)}
        # What a fork cannot change is fixed here for all runs; CUDA_VISIBLE_DEVICES is set per
        # run in the child (the server itself sees no GPU, so it cannot touch one by accident).
        env = worker_env(self.threads, None, slot="forkserver", start="forkserver")
        self.server = ForkServer(warm, env, self.work / "logs")
        try:
            self.server.start()
        except ForkServerUnavailable as e:
            self._give_up_server(str(e))

    def _give_up_server(self, why: str) -> None:
        print(f"local pool: {why}; starting each worker as a fresh interpreter instead", file=sys.stderr)
        if self.server is not None:
            self.server.close()
        self.server = None
        self.worker_start = "spawn"

    def poll(self, timeout: float) -> list[tuple[Job, Outcome]]:
        deadline = time.monotonic() + timeout
        while True:
            ended = []
            for r in list(self.running):
                timed_out = self.timeout_s is not None and time.monotonic() - r.started > self.timeout_s
                if r.proc.poll() is None and timed_out:
                    self._kill(r)
                if r.proc.poll() is None:
                    continue
                self.running.remove(r)
                if r.gpu is not None:
                    self.accounting.release(r.gpu)
                ended.append((r.job, self._outcome(r, timed_out)))
            if ended or time.monotonic() >= deadline:
                return ended
            time.sleep(0.05)

    def _outcome(self, r: _Running, timed_out: bool) -> Outcome:
        rc = r.proc.returncode
        if rc == 0 and r.result_path.exists():
            return Outcome(returncode=0, result_json=r.result_path.read_text(), result_file=r.result_path)
        out = describe_exit(rc, read_tail(r.log_path), self.timeout_s / 60 if timed_out else None)
        out.traceback = f"[log: {r.log_path}]\n{out.traceback}"
        return out

    def on_oom(self, job: Job) -> str | None:
        gpu = int(job.where[3:]) if job.where.startswith("gpu") else None
        if gpu is None or self.accounting is None:
            return None
        job.gpu = gpu  # retry on the same GPU, with fewer neighbours
        before = self.accounting.limit[gpu]
        if not self.accounting.shrink(gpu):
            return None
        return f"GPU {gpu}: runs packed {before} -> {self.accounting.limit[gpu]}; retrying there"

    def close(self, cancel: bool) -> None:
        for r in self.running:
            self._kill(r)
        for r in self.running:
            r.proc.wait()
        self.running.clear()
        if self.server is not None:
            self.server.close()
            self.server = None

    @staticmethod
    def _kill(r: _Running) -> None:
        try:
            os.killpg(r.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _distinct(dicts) -> list[dict]:
    seen = {}
    for d in dicts:
        seen.setdefault(repr(sorted(d.items())), dict(d))
    return list(seen.values())
