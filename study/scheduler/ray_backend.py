"""Ray backend (``study run --backend ray``): each run is a Ray task around the worker command.

Install with ``pip install maskstudy[ray]``. The driver connects to a running cluster
(``execution.ray.address: auto`` or ``ray://host:10001``) or starts a local Ray
(``execution.ray.num_cpus`` / ``num_gpus`` set its resources; a ``num_gpus`` on a CPU box
fakes GPUs, which is how the tests run it).

A task asks for ``num_gpus = 1 / runs_per_gpu``; Ray picks the GPU and sets the task's
``CUDA_VISIBLE_DEVICES``, which the worker inherits. The task runs the same
``python -m study.worker`` in a private temp folder on whichever node it lands and returns the
result as its value — the driver alone writes the store. After an out-of-memory failure the
run is retried asking for a bigger share of a GPU (``1 / (k - 1)``), so fewer runs share it.
The driver keeps at most as many tasks in flight as the cluster has slots right now (so runs
marked ``running`` really run), re-reading the cluster's resources as it grows or shrinks.
The project must be importable on every node (install it there, or use a Ray runtime_env).

Mid-run checkpoints (``execution.checkpoint_every_*``) go to ``<store>.work/checkpoints/``, which
must be on a file system every node shares (as the store's folder usually is on a cluster): a
run whose task or worker was killed is retried by the driver and resumes from its checkpoint.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from study.protocol import Protocol
from study.scheduler.driver import Job, work_dir
from study.scheduler.launch import INHERIT, Outcome, outcome_from_dict, run_worker_blocking

MISSING = ("the Ray backend needs the `ray` package, which is not installed. "
           "Fix: pip install 'maskstudy[ray]'  (or: pip install 'ray>=2.9'), or use --backend local")


def import_ray():
    try:
        import ray
    except ImportError:
        from study.errors import UserError

        raise UserError(MISSING) from None
    return ray


def ray_task(spec_json: str, threads: int, timeout_s: float | None, checkpoint_dir: str | None = None) -> dict:
    """Body of the Ray task (module-level, so Ray ships it by reference)."""
    return run_worker_blocking(spec_json, threads, gpu=INHERIT, timeout_s=timeout_s, slot="ray",
                               checkpoint_dir=checkpoint_dir)


class RayBackend:
    name = "ray"

    def __init__(self, protocol: Protocol, store_path: str | Path | None = None):
        ex = protocol.execution
        self.cfg = ex.ray
        self.runs_per_gpu = ex.runs_per_gpu
        self.threads = ex.threads_per_run or 1
        self.timeout_s = ex.timeout_min * 60 if ex.timeout_min else None
        self.harvest_dirs: list[Path] = []  # results come back as task values
        # the driver deletes a run's checkpoints once it is recorded
        self.checkpoint_dir = work_dir(Path(store_path).absolute()) / "checkpoints" if store_path is not None else None
        self.ray = import_ray()
        self.started_ray = False
        self.remote = None
        self.tasks: dict = {}  # ObjectRef → Job
        self._slots_checked = -1e9
        self._slots = 1
        self._gpus = 0.0

    def describe(self) -> str:
        gpus, cpus = self._resources()
        where = self.cfg.address or "a local Ray"
        unit = f"{gpus:g} GPU(s) × {self.runs_per_gpu} run(s) per GPU" if gpus else f"{cpus:g} CPU(s), no GPU"
        return f"ray: {where}, {unit}, at most {self._capacity()} runs in flight"

    def open(self) -> None:
        if self.remote is not None:
            return
        ray = self.ray
        if not ray.is_initialized():
            if self.cfg.address:
                ray.init(address=self.cfg.address, log_to_driver=False)
            else:
                ray.init(num_cpus=self.cfg.num_cpus, num_gpus=self.cfg.num_gpus, include_dashboard=False,
                         log_to_driver=False)
                self.started_ray = True
        self.remote = ray.remote(ray_task)

    def _resources(self) -> tuple[float, float]:
        res = self.ray.cluster_resources()
        return float(res.get("GPU", 0)), float(res.get("CPU", 1))

    def _capacity(self) -> int:
        """Runs the cluster can hold now (re-read every 10 s, so a growing cluster is used)."""
        now = time.monotonic()
        if now - self._slots_checked > 10:
            self._gpus, cpus = self._resources()
            self._slots = int(self._gpus * self.runs_per_gpu) if self._gpus else int(cpus // self.threads)
            self._slots = max(1, self._slots)
            self._slots_checked = now
        return self._slots

    def slots(self) -> int:
        return self._capacity()

    def inflight(self) -> int:
        return len(self.tasks)

    def fill(self, queue: deque[Job], claim: Callable[[Job, str], None]) -> None:
        while queue and len(self.tasks) < self._capacity():
            job = queue.popleft()
            if self._gpus:
                job.packing = job.packing or self.runs_per_gpu
                opts = {"num_gpus": 1.0 / job.packing, "num_cpus": 1}
                where = f"ray:gpu/{job.packing}"
            else:
                opts = {"num_gpus": 0, "num_cpus": self.threads}
                where = "ray:cpu"
            claim(job, where)
            ref = self.remote.options(**opts, max_retries=0).remote(
                job.spec.to_json(), self.threads, self.timeout_s,
                str(self.checkpoint_dir) if self.checkpoint_dir is not None else None)
            self.tasks[ref] = job

    def poll(self, timeout: float) -> list[tuple[Job, Outcome]]:
        if not self.tasks:
            return []
        ready, _ = self.ray.wait(list(self.tasks), num_returns=1, timeout=timeout)
        if ready:  # collect everything else that is also ready, without waiting
            ready, _ = self.ray.wait(list(self.tasks), num_returns=len(self.tasks), timeout=0)
        ended = []
        for ref in ready:
            job = self.tasks.pop(ref)
            try:
                d = self.ray.get(ref)
            except Exception as e:  # noqa: BLE001  (the task itself died: node lost, cancelled, ...)
                ended.append((job, Outcome(returncode=None, message=f"ray task failed: {type(e).__name__}",
                                           traceback=str(e)[-8000:])))
                continue
            out = outcome_from_dict(d)
            if not out.ok:
                out.traceback = f"[ray node {d.get('host')}, CUDA_VISIBLE_DEVICES={d.get('cuda_visible_devices')!r}]\n" + out.traceback
            job.where = f"{job.where}@{d.get('host')}:cuda={d.get('cuda_visible_devices')}"
            ended.append((job, out))
        return ended

    def on_oom(self, job: Job) -> str | None:
        if not job.packing or job.packing <= 1:
            return None
        job.packing -= 1
        return f"retrying with num_gpus=1/{job.packing} (fewer runs share its GPU)"

    def close(self, cancel: bool) -> None:
        if cancel:
            for ref in list(self.tasks):
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001
                    pass
        self.tasks.clear()
        if self.started_ray:
            self.ray.shutdown()
            self.started_ray = False
            self.remote = None
