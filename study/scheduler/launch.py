"""The worker command and its environment, the same for every backend.

Every run is ``study.worker.main`` in a fresh process whose environment is fixed before the
run starts: the GPU it may see (``CUDA_VISIBLE_DEVICES``), cuBLAS's deterministic workspace,
``PYTHONHASHSEED`` and the thread counts. The local pool forks it from a preloaded server
(``forkserver.py``) or starts ``python -m study.worker SPEC RESULT`` with ``Popen``; Ray tasks
and Slurm jobs call :func:`run_worker_blocking` around that very command and hand back a plain
dict (picklable, no store access).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from study.checkpoint import CHECKPOINT_DIR_ENV
from study.seeding import CUBLAS_WORKSPACE
from study.worker import DISK_FULL_PREFIX, EXIT_DISK_FULL, EXIT_OOM, EXIT_PLUGIN

# The same for every run and every way of starting one: a forked worker keeps its server's hash
# seed, and runs that are compared must not differ in set/dict iteration order either.
PYTHONHASHSEED = "0"
INHERIT = "inherit"  # keep the CUDA_VISIBLE_DEVICES a cluster manager (Ray, Slurm) already set
LOG_TAIL_CHARS = 8000


@dataclass
class Outcome:
    """What became of one attempt; ``result_json`` is set exactly when it succeeded."""

    returncode: int | None
    result_json: str | None = None
    message: str = ""  # one line for the events table and the progress log
    traceback: str = ""  # the worker's traceback (or log tail)
    oom: bool = False
    plugin_fault: bool = False  # raised in a masker plugin's code: seeded, so it would recur; not retried
    disk_full: str | None = None  # the file a write found no space for (worker exit code 6)
    result_file: Path | None = None  # the driver deletes it once the result is recorded

    @property
    def ok(self) -> bool:
        return self.result_json is not None


def worker_env(threads: int, gpu: int | str | None, slot: str = "", base: dict | None = None,
               start: str = "spawn", checkpoint_dir: str | Path | None = None) -> dict:
    """Environment for one worker. ``gpu``: an index, INHERIT, or None for a CPU-only run;
    ``checkpoint_dir``: where its mid-run checkpoints go (a folder that outlives the worker)."""
    env = dict(os.environ if base is None else base)
    if gpu is None:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU slot must not grab a GPU
    elif gpu != INHERIT:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if gpu is not None:
        # Packed runs share a GPU: growing segments instead of fixed blocks leaves less memory
        # stranded in fragments, so a run fails for its own use of memory, not for its neighbours'.
        env.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    env["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE  # needed by deterministic cuBLAS; harmless otherwise
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # GPU indices as nvidia-smi numbers them (detect_gpus)
    # pyarrow's bundled jemalloc starts a background thread (seen on a 16-core GPU machine), and a
    # process with a second thread must not fork: the fork server would fall back to spawning.
    env.setdefault("JE_ARROW_MALLOC_CONF", "background_thread:false")
    env["PYTHONHASHSEED"] = PYTHONHASHSEED
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env["MASKSTUDY_SLOT"] = slot
    env["MASKSTUDY_WORKER_START"] = start  # recorded with the run: forked from the server, or spawned
    env["MASKSTUDY_PARENT_PID"] = str(os.getpid())  # the worker exits if its launcher dies
    env.pop(CHECKPOINT_DIR_ENV, None)
    if checkpoint_dir is not None:
        env[CHECKPOINT_DIR_ENV] = str(checkpoint_dir)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def worker_command(spec_file: Path, result_file: Path) -> list[str]:
    return [sys.executable, "-m", "study.worker", str(spec_file), str(result_file)]


def _libc() -> ctypes.CDLL:
    """The C library, for prctl (Linux); OSError elsewhere."""
    return ctypes.CDLL("libc.so.6", use_errno=True)


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the launching process dies (Linux), even on kill -9."""
    try:
        _libc().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the worker's own parent watch covers it
        pass


def set_process_name(name: str) -> None:
    """Name this process in ``ps``/``top`` (Linux: 15 characters), e.g. after the run it runs."""
    try:
        _libc().prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)  # PR_SET_NAME
    except OSError:
        pass


def extract_traceback(log: str) -> str:
    start = log.rfind("Traceback (most recent call last)")
    return log[start:][-LOG_TAIL_CHARS:] if start >= 0 else log[-LOG_TAIL_CHARS:]


def describe_exit(returncode: int | None, log: str, timed_out_min: float | None = None) -> Outcome:
    """An Outcome for an attempt that produced no result."""
    tb = extract_traceback(log)
    last = next((ln for ln in reversed(tb.strip().splitlines()) if ln.strip()), "")
    if timed_out_min is not None:
        message = f"timed out after {timed_out_min:g} min (execution.timeout_min); worker killed"
    elif returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        message = f"worker killed by {name}"
    elif returncode == EXIT_DISK_FULL and last.startswith(DISK_FULL_PREFIX):
        message = f"worker stopped: {last}"
    elif returncode == 0:
        message = "worker exited 0 without writing a result"
    elif returncode == EXIT_PLUGIN:
        message = f"{last[:400]}; not retried: the run is seeded, so a plugin error recurs at the same step"
    else:
        message = f"worker exited with code {returncode}: {last[:300]}"
    disk_full = last.removeprefix(DISK_FULL_PREFIX) if returncode == EXIT_DISK_FULL else None
    return Outcome(returncode=returncode, message=message, traceback=tb, oom=returncode == EXIT_OOM,
                   plugin_fault=returncode == EXIT_PLUGIN, disk_full=disk_full)


def read_tail(path: Path, chars: int = 64_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - chars))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def run_worker_blocking(spec_json: str, threads: int, gpu: int | str | None = INHERIT,
                        timeout_s: float | None = None, copy_result_to: str | None = None, slot: str = "",
                        checkpoint_dir: str | None = None) -> dict:
    """Run the worker command to completion in a private temp folder; returns a picklable dict.

    Used inside Ray tasks and Slurm jobs, which may run on machines that cannot see the driver's
    files: the result travels back as the return value. ``copy_result_to`` (a folder on a shared
    file system) also keeps a copy there, so a restarted driver can collect results of jobs that
    finished while it was down; ``checkpoint_dir`` (also shared) keeps mid-run checkpoints there,
    so a pre-empted and requeued job resumes instead of restarting.
    """
    with tempfile.TemporaryDirectory(prefix="maskstudy-") as tmp:
        spec_file, result_file, log_file = Path(tmp) / "spec.json", Path(tmp) / "result.json", Path(tmp) / "log"
        spec_file.write_text(spec_json)
        env = worker_env(threads, gpu, slot=slot, checkpoint_dir=checkpoint_dir)
        with open(log_file, "wb") as log:
            proc = subprocess.Popen(worker_command(spec_file, result_file), env=env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:  # also on SystemExit from a pre-emption handler: never leave the worker behind
                if proc.poll() is None:
                    _kill_group(proc.pid)
                    proc.wait()
        result = result_file.read_text() if proc.returncode == 0 and result_file.exists() else None
        if result is not None and copy_result_to:
            import json

            dest = Path(copy_result_to)
            dest.mkdir(parents=True, exist_ok=True)
            run_id = json.loads(result)["run_id"]
            tmp_dest = dest / f".{run_id}.{os.getpid()}.tmp"
            tmp_dest.write_text(result)
            os.replace(tmp_dest, dest / f"{run_id}.json")
        return {"returncode": proc.returncode, "result_json": result, "log_tail": read_tail(log_file),
                "timed_out_min": timeout_s / 60 if timed_out else None,
                "cuda_visible_devices": env.get("CUDA_VISIBLE_DEVICES"), "host": os.uname().nodename}


def outcome_from_dict(d: dict) -> Outcome:
    if d.get("result_json") is not None:
        return Outcome(returncode=d.get("returncode"), result_json=d["result_json"])
    return describe_exit(d.get("returncode"), d.get("log_tail", ""), d.get("timed_out_min"))


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
