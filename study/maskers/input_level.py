"""Input-level maskers: tokens are replaced before the forward pass (training batches only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from study.maskers.base import Masker, check_rate, eligible_positions
from study.registry import MASKERS


@MASKERS.register("none")
class NoMasking(Masker):
    """The baseline: trains exactly as without the harness."""

    kind = "none"


@dataclass(frozen=True)
class RandomTokenParams:
    rate: float

    def __post_init__(self):
        check_rate("rate", self.rate)


@MASKERS.register("random-token")
class RandomTokenMasker(Masker):
    """Token Masking: each eligible position becomes the replacement token with probability ``rate``.

    Eligible = attention_mask 1 and not a special token, so pads, [CLS]/[SEP] and a decoder's
    pooled last token (an EOS special) are never touched, and the replacement is never the pad
    id (a decoder finds its pooled position by looking for the first pad).
    """

    kind = "random-token"
    Params = RandomTokenParams
    level = "input"

    def rate_at(self, step: int) -> float:
        return self.params.rate

    def apply(self, batch: dict, step: int) -> dict:
        ids, attn = batch["input_ids"], batch["attention_mask"]
        eligible = eligible_positions(ids, attn, self.context.special_ids)
        draws = torch.rand(ids.shape, generator=self.generator, device=self.generator.device)
        chosen = eligible & (draws.to(ids.device) < self.rate_at(step))
        self.record(chosen.sum().item(), eligible.sum().item())
        return {**batch, "input_ids": ids.masked_fill(chosen, self.context.replacement_id)}
