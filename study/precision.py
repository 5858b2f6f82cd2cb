"""``training.precision``: fp32 (the default), or autocast in bf16 / fp16 for forward and loss.

Only the forward pass and the loss run under autocast; the backward pass, gradient clipping, the
optimizer (fp32 master weights: the model's parameters stay fp32) and the maskers' own arithmetic
(Typhoon's saliency in fp32, its EMA and calibration in float64) do not. fp16 adds a gradient
scaler: the loss is multiplied before ``backward``, the gradients are unscaled before clipping,
and a step whose gradients overflowed is skipped. Maskers that read gradients learn the factor
from ``Masker.loss_scale``. bf16 needs no scaler (fp32's exponent range).

TF32 (``execution.tf32``, default on) lets fp32 matmuls and convolutions on Ampere-or-newer GPUs
use TensorFloat-32; it does nothing on the CPU. Fused AdamW is used on CUDA.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def configure_tf32(enabled: bool, device: torch.device) -> bool:
    """Allow TF32 matmuls where the GPU has them; returns whether they are on (recorded in the env)."""
    if device.type != "cuda":
        return False
    set_tf32(enabled)
    major, _ = torch.cuda.get_device_capability(device)
    return bool(enabled and major >= 8)


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and cuDNN through ``fp32_precision`` where torch has it (2.9+):
    ``allow_tf32`` is deprecated there, and mixing the two APIs can raise."""
    value = "tf32" if enabled else "ieee"
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = value
        torch.backends.cudnn.conv.fp32_precision = value
        torch.backends.cudnn.rnn.fp32_precision = value
    else:
        torch.backends.cuda.matmul.allow_tf32 = enabled
        torch.backends.cudnn.allow_tf32 = enabled


class Precision:
    def __init__(self, name: str, device: torch.device):
        if name not in DTYPES:
            raise ValueError(f"training.precision: unknown {name!r}; use one of {', '.join(DTYPES)}")
        self.name = name
        self.device = device
        self.dtype = DTYPES[name]
        self.scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    @property
    def loss_scale(self) -> float | None:
        """The factor in the gradients after ``backward`` (None without a scaler). A host sync: fp16 only."""
        return self.scaler.get_scale() if self.scaler else None

    def unscale(self, optimizer) -> None:
        """Before clipping: the gradients in their true units."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)  # skipped when the gradients overflowed
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
