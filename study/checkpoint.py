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
during a write leaves the previous checkpoint. The driver deletes it once the run is recorded.
(torch is imported inside the functions that need it: the driver only deletes checkpoints.)
"""

from __future__ import annotations

import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHECKPOINT_DIR_ENV = "MASKSTUDY_CHECKPOINT_DIR"
FORMAT = "maskstudy-checkpoint-v1"


def checkpoint_path(folder: str | Path, run_id: str) -> Path:
    return Path(folder) / f"{run_id}.pt"


def discard(folder: str | Path | None, run_id: str) -> None:
    """Delete a run's checkpoint (and a temporary file a killed write left behind)."""
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
    """Write ``state`` atomically; returns the seconds it took."""
    import torch

    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save({"format": FORMAT, **state}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return time.perf_counter() - t0


def load(path: Path, run_id: str) -> dict | None:
    """The checkpoint of ``run_id`` at ``path``, or None (none there, or unreadable: start afresh)."""
    if not path.is_file():
        return None
    import torch

    try:
        # Our own file, written by save() (random states are tuples and arrays, not just tensors).
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001  (a damaged checkpoint costs a restart, never the run)
        print(f"checkpoint {path} is unreadable ({e}); starting the run from the beginning", file=sys.stderr)
        return None
    if state.get("format") != FORMAT or state.get("run_id") != run_id:
        print(f"checkpoint {path} belongs to another run or format; starting the run from the beginning",
              file=sys.stderr)
        return None
    return state
