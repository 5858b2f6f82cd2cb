"""Worker process: run one spec and hand the result back to the driver.

    python -m study.worker SPEC_JSON_FILE RESULT_JSON_FILE

The driver starts each run in a fresh process whose environment (CUDA_VISIBLE_DEVICES,
CUBLAS_WORKSPACE_CONFIG, PYTHONHASHSEED, thread counts) is set before Python starts. The worker
never touches the store: it writes the result to a temporary file and renames it into place,
so the driver sees either a complete result or none. Exit code 0 on success; on failure the
traceback goes to stderr and the exit code is 1 (3 for CUDA out-of-memory, so the driver can
pack fewer runs on that GPU).
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

EXIT_FAILED = 1
EXIT_OOM = 3


def is_oom(exc: BaseException) -> bool:
    return type(exc).__name__ == "OutOfMemoryError" or "CUDA out of memory" in str(exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m study.worker SPEC_JSON_FILE RESULT_JSON_FILE", file=sys.stderr)
        return 2
    spec_file, result_file = map(Path, argv)
    from study.spec import RunSpec
    from study.train import run_one

    spec = RunSpec.from_json(spec_file.read_text())
    try:
        result = run_one(spec)
    except BaseException as exc:  # noqa: BLE001  (everything is reported to the driver)
        traceback.print_exc(file=sys.stderr)
        return EXIT_OOM if is_oom(exc) else EXIT_FAILED
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(result.to_json())
    os.replace(tmp, result_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
