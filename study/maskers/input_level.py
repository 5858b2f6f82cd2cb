"""Input-level maskers: tokens are replaced before the forward pass (training batches only)."""

from __future__ import annotations

import torch

from study.maskers import Masker, register
from study.maskers.base import eligible_positions
from study.maskers.params import RandomTokenParams


@register("none")
class NoMasking(Masker):
    """The baseline: trains exactly as without the harness."""


@register("random-token")
class RandomTokenMasker(Masker):
    """Token Masking: each eligible position becomes the replacement token with probability ``rate``.

    Eligible = attention_mask 1 and not a special token, so pads, [CLS]/[SEP], BOS/EOS are never
    touched. The replacement is never the pad id: a decoder (Qwen2, Llama) pools the rightmost
    non-pad token, so that position never moves (its token may be masked like any other unless
    the tokenizer ends sequences with a special). Optional ``schedule`` (see
    :mod:`study.maskers.schedules`)::

        - {name: random-0.15, kind: random-token, rate: 0.15}
        - {name: random-warm, kind: random-token, rate: 0.15, schedule: linear-warmup, warmup: 0.1}
        - {name: random-tgt, kind: random-token, rate: 0.1, side: both}   # seq2seq: source and decoder input
    """

    Params = RandomTokenParams
    level = "input"

    def rate_at(self, step: int) -> float:
        return self.params.rate_at(step, self.total_steps)

    def apply(self, batch: dict, step: int) -> dict:
        side = self.params.side or "source"
        if side != "source" and "decoder_input_ids" not in batch:
            raise ValueError(f"random-token side: {side} masks a decoder input, which only seq2seq batches have")
        if side in ("source", "both"):
            ids, attn = batch["input_ids"], batch["attention_mask"]
            eligible = eligible_positions(ids, attn, self.context.special_ids)
            draws = torch.rand(ids.shape, generator=self.generator, device=self.generator.device)
            chosen = eligible & (draws.to(ids.device) < self.rate_at(step))
            self.record_tensors(chosen, eligible)
            batch = replace_tokens(batch, chosen, self.context.replacement_id)
        if side in ("target", "both"):
            batch = self._mask_target(batch, step)
        return batch

    def _mask_target(self, batch: dict, step: int) -> dict:
        """Mask decoder inputs that are target tokens (not the start token, pads or specials); the
        labels — what the decoder must predict — stay as they are."""
        ids = batch["decoder_input_ids"]
        real = torch.zeros_like(ids, dtype=torch.bool)
        real[:, 1:] = batch["labels"][:, :-1] != -100  # decoder input j is target token j - 1
        eligible = eligible_positions(ids, real, self.context.special_ids)
        draws = torch.rand(ids.shape, generator=self.generator, device=self.generator.device)
        chosen = eligible & (draws.to(ids.device) < self.rate_at(step))
        self.record_tensors(chosen, eligible)
        return {**batch, "decoder_input_ids": ids.masked_fill(chosen, self.context.replacement_id)}


def replace_tokens(batch: dict, chosen: torch.Tensor, replacement_id: int | None) -> dict:
    """The batch with ``chosen`` positions of input_ids set to the replacement token (never pad)."""
    if replacement_id is None:
        raise ValueError("this backbone has no replacement token for masked positions; "
                         "set models[].replacement_token in the protocol")
    return {**batch, "input_ids": batch["input_ids"].masked_fill(chosen, replacement_id)}
