"""Local backend: a pool of slots, each run in a fresh worker subprocess.

The driver (this process) is the only writer of the store. Each slot runs one worker at a
time; a worker gets its environment before Python starts, returns its result through a file,
and the driver records it in one transaction.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from study.protocol import Protocol
from study.results import RunResult
from study.spec import RunSpec
from study.store import Store


@dataclass(frozen=True)
class Slot:
    name: str  # "cpu0", "gpu1"
    gpu: int | None  # GPU index for CUDA_VISIBLE_DEVICES, None for a CPU slot


def detect_gpus() -> int:
    """Number of visible GPUs without initialising CUDA in the driver (nvidia-smi, else torch)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))
    except (OSError, subprocess.TimeoutExpired):
        pass
    return 0


def make_slots(protocol: Protocol, gpus: int | None = None) -> list[Slot]:
    gpus = detect_gpus() if gpus is None else gpus
    if gpus:
        return [Slot(f"gpu{g}.{k}", g) for g in range(gpus) for k in range(protocol.execution.runs_per_gpu)]
    return [Slot(f"cpu{k}", None) for k in range(protocol.execution.cpu_slots)]


def worker_env(spec: RunSpec, slot: Slot, threads: int) -> dict:
    """Environment a worker needs before Python starts (CUDA device, determinism, threads)."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = "" if slot.gpu is None else str(slot.gpu)
    env["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    env["PYTHONHASHSEED"] = str(spec.seed)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    return env


@dataclass
class WorkerOutcome:
    result: RunResult | None
    returncode: int
    stderr_tail: str


def run_worker(spec: RunSpec, slot: Slot, threads: int, timeout_s: float | None = None) -> WorkerOutcome:
    with tempfile.TemporaryDirectory(prefix="maskstudy-") as tmp:
        spec_file, result_file = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_file.write_text(spec.to_json())
        proc = subprocess.run([sys.executable, "-m", "study.worker", str(spec_file), str(result_file)],
                              env=worker_env(spec, slot, threads), capture_output=True, text=True,
                              timeout=timeout_s)
        result = RunResult.from_json(result_file.read_text()) if proc.returncode == 0 and result_file.exists() else None
        return WorkerOutcome(result, proc.returncode, proc.stderr[-8000:])


def run_local(protocol: Protocol, specs: list[RunSpec], store: Store, progress=None) -> dict[str, int]:
    """Run every spec not yet done; returns the final counts for the grid."""
    statuses = store.statuses(s.run_id for s in specs)
    todo = [s for s in specs if statuses[s.run_id] in ("pending", "running")]
    slots = make_slots(protocol)
    threads = protocol.execution.threads_per_run or max(1, (os.cpu_count() or 1) // len(slots))
    max_attempts = protocol.execution.max_attempts
    lock = threading.Lock()  # serialises store writes from slot threads (one connection)
    free = list(slots)

    def one(spec: RunSpec) -> None:
        with lock:
            slot = free.pop()
        try:
            while True:
                with lock:
                    attempt = store.mark_running(spec.run_id, f"{socket.gethostname()}:{os.getpid()}:{slot.name}")
                    if progress:
                        progress.started(spec)
                outcome = run_worker(spec, slot, threads)
                with lock:
                    if outcome.result is not None:
                        store.record_result(outcome.result)
                        if progress:
                            progress.finished(spec, outcome.result)
                        return
                    final = attempt >= max_attempts
                    store.record_failure(spec.run_id, f"worker exited with code {outcome.returncode}",
                                         outcome.stderr_tail, final=final)
                    if progress:
                        progress.failed(spec, final)
                    if final:
                        return
        finally:
            with lock:
                free.append(slot)

    with ThreadPoolExecutor(max_workers=len(slots)) as pool:
        list(pool.map(one, todo))
    return store.counts(s.run_id for s in specs)
