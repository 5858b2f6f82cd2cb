"""Worker process: run one spec and hand the result back to the driver.

    python -m study.worker SPEC_JSON_FILE RESULT_JSON_FILE

The driver starts each run in a fresh process whose environment (CUDA_VISIBLE_DEVICES,
CUBLAS_WORKSPACE_CONFIG, PYTHONHASHSEED, thread counts) is set before the run starts
(``study.scheduler.launch``): this command, or ``main`` called in a child forked from the local
pool's warm fork server (``study.scheduler.forkserver``). The worker never touches the store: it writes the result to a
temporary file and renames it into place, so the driver sees either a complete result or none.
Exit code 0 on success; on failure the traceback goes to stderr and the exit code is 1
(3 for CUDA out-of-memory, so the driver can pack fewer runs on that GPU; 5 for an exception
raised in a masker plugin's code: the run is seeded, so it would recur at the same step, and the
driver does not retry it; 6 when a write found the disk full, so the driver stops the grid
instead of burning attempts).

If ``MASKSTUDY_CHECKPOINT_DIR`` is set, the run writes mid-run checkpoints there (when the spec's
``execution.checkpoint_every_*`` asks for them) and resumes from one it finds for its run_id. An
attempt that resumed and then failed with an error sets the run's checkpoints aside, so the
retry starts from step 0 (``study.checkpoint.set_aside_after_failure``: never a crash loop).

If ``MASKSTUDY_PARENT_PID`` is set and that process goes away (its launcher was killed), the
worker exits at once rather than finishing a run nobody will record.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from pathlib import Path

EXIT_FAILED = 1
EXIT_OOM = 3
EXIT_ORPHANED = 4
EXIT_PLUGIN = 5
EXIT_DISK_FULL = 6
DISK_FULL_PREFIX = "disk full while writing "  # the worker's last line; the driver reads the path from it


# Out-of-memory as CUDA reports it: the caching allocator (torch.cuda.OutOfMemoryError), context
# creation ("CUDA error: out of memory"), and cuBLAS / cuDNN failing to allocate their workspace.
OOM_MESSAGES = ("CUDA out of memory", "CUDA error: out of memory", "CUBLAS_STATUS_ALLOC_FAILED",
                "CUDNN_STATUS_ALLOC_FAILED")


def is_oom(exc: BaseException) -> bool:
    """Whether a failure was the GPU running out of memory: the driver then packs fewer runs per GPU."""
    text = str(exc)
    return type(exc).__name__ == "OutOfMemoryError" or any(m in text for m in OOM_MESSAGES)


def _watch_parent(parent_pid: int, interval_s: float = 1.0) -> None:
    def loop() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent_pid:
                os._exit(EXIT_ORPHANED)

    threading.Thread(target=loop, name="parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m study.worker SPEC_JSON_FILE RESULT_JSON_FILE", file=sys.stderr)
        return 2
    parent = os.environ.get("MASKSTUDY_PARENT_PID")
    if parent and parent.isdigit():
        if os.getppid() != int(parent):
            return EXIT_ORPHANED
        _watch_parent(int(parent))
    spec_file, result_file = map(Path, argv)
    from study import checkpoint
    from study.checkpoint import CHECKPOINT_DIR_ENV
    from study.errors import is_disk_full
    from study.spec import RunSpec
    from study.train import run_one

    spec = RunSpec.from_json(spec_file.read_text())
    try:
        result = run_one(spec, checkpoint_dir=os.environ.get(CHECKPOINT_DIR_ENV) or None)
    except BaseException as exc:  # noqa: BLE001  (everything is reported to the driver)
        traceback.print_exc(file=sys.stderr)
        if is_oom(exc):
            return EXIT_OOM
        if is_disk_full(exc):
            return _disk_full(exc)
        if isinstance(exc, Exception):  # (not a pre-emption's SystemExit or an interrupt)
            checkpoint.set_aside_after_failure(spec.run_id)
        from study.plugins import plugin_fault

        fault = plugin_fault(exc, spec.masker["kind"]) if isinstance(exc, Exception) else None
        if fault is not None:  # the last line of the log: the driver's one-line message
            print(f"plugin {Path(fault.plugin.ref).name}: {fault.describe()}", file=sys.stderr)
            return EXIT_PLUGIN
        return EXIT_FAILED
    tmp = result_file.with_name(f".{result_file.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(result.to_json())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if not is_disk_full(exc):
            raise
        return _disk_full(OSError(exc.errno, exc.strerror, str(result_file)))
    os.replace(tmp, result_file)
    return 0


def _disk_full(exc: OSError) -> int:
    print(f"{DISK_FULL_PREFIX}{exc.filename or '(a file of this run)'}", file=sys.stderr)
    return EXIT_DISK_FULL


if __name__ == "__main__":
    code = main()
    # Skip interpreter finalisation (about a second with torch and friends loaded, per run):
    # the result file is already closed and renamed into place, so only the streams need flushing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
