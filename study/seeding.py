"""Independent random streams derived from one run seed.

Pairing maskers by seed only works if, for a given seed, every masker sees the same head
initialisation, the same data order and the same dropout draws. Each concern gets its own
stream spawned from ``SeedSequence(seed)``, so a masker that draws (or doesn't) cannot shift
the others.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass

import numpy as np

STREAMS = ("init", "data_order", "dropout", "masker")


@dataclass(frozen=True)
class SeedStreams:
    init: int
    data_order: int
    dropout: int
    masker: int


def seed_streams(seed: int) -> SeedStreams:
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    values = [int(c.generate_state(1, dtype=np.uint64)[0] % (2**63 - 1)) for c in children]
    return SeedStreams(**dict(zip(STREAMS, values, strict=True)))


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch global RNGs (torch's drives dropout and any library init)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


CUBLAS_WORKSPACE = ":4096:8"


def configure_determinism(enabled: bool) -> dict:
    """Turn on deterministic kernels when asked; returns the flags to record in the run.

    cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` once per process, at its first call: set after CUDA
    started, it does nothing, and deterministic mode then makes every cuBLAS call raise. The
    workers get it in their environment (``study.scheduler.launch``) and a test session at its
    start (``tests/conftest.py``); a process that started CUDA without it is refused here.
    """
    import torch

    if enabled:
        if not os.environ.get("CUBLAS_WORKSPACE_CONFIG"):
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                raise RuntimeError(
                    "execution.deterministic: CUDA is already initialised in this process and "
                    "CUBLAS_WORKSPACE_CONFIG was not set before it, so cuBLAS cannot be made "
                    f"deterministic; set CUBLAS_WORKSPACE_CONFIG={CUBLAS_WORKSPACE} in the environment "
                    "before the process starts (the study's workers have it)")
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE  # CUDA not started yet: still read
        torch.backends.cudnn.benchmark = False
    # Each run sets its own mode: an in-process run after a deterministic one must not inherit it.
    torch.use_deterministic_algorithms(enabled, warn_only=False)
    return {
        "deterministic": bool(enabled),
        "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "pythonhashseed": os.environ.get("PYTHONHASHSEED"),
    }


def fingerprint(*parts) -> str:
    """Short sha256 of arrays/bytes/strings, used to audit that paired runs saw the same things."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        elif isinstance(p, bytes):
            h.update(p)
        else:
            h.update(str(p).encode())
    return h.hexdigest()[:16]
