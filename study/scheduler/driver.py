"""The driver: claim, launch, record, retry — one mechanism under every backend.

A backend only knows how to start the worker command somewhere and to report how each attempt
ended (:class:`~study.scheduler.launch.Outcome`). Everything that touches the store happens
here, in the driver's one thread, under the store's driver lock (``lock.py``):

- a run is claimed (``running``, attempt + 1) right before it is handed to the backend;
- a result is recorded in one transaction (``done`` with all its rows, or nothing); a run that
  resumed from a mid-run checkpoint gets a ``resumed`` event with the step, and its checkpoint
  (in the backend's ``checkpoint_dir``, if it has one) is deleted;
- a failure is recorded with its traceback; the run goes back to the queue until
  ``execution.max_attempts`` is used up, then it is ``failed`` and the grid goes on;
- an out-of-memory failure asks the backend to pack fewer runs where it happened; when it
  can, that retry is free (it does not count against ``max_attempts``) — the batch size is
  never changed, since that would change the run;
- on start, results that workers finished while no driver was recording them (a driver
  killed between a worker's exit and the store write, or Slurm jobs that outlived their
  driver) are collected from the backend's result folders instead of being recomputed;
- on start, attempts a dead driver left running that still run (Slurm jobs, whose ids the
  store keeps in ``runs.worker``) are re-attached (:func:`adopt`): tracked like the driver's
  own, neither claimed again nor resubmitted; backends without ``adopt`` leave them to
  ``Store.recover_stale`` (pending again, rerun);
- a worker that found the disk full (exit code 5) stops the grid with ``DiskFull``: retrying
  on a full disk only burns attempts. Like on SIGINT/SIGTERM (or any error), running attempts
  are stopped and given back (pending, attempt not counted), so the same command resumes; if
  the store itself cannot be written, they stay ``running`` and the next driver gives them back.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol as TypingProtocol

from study import checkpoint
from study.errors import DiskFull, is_disk_full
from study.results import RunResult
from study.scheduler.launch import Outcome
from study.spec import RunSpec
from study.store import Store


@dataclass
class Job:
    """One run in the driver's queue, with what the scheduler learned about it."""

    spec: RunSpec
    attempt: int = 0  # the store's attempt counter after the latest claim
    free_retries: int = 0  # OOM retries granted because fewer runs could be packed
    gpu: int | None = None  # after an OOM on the local pool: retry on this GPU
    packing: int | None = None  # runs sharing this run's GPU (Ray: num_gpus = 1 / packing)
    where: str = ""

    @property
    def run_id(self) -> str:
        return self.spec.run_id


class Backend(TypingProtocol):
    name: str
    harvest_dirs: list[Path]

    def open(self) -> None: ...

    def fill(self, queue: deque[Job], claim: Callable[[Job, str], None]) -> None:
        """Start as many queued jobs as there is room for; call ``claim(job, where)`` for each first.

        A backend that learns more once a job is started (the Slurm job id) may refine ``job.where``
        before returning; the driver then records it in the store (``runs.worker``)."""

    def poll(self, timeout: float) -> list[tuple[Job, Outcome]]:
        """Wait up to ``timeout`` seconds; return the attempts that ended."""

    def inflight(self) -> int: ...

    def slots(self) -> int:
        """How many runs can run at once (for the ETA)."""

    def on_oom(self, job: Job) -> str | None:
        """Pack fewer runs where ``job`` ran out of memory; says what changed, or None if nothing could."""

    def close(self, cancel: bool) -> None: ...

    # Optional: ``adopt(jobs: list[Job]) -> list[Job]``: given runs a dead driver left running
    # (``job.where`` as recorded, ``job.attempt`` from the store), start tracking those whose
    # attempt still runs, exactly like started ones, and return them. See :func:`adopt`.


def driver_ident() -> str:
    """``host:pid`` of this driver; a claim records ``host:pid:where`` in ``runs.worker``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def recorded_where(worker: str | None) -> str:
    """The ``where`` part of a ``runs.worker`` value (``host:pid:where``)."""
    parts = (worker or "").split(":", 2)
    return parts[2] if len(parts) == 3 else ""


def adopt(store: Store, backend: Backend, specs: list[RunSpec], running: dict[str, tuple[str | None, int]]) -> list[Job]:
    """Re-attach runs a dead driver left running (``running``: ``Store.running``) whose attempts
    still run; call under the driver lock, before ``Store.recover_stale(keep=...)``. The store is
    written here, not by the backend: an ``adopted`` event per run, and the new driver's name in
    ``runs.worker``."""
    take = getattr(backend, "adopt", None)
    by_id = {s.run_id: s for s in specs}
    if take is None or not running:
        return []
    candidates = [Job(by_id[rid], attempt=attempts, where=recorded_where(worker))
                  for rid, (worker, attempts) in running.items() if recorded_where(worker)]
    if not candidates:
        return []
    backend.open()
    adopted = take(candidates)
    ident = driver_ident()
    store.set_workers([(j.run_id, f"{ident}:{j.where}") for j in adopted])
    for j in adopted:
        store.log_event("adopted", f"attempt {j.attempt} still running as {j.where} after its driver stopped: "
                        "re-attached, not resubmitted", run_id=j.run_id, attempt=j.attempt)
    return adopted


def _nearly_full(folder: Path, below_bytes: int = 2**20) -> bool:
    """Whether the disk holding ``folder`` (or its nearest existing parent) has under 1 MiB free."""
    import shutil

    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free < below_bytes
    except OSError:
        return False


def work_dir(store_path: str | Path) -> Path:
    """Per-store folder for worker specs, logs and results in transit: ``runs/x.sqlite`` → ``runs/x.work``."""
    p = Path(store_path)
    return p.with_name(p.stem + ".work")


class Interrupted(Exception):
    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class Driver:
    def __init__(self, specs: list[RunSpec], store: Store, backend: Backend, max_attempts: int,
                 progress=None, heartbeat: Callable[[], None] | None = None, poll_s: float = 0.5,
                 adopted: Iterable[Job] = (), on_settled: Callable[[str], None] | None = None):
        self.specs = specs
        self.store = store
        self.backend = backend
        self.max_attempts = max_attempts
        self.progress = progress
        self.heartbeat = heartbeat or (lambda: None)
        self.poll_s = poll_s
        self.by_id = {s.run_id: s for s in specs}
        self.ident = driver_ident()
        self.adopted = list(adopted)  # already in flight in the backend (see adopt())
        self._adopted_ids = {j.run_id for j in self.adopted}
        self._claimed: list[tuple[Job, str]] = []
        # called with a run_id once its run is recorded done or finally failed (tracking sinks)
        self.on_settled = on_settled or (lambda run_id: None)

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> dict[str, int]:
        """Run every run of ``specs`` that is not done; returns the grid's final counts."""
        self.harvest()
        statuses = self.store.statuses(self.by_id)
        queue = deque(Job(s) for s in self.specs
                      if statuses[s.run_id] in ("pending", "running") and s.run_id not in self._adopted_ids)
        if queue or self.adopted:
            self._run_queue(queue)
        return self.store.counts(self.by_id)

    def _run_queue(self, queue: deque[Job]) -> None:
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}

        def on_signal(signum, frame):
            raise Interrupted(signum)

        for sig in previous:
            signal.signal(sig, on_signal)
        self.backend.open()
        if self.progress:
            for job in self.adopted:
                self.progress.started(job.spec, f"{job.where} (re-attached)")
        clean = False
        try:
            while queue or self.backend.inflight():
                if queue:
                    self.backend.fill(queue, self._claim)
                    self._record_placements()
                    if queue and not self.backend.inflight():
                        raise RuntimeError(f"backend {self.backend.name} could not start any of {len(queue)} runs")
                for job, outcome in self.backend.poll(self.poll_s):
                    self._settle(job, outcome, queue)
                self.heartbeat()
                if self.progress:
                    self.progress.tick()
            clean = True
        finally:
            try:
                self.backend.close(cancel=not clean)
            finally:
                if not clean:
                    try:
                        self.store.recover_stale()  # our own running attempts: given back, not failed
                    except sqlite3.Error as e:
                        if not is_disk_full(e):
                            raise  # (on a full disk: left running; the next driver gives them back)
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _claim(self, job: Job, where: str) -> None:
        job.attempt = self.store.mark_running(job.run_id, f"{self.ident}:{where}")
        job.where = where
        self._claimed.append((job, where))
        if self.progress:
            self.progress.started(job.spec, where)

    def _record_placements(self) -> None:
        """Persist what the backend learned while starting the claimed jobs (the Slurm job id)."""
        moved = [(job.run_id, f"{self.ident}:{job.where}") for job, where in self._claimed if job.where != where]
        self._claimed.clear()
        if moved:
            self.store.set_workers(moved)

    def _settle(self, job: Job, outcome: Outcome, queue: deque[Job]) -> None:
        folder = getattr(self.backend, "checkpoint_dir", None)
        if not outcome.ok and not outcome.disk_full and folder is not None and _nearly_full(folder):
            outcome.disk_full = str(folder)  # (a worker that cannot even write its log dies in odd ways)
        if outcome.disk_full:
            raise DiskFull(outcome.disk_full, f"run {job.run_id} (attempt {job.attempt}) could not write its files")
        if outcome.ok:
            try:
                result = RunResult.from_json(outcome.result_json)
                if result.run_id != job.run_id:
                    raise ValueError(f"worker returned the result of run {result.run_id}")
            except (ValueError, TypeError, KeyError) as e:
                outcome = Outcome(returncode=outcome.returncode, message=f"unreadable result: {e}")
            else:
                self._record(result)
                self._discard(outcome.result_file)
                if self.progress:
                    self.progress.finished(job.spec, result)
                return
        repacked = self.backend.on_oom(job) if outcome.oom else None
        if repacked:
            job.free_retries += 1
        final = job.attempt - job.free_retries >= self.max_attempts or outcome.plugin_fault
        message = outcome.message + (f" (attempt {job.attempt}, on {job.where})" if job.where else "")
        if repacked:
            message += f"; out of memory: {repacked}"
        self.store.record_failure(job.run_id, message, outcome.traceback, final=final,
                                  kind="oom" if outcome.oom else "failure")
        if self.progress:
            self.progress.failed_attempt(job.spec, final, outcome.message)
        if final:
            self.on_settled(job.run_id)
        else:
            queue.appendleft(job)  # retry soon: keeps seed blocks complete, surfaces bad cells early

    # -- results that arrived while no driver was recording ----------------------------------
    def harvest(self) -> int:
        n = 0
        for folder in self.backend.harvest_dirs:
            if not Path(folder).is_dir():
                continue
            for f in sorted(Path(folder).glob("*.json")):
                status = self.store.status_of(f.stem)
                if status is None or f.stem in self._adopted_ids:
                    continue  # not a run of this store / comes back through the backend
                if status == "done":
                    self._discard(f)
                    continue
                try:
                    result = RunResult.from_json(f.read_text())
                except (OSError, ValueError, TypeError):
                    continue
                if result.run_id != f.stem:
                    continue
                self._record(result)
                self.store.log_event("harvested", f"result collected from {f}", run_id=f.stem)
                self._discard(f)
                n += 1
                if self.progress and f.stem in self.by_id:
                    self.progress.harvested(self.by_id[f.stem])
        return n

    def _record(self, result: RunResult) -> None:
        """Record a finished run; say if it resumed from a mid-run checkpoint; delete its checkpoint."""
        self.store.record_result(result)
        self.on_settled(result.run_id)
        if result.resumed_from_step is not None:
            self.store.log_event("resumed", f"resumed from the checkpoint at step {result.resumed_from_step}",
                                 run_id=result.run_id)
        checkpoint.discard(getattr(self.backend, "checkpoint_dir", None), result.run_id)

    @staticmethod
    def _discard(path: Path | None) -> None:
        if path is not None:
            try:
                Path(path).unlink()
            except FileNotFoundError:
                pass
