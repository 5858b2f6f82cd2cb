"""Where a run computes: ``execution.device`` (auto | cpu | cuda), overridden by ``MASKSTUDY_DEVICE``.

``auto`` takes the GPU when one is visible. The environment variable wins over the protocol so
that a test session (``tests/conftest.py``) keeps every in-process run on the CPU on a GPU
machine, except the tests marked ``gpu``; the driver's workers inherit it.

On CUDA the attention kernel is pinned for every masker of a study (:func:`attention_kernels`):
PyTorch's scaled-dot-product attention picks the flash kernel when a call has no mask and the
memory-efficient kernel when it has one (TLM always passes one), and their dropout draws differ,
so unpinned, "the same dropout draws for every masker of a seed" would not hold on CUDA. The
memory-efficient kernel takes masks and dropout, so it serves every masker; the math kernel is
the fall-back for shapes it refuses. The choice is recorded in the run's environment.
"""

from __future__ import annotations

import contextlib
import os

DEVICE_ENV = "MASKSTUDY_DEVICE"
DEVICES = ("auto", "cpu", "cuda")
# Recorded in every CUDA run's environment (``env.attention_kernels``); the pairing audit reads it.
PINNED_ATTENTION_KERNELS = ("efficient", "math")


def requested_device(execution: dict | None = None) -> str:
    """The device asked for: the environment variable, else ``execution.device``, else auto."""
    value = os.environ.get(DEVICE_ENV) or (execution or {}).get("device") or "auto"
    value = str(value).strip().lower()
    if value not in DEVICES:
        source = DEVICE_ENV if os.environ.get(DEVICE_ENV) else "execution.device"
        raise ValueError(f"{source}: unknown device {value!r}; use one of {', '.join(DEVICES)}")
    return value


def pick_device(execution: dict | None = None):
    import torch

    wanted = requested_device(execution)
    if wanted == "cpu":
        return torch.device("cpu")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("execution.device is 'cuda' but no CUDA GPU is visible to this run; "
                           f"use device: auto or cpu (or unset {DEVICE_ENV})")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def attention_kernels(device):
    """Context manager pinning scaled-dot-product attention to one kernel family on CUDA (see the
    module docstring); a no-op on the CPU, whose one kernel draws the same for every masker."""
    if getattr(device, "type", str(device)) != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])
