"""Slurm backend (``study run --backend slurm``): submitit job arrays around the worker command.

Install with ``pip install maskstudy[slurm]``. Settings come from the protocol:

    execution:
      slurm: {partition: gpu, time_min: 120, gpus_per_task: 1, cpus_per_task: 8, mem_gb: 32,
              array_parallelism: 16, folder: runs/slurm, executor: slurm,
              additional_parameters: {account: my-lab}}

The pending runs are submitted as one job array (at most ``array_parallelism`` tasks running
at once); each array task runs one run: the same ``python -m study.worker`` in a temp folder
on the node, with the GPU(s) Slurm gave it. The task returns the result to the driver
(submitit pickles it into ``folder``) and also drops a copy in ``folder/results/``.
Retries go out as a new, smaller array. One run per array task, so out-of-memory failures are
plain retries here (no packing to reduce).

Driver crashes: jobs outlive the driver, so a restarted ``study run`` picks up their work
instead of paying for it twice. Once the array is submitted, the driver records each run's job
id in the store (``runs.worker`` = ``host:pid:slurm:<job id>``). On restart, before anything is
resubmitted, :meth:`SlurmBackend.adopt` asks about those jobs (one ``sacct`` call; for the local
executor, whether the job's controller process still runs): a job still pending or running is
*re-attached* — tracked like a job the new driver submitted, same attempt, not resubmitted,
its result or failure recorded when it ends — and logged as an ``adopted`` event. Jobs that are
gone fall back to the plain path: a result they left in ``folder/results/`` is collected, other
runs go back to pending and are resubmitted. (A driver killed in the instant between
submitting an array and recording its ids resubmits those runs; ``folder`` must stay the same
across restarts.)

Pre-emption and time limits: the job callable is ``submitit.helpers.Checkpointable``, so when
Slurm pre-empts a task or its time runs out, submitit requeues it (up to ``max_num_timeout``
times for time-outs); a run restarts from scratch (runs are atomic), and the worker of the
interrupted attempt is killed with its job.

``executor: local`` runs the same code path with submitit's local executor (processes on this
machine, no Slurm; ``array_parallelism`` is then enforced by the driver) — how the tests run it.
Its jobs survive a ``kill -9`` of the driver too (each job is a controller process, pid = job
id, that is reparented when the driver dies), but submitit follows only jobs it started in the
same Python process — a rebuilt ``LocalJob`` reports "done" at once — so re-attached local jobs
are followed by their controller's pid (:class:`_OrphanedLocalJob`). ``executor: debug`` runs
jobs in the driver's process, for stepping through with a debugger (nothing to re-attach).
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from study.protocol import Protocol
from study.scheduler.driver import Job
from study.scheduler.launch import INHERIT, Outcome, outcome_from_dict, run_worker_blocking

MISSING = ("the Slurm backend needs the `submitit` package, which is not installed. "
           "Fix: pip install 'maskstudy[slurm]'  (or: pip install 'submitit>=1.5'), or use --backend local")

try:  # the job callable must be importable by reference on the nodes, so it lives at module level
    from submitit.helpers import Checkpointable as _CheckpointableBase
except ImportError:  # pragma: no cover - the backend refuses to start without submitit
    _CheckpointableBase = object


def import_submitit():
    try:
        import submitit
    except ImportError:
        from study.errors import UserError

        raise UserError(MISSING) from None
    return submitit


class SlurmRun(_CheckpointableBase):
    """One array task: run the worker command for one spec. Requeued as-is on pre-emption/time-out."""

    def __call__(self, spec_json: str, threads: int, results_dir: str) -> dict:
        return run_worker_blocking(spec_json, threads, gpu=INHERIT, copy_result_to=results_dir,
                                   slot="slurm", checkpoint_dir=str(Path(results_dir).parent / "checkpoints"))


# sacct states of a job that has not ended yet (submitit's own list, plus the transient ones)
ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "PREEMPTED", "CONFIGURING", "SUSPENDED",
                 "RESIZING", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"}
RECORDED_JOB = re.compile(r"slurm:([0-9]+(?:_[0-9]+)?)")


def _local_controller_alive(job_id: str, folder: str) -> bool:
    """Whether the submitit local-executor job ``job_id`` (its controller's pid) still runs (Linux)."""
    try:
        proc = Path("/proc") / str(int(job_id))
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except (OSError, ValueError, IndexError):
        return False
    # a zombie has ended; the command line guards against a recycled pid
    return state not in ("Z", "X") and "submitit.local._local" in argv and folder in argv


class _OrphanedLocalJob:
    """A local-executor job started by a driver that has died: followed by its controller's pid."""

    def __init__(self, submitit, folder: str, job_id: str):
        self.folder, self.job_id = folder, job_id
        self._job = submitit.LocalJob(folder, job_id)  # without its Popen: reads the result pickle
        self._job._results_timeout_s = 2  # its controller has exited: the pickle is there or never will be

    def done(self) -> bool:
        return not _local_controller_alive(self.job_id, self.folder)

    def result(self):
        return self._job.result()

    def cancel(self, check: bool = False) -> None:
        if not self.done():
            os.kill(int(self.job_id), signal.SIGINT)  # what LocalJob.cancel sends its controller


class SlurmBackend:
    name = "slurm"

    def __init__(self, protocol: Protocol):
        ex = protocol.execution
        self.cfg = ex.slurm
        self.study = protocol.name
        self.threads = ex.threads_per_run or self.cfg.cpus_per_task
        self.submitit = import_submitit()
        self.folder = Path(self.cfg.folder)
        self.results_dir = self.folder / "results"
        self.harvest_dirs = [self.results_dir]
        self.checkpoint_dir = self.folder / "checkpoints"  # the driver deletes a run's once it is recorded
        self.jobs: dict[str, tuple[object, Job]] = {}  # submitit job id → (job, Job)
        self.executor = None
        self._last_poll = 0.0

    def describe(self) -> str:
        c = self.cfg
        return (f"slurm ({c.executor} executor): job arrays of ≤ {c.array_parallelism} parallel tasks, "
                f"partition {c.partition or '(default)'}, {c.time_min} min, {c.gpus_per_task} GPU(s) and "
                f"{c.cpus_per_task} CPUs per task; submitit folder {self.folder}")

    def open(self) -> None:
        if self.executor is not None:
            return
        c = self.cfg
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.executor = self.submitit.AutoExecutor(folder=str(self.folder / "%j"), cluster=c.executor,
                                                   slurm_max_num_timeout=c.max_num_timeout)
        params = {"name": f"maskstudy-{self.study}", "timeout_min": c.time_min, "nodes": 1, "tasks_per_node": 1,
                  "cpus_per_task": c.cpus_per_task, "gpus_per_node": c.gpus_per_task,
                  "slurm_array_parallelism": c.array_parallelism}
        if c.mem_gb is not None:
            params["mem_gb"] = c.mem_gb
        if c.partition:
            params["slurm_partition"] = c.partition
        if c.additional_parameters:
            params["slurm_additional_parameters"] = dict(c.additional_parameters)
        self.executor.update_parameters(**params)

    def slots(self) -> int:
        return self.cfg.array_parallelism

    def inflight(self) -> int:
        return len(self.jobs)

    def fill(self, queue: deque[Job], claim: Callable[[Job, str], None]) -> None:
        room = len(queue)
        if self.cfg.executor != "slurm":  # Slurm throttles arrays itself; the local executor does not
            room = max(0, self.cfg.array_parallelism - len(self.jobs))
        batch = [queue.popleft() for _ in range(min(room, len(queue)))]
        if not batch:
            return
        for job in batch:
            claim(job, "slurm")
        fn = SlurmRun()
        submitted = self.executor.map_array(fn, [j.spec.to_json() for j in batch],
                                            [self.threads] * len(batch), [str(self.results_dir)] * len(batch))
        for sjob, job in zip(submitted, batch, strict=True):
            job.where = f"slurm:{sjob.job_id}"
            self.jobs[sjob.job_id] = (sjob, job)

    def poll(self, timeout: float) -> list[tuple[Job, Outcome]]:
        # submitit caches Slurm's state (one sacct call for all jobs per interval); no need to spin
        wait = max(0.0, min(timeout, self._last_poll + timeout - time.monotonic()))
        time.sleep(wait)
        self._last_poll = time.monotonic()
        ended = []
        for jid, (sjob, job) in list(self.jobs.items()):
            if not sjob.done():
                continue
            del self.jobs[jid]
            try:
                d = sjob.result()
            except Exception as e:  # noqa: BLE001  (job failed, was cancelled, node died, ...)
                ended.append((job, Outcome(returncode=None, message=f"slurm job {jid} failed: {type(e).__name__}",
                                           traceback=str(e)[-8000:])))
                continue
            out = outcome_from_dict(d)
            if out.ok:
                out.result_file = self.results_dir / f"{job.run_id}.json"
            ended.append((job, out))
        return ended

    def adopt(self, jobs: list[Job]) -> list[Job]:
        """Re-attach to the runs of a dead driver whose recorded job (``job.where`` = ``slurm:<id>``)
        is still pending or running; they are then polled like submitted ones. Returns those."""
        self.open()
        recorded = [(job, m.group(1)) for job in jobs if (m := RECORDED_JOB.fullmatch(job.where))]
        if not recorded or self.cfg.executor == "debug":  # debug jobs ran inside the dead driver
            return []
        folder = str(self.executor.folder)  # absolute, with the %j of open()
        if self.cfg.executor == "slurm":
            sjobs = [(job, self.submitit.SlurmJob(folder=folder, job_id=jid)) for job, jid in recorded]
            # (the first .state asks sacct about every registered job at once; the rest read its answer)
            alive = [(job, s) for job, s in sjobs if (s.state.split() or ["UNKNOWN"])[0].upper() in ACTIVE_STATES]
        else:
            alive = [(job, _OrphanedLocalJob(self.submitit, folder, jid)) for job, jid in recorded
                     if _local_controller_alive(jid, folder)]
        for job, sjob in alive:
            self.jobs[sjob.job_id] = (sjob, job)
        return [job for job, _ in alive]

    def on_oom(self, job: Job) -> str | None:
        return None

    def close(self, cancel: bool) -> None:
        if cancel:
            for sjob, _ in self.jobs.values():
                try:
                    sjob.cancel(check=False)
                except Exception:  # noqa: BLE001
                    pass
        self.jobs.clear()
