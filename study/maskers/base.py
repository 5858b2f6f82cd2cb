"""The masker interface every regularizer implements.

A masker is a small object created once per run. The training loop calls, in order:

    masker.setup(model, tokenizer, train_batches, total_steps)   # once, before training
    masker.attach(model)                                          # install hooks (attention-level)
    for step, batch in ...:
        batch = masker.apply(batch, step)                          # input-level masking
        loss.backward()
        masker.after_backward(step)                                # e.g. harvest saliencies
    masker.detach()

Evaluation never masks: the loop calls ``apply`` only on training batches, and hooks must do
nothing when ``module.training`` is False. A masker draws random numbers only from
``self.generator`` (its own seed stream) so that, for one seed, head init, data order and
dropout draws stay identical across maskers — the pairing the statistics rely on.

This module imports torch only inside the functions that compute with it: the config layer
(protocol validation, the registry of kinds) imports it, and must not pay for torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch


def _torch():
    import torch

    return torch


class ParamError(ValueError):
    """A masker parameter is invalid. ``field`` is the parameter name."""

    def __init__(self, field: str, problem: str, fix: str = ""):
        self.field, self.problem, self.fix = field, problem, fix
        super().__init__(f"{field}: {problem}")


def check_rate(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ParamError(name, f"must be a probability in [0, 1], got {value}", f"set {name} between 0 and 1")


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass
class MaskerContext:
    """What a masker needs to know about the backbone, decided once by the training loop."""

    replacement_id: int | None  # token written over masked positions ([MASK], or the recorded fallback)
    replacement: str  # how replacement_id was chosen, recorded in the run
    pad_token_id: int | None
    special_ids: torch.Tensor  # 1-D long tensor of ids that are never masked
    num_layers: int
    num_heads: int
    is_decoder: bool
    device: torch.device = field(default_factory=lambda: _torch().device("cpu"))


def eligible_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor, special_ids: torch.Tensor) -> torch.Tensor:
    """Bool mask of positions an input-level masker may touch: real tokens that are not special."""
    special = _torch().isin(input_ids, special_ids.to(input_ids.device))
    return attention_mask.bool() & ~special


class Masker:
    Params: ClassVar[type] = NoParams
    level: ClassVar[str] = "none"  # "none" | "input" | "attention"

    def __init__(self, params: Any, generator: torch.Generator, context: MaskerContext):
        self.params = params
        self.generator = generator
        # The special ids live where the batches do: copied from the host at every step, they
        # made every input-level masker wait for the device once a step (seen on an H200).
        if context.special_ids.device != context.device:
            context = replace(context, special_ids=context.special_ids.to(context.device))
        self.context = context
        self.masked_count = 0
        self.eligible_count = 0
        self.total_steps = 1
        self._pending: torch.Tensor | None = None  # device-side counts not yet added (no sync per step)
        self.loss_scale: float | None = None  # fp16's gradient-scaler factor in the gradients hooks see

    # -- lifecycle -------------------------------------------------------------------------
    def setup(self, model, tokenizer, train_batches: list[dict], total_steps: int) -> None:
        self.total_steps = max(1, total_steps)

    def attach(self, model) -> None:
        pass

    def detach(self) -> None:
        pass

    def apply(self, batch: dict, step: int) -> dict:
        return batch

    def after_backward(self, step: int) -> None:
        pass

    # -- what the run records --------------------------------------------------------------
    def record(self, masked: int, eligible: int) -> None:
        self.masked_count += int(masked)
        self.eligible_count += int(eligible)

    def record_tensors(self, masked: torch.Tensor, eligible: torch.Tensor | int) -> None:
        """Like ``record`` for bool masks (or counts) on the training device, without a host sync."""
        torch = _torch()
        # a fill kernel, not a host-to-device copy: nothing here waits for the device
        total = eligible.sum() if isinstance(eligible, torch.Tensor) else \
            torch.full((), int(eligible), dtype=torch.long, device=masked.device)
        counts = torch.stack([masked.sum().to(torch.long), total.to(torch.long)])
        self._pending = counts if self._pending is None else self._pending + counts

    def _flush(self) -> None:
        if self._pending is not None:
            masked, eligible = self._pending.tolist()
            self._pending = None
            self.record(masked, eligible)

    @property
    def realised_rate(self) -> float | None:
        """Share of eligible units masked over the whole run (None for maskers that mask nothing)."""
        self._flush()
        if self.level == "none" or self.eligible_count == 0:
            return None if self.level == "none" else 0.0
        return self.masked_count / self.eligible_count

    def stats(self) -> dict:
        self._flush()
        return {
            "realised_rate": self.realised_rate,
            "masked": self.masked_count,
            "eligible": self.eligible_count,
            "replacement": self.context.replacement if self.level == "input" else None,
        }

    # -- mid-run checkpoints ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """What a checkpoint keeps so a resumed run draws and counts exactly as an uninterrupted one."""
        self._flush()
        return {"generator": self.generator.get_state(), "masked": self.masked_count,
                "eligible": self.eligible_count}

    def load_state_dict(self, state: dict) -> None:
        """Restore ``state_dict()`` after ``setup()`` (subclasses restore what they learned too)."""
        self.generator.set_state(state["generator"])
        self.masked_count, self.eligible_count = state["masked"], state["eligible"]
        self._pending = None

    def state(self) -> dict:
        """What the masker learned during training (JSON-serialisable), e.g. Typhoon's saliencies."""
        return {}
