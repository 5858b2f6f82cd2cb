"""Mid-run checkpoints: everything a run needs to continue bit-identically after it was killed.

A checkpoint holds the model, optimizer, learning-rate scheduler and gradient scaler states, the
masker's state (its generator, its counts, Typhoon's EMA), the position in the data order
(epoch, batch) and every random state the loop draws from (Python, numpy, torch CPU and CUDA).
The data order itself is not stored: it is recomputed from the run's seed streams. On the CPU a
resumed run is bit-identical to an uninterrupted one; on a GPU the same holds with
``execution.deterministic: true`` (deterministic kernels, same GPU model and software), and
otherwise only as closely as two uninterrupted GPU runs agree with each other.

Where: ``<store>.work/checkpoints/<run_id>.pt``; the local pool tells its workers the folder in
``MASKSTUDY_CHECKPOINT_DIR``. Written atomically (temporary file, fsync, rename), so a kill
during a write leaves the previous checkpoint; a write that fails (a full disk) removes its
temporary file. The driver deletes a run's checkpoints once the run is recorded.

Damage after the write (a truncated copy, a bad disk block, a file edited by hand) is caught by
a checksum: the file is one header line, ``maskstudy-checkpoint-v2 sha256=<hex> bytes=<n>``,
then the ``torch.save`` payload it describes. A checkpoint that fails the check (or cannot be
unpickled, or belongs to another run or format) is never resumed from: it is moved aside to
``<run_id>.pt.bad`` with a warning on stderr (the worker's log), and the run resumes from the
previous checkpoint, which each write keeps as ``<run_id>.pt.prev``, or else starts at step 0.
A bit flip inside a weight tensor unpickles fine, so without the checksum it would be resumed
from silently. (torch is imported inside the functions that need it: the driver only deletes
checkpoints.)
"""

from __future__ import annotations

import hashlib
import io
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHECKPOINT_DIR_ENV = "MASKSTUDY_CHECKPOINT_DIR"
FORMAT = "maskstudy-checkpoint-v2"
HEADER = re.compile(rb"maskstudy-checkpoint-v2 sha256=([0-9a-f]{64}) bytes=([0-9]+)\n")


def checkpoint_path(folder: str | Path, run_id: str) -> Path:
    return Path(folder) / f"{run_id}.pt"


def previous_path(path: Path) -> Path:
    """Where a write keeps the checkpoint it replaces: the fallback when the newest is damaged."""
    return path.with_name(path.name + ".prev")


def discard(folder: str | Path | None, run_id: str) -> None:
    """Delete a run's checkpoints (the newest, the previous, those set aside as damaged, and a
    temporary file a killed write left behind)."""
    if folder is None or not Path(folder).is_dir():
        return
    for f in Path(folder).glob(f"*{run_id}.pt*"):
        f.unlink(missing_ok=True)


@dataclass
class CheckpointPolicy:
    """When a run writes checkpoints (``execution.checkpoint_every_*``) and where (None: never)."""

    folder: Path | None
    every_steps: int | None = None
    every_min: float | None = None

    @classmethod
    def for_run(cls, execution: dict, folder: str | Path | None) -> CheckpointPolicy:
        return cls(Path(folder) if folder else None, execution.get("checkpoint_every_steps"),
                   execution.get("checkpoint_every_min"))

    @property
    def enabled(self) -> bool:
        return self.folder is not None and bool(self.every_steps or self.every_min)

    def due(self, step: int, since_s: float) -> bool:
        """After optimizer step ``step``; ``since_s``: seconds since the last checkpoint (or the start)."""
        if not self.enabled:
            return False
        return bool((self.every_steps and step % self.every_steps == 0)
                    or (self.every_min and since_s >= self.every_min * 60))


def rng_state() -> dict:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(path: Path, state: dict) -> float:
    """Write ``state`` atomically with its checksum, keeping the checkpoint it replaces as
    ``<name>.prev``; returns the seconds it took. On any failure (OSError: a full disk) the
    temporary file is removed and the checkpoints already there are untouched."""
    import torch

    t0 = time.perf_counter()
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    payload = buffer.getbuffer()
    header = f"{FORMAT} sha256={hashlib.sha256(payload).hexdigest()} bytes={len(payload)}\n".encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:  # (a failed write() names no file)
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    # A kill between the two renames leaves only <name>.prev, which load() falls back to.
    if path.exists():
        os.replace(path, previous_path(path))
    os.replace(tmp, path)
    _fsync_folder(path.parent)
    return time.perf_counter() - t0


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable (a power cut must not bring back a deleted or older file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def verified_payload(path: Path) -> bytes:
    """The ``torch.save`` bytes of a checkpoint file; ValueError saying what is wrong if its header
    is missing or its checksum or length does not match."""
    data = path.read_bytes()
    end = data.find(b"\n", 0, 200) + 1
    m = HEADER.fullmatch(data[:end]) if end else None
    if m is None:
        raise ValueError("no maskstudy-checkpoint-v2 header (not a checkpoint, or one written by an older "
                         "maskstudy without a checksum)")
    payload = memoryview(data)[end:]
    if len(payload) != int(m.group(2)):
        raise ValueError(f"truncated or extended: {len(payload)} bytes after the header, {int(m.group(2))} written")
    if hashlib.sha256(payload).hexdigest() != m.group(1).decode():
        raise ValueError("checksum mismatch (the file changed after it was written)")
    return payload


# The checkpoint this process resumed from (set by load): see set_aside_after_failure.
resumed_from: Path | None = None


def load(path: Path, run_id: str) -> dict | None:
    """The newest intact checkpoint of ``run_id``: the one at ``path``, else the previous one
    (``<name>.prev``), else None (start from step 0). A damaged one is moved aside to ``<name>.bad``
    with a warning on stderr, so it is neither resumed from nor looked at again."""
    for candidate in (path, previous_path(path)):
        if not candidate.is_file():
            continue
        problem = _problem(candidate, run_id)
        if isinstance(problem, dict):
            global resumed_from
            resumed_from = candidate
            if candidate != path:
                print(f"checkpoint: resuming {run_id} from the previous checkpoint {candidate}", file=sys.stderr)
            return problem
        bad = candidate.with_name(candidate.name + ".bad")
        try:
            os.replace(candidate, bad)
        except OSError:
            bad = candidate
        fallback = candidate == path and previous_path(path).is_file()
        print(f"warning: checkpoint {candidate} is not used: {problem}; moved to {bad.name}. "
              f"{'Trying the previous checkpoint.' if fallback else 'Starting the run from step 0.'}",
              file=sys.stderr)
    return None


def _problem(path: Path, run_id: str) -> dict | str:
    """The checkpoint's state if it is intact and this run's, else what is wrong with it."""
    import torch

    try:
        payload = verified_payload(path)
        # Our own file, written by save() (random states are tuples and arrays, not just tensors).
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001  (a damaged checkpoint costs a restart, never the run)
        return f"{type(e).__name__}: {e}" if not isinstance(e, ValueError) else str(e)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return "written in another format"
    if state.get("run_id") != run_id:
        return f"it belongs to another run ({state.get('run_id')})"
    return state


def set_aside_after_failure(run_id: str) -> None:
    """After an attempt that resumed from a checkpoint failed with an error: set aside every
    checkpoint of the run (``.bad``), so the retry starts from step 0. A checkpoint that passes
    its checksum but cannot be continued from (say, one a different maskstudy version wrote)
    then costs one attempt, never every attempt of the run (no crash loop)."""
    if resumed_from is None:
        return
    folder = resumed_from.parent
    for f in (checkpoint_path(folder, run_id), previous_path(checkpoint_path(folder, run_id))):
        if f.is_file():
            os.replace(f, f.with_name(f.name + ".bad"))
    print(f"warning: the attempt failed after resuming from {resumed_from}; the run's checkpoints were set "
          "aside (.bad), so the next attempt starts from step 0", file=sys.stderr)
