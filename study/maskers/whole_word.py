"""Whole-word masking: a word is chosen with probability ``rate`` and all its sub-tokens are masked.

Words are keyed by (sequence id, word id) from the fast tokenizer (``encode`` in train.py puts
them in the batch as ``_word_ids`` / ``_sequence_ids``), so word 3 of the first sentence and
word 3 of the second sentence of a pair are different words. Every sub-token is masked exactly
when its word is chosen, so the expected share of masked eligible tokens is ``rate`` — the same
budget as random-token masking. Specials and pads have word id −1 and are never masked.

    - {name: ww-0.15, kind: whole-word, rate: 0.15}
    - {name: ww-warm, kind: whole-word, rate: 0.15, schedule: linear-warmup, warmup: 0.2}
"""

from __future__ import annotations

import torch

from study.maskers import Masker, register
from study.maskers.base import eligible_positions
from study.maskers.input_level import replace_tokens
from study.maskers.params import WholeWordParams


def word_keys(word_ids: torch.Tensor, sequence_ids: torch.Tensor, width: int) -> torch.Tensor:
    """(B, T) key of each token's word, unique per (sequence id, word id) within a row.

    ``width`` must exceed every word id; the key is ``sequence_id · width + word_id`` (specials,
    whose ids are −1, get key 0 and are excluded by the eligibility mask anyway).
    """
    return (sequence_ids.clamp(min=0) * width + word_ids.clamp(min=0)).long()


@register("whole-word")
class WholeWordMasker(Masker):
    Params = WholeWordParams
    level = "input"

    def setup(self, model, tokenizer, train_batches, total_steps):
        super().setup(model, tokenizer, train_batches, total_steps)
        if train_batches and "_word_ids" not in train_batches[0]:
            raise ValueError("whole-word masking needs word ids, which only fast (Rust) tokenizers give; "
                             "this backbone's tokenizer is not fast")

    def rate_at(self, step: int) -> float:
        return self.params.rate_at(step, self.total_steps)

    def apply(self, batch: dict, step: int) -> dict:
        ids, attn = batch["input_ids"], batch["attention_mask"]
        if "_word_ids" not in batch:
            raise ValueError("whole-word masking needs the batch's _word_ids (a fast tokenizer)")
        words, seqs = batch["_word_ids"], batch["_sequence_ids"]
        eligible = eligible_positions(ids, attn, self.context.special_ids) & (words >= 0)
        # Word ids number one sequence's words from 0, so they are below T. The collated batch carries
        # the largest ids, read on the host (no wait for the device); a batch built without them pays one sync.
        bounds = batch.get("_word_bounds")
        max_word, max_seq = bounds if bounds is not None else torch.stack([words.max(), seqs.max()]).tolist()
        width, n_seqs = max(ids.shape[1], max_word + 1), max(1, max_seq + 1)
        keys = word_keys(words, seqs, width)
        # One draw per possible word key of each row; every sub-token follows its word's draw.
        draws = torch.rand((ids.shape[0], n_seqs * width), generator=self.generator,
                           device=self.generator.device).to(ids.device)
        chosen = eligible & (draws.gather(1, keys) < self.rate_at(step))
        self.record_tensors(chosen, eligible)
        return replace_tokens(batch, chosen, self.context.replacement_id)
