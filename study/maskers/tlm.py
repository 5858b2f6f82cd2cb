"""TLM — Token-Level Masking inside self-attention, as in the reference code (Young1993/tlm).

In every layer of every training forward pass (resampled per layer, as the reference
BertEncoder does) each real token is kept with probability 1 − ``rate``:

    d = attention_mask ⊙ Bernoulli(1 − rate)                          (B, T)
    allowed[i, j] = d_j                  if d_i = 1  (a kept token attends only to kept tokens)
                  = (i == j)             if d_i = 0 and the row is siblings-masked
                  = (i ≠ j)              if d_i = 0 and the row is self-masked

``variant: both`` (the reference default) picks siblings or self per masked row with
probability ½; ``siblings`` / ``self`` force one. Pads have d = 0 and are rows like any other,
as in the reference (their outputs are never pooled). The mask is the same for all heads and is
applied as an additive float mask (finfo.min where not allowed) before the softmax, replacing
the model's padding mask the way the reference rebuilds it from the 2-D attention mask. Causal
models keep their causal triangle (and a sliding window if the layer has one): ``allowed`` is
intersected with it, and a row left empty by that (a self-masked first token) attends to itself
so no row is all −inf.

The mask reaches the kernel through the attention-function registry (see
:mod:`study.maskers.attention`), so SDPA stays SDPA; evaluation passes through untouched. The
realised rate is masked real tokens / real tokens, over all layers and steps.

    - {name: tlm-0.1, kind: tlm, rate: 0.1}                   # variant: both
    - {name: tlm-sib, kind: tlm, rate: 0.1, variant: siblings}
    - {name: tlm-ref, kind: tlm, rate: 0.05, attention_dropout: 0.0}

Conventions of the reference code: its ``masking_rate`` is the Bernoulli *keep* probability
(its GLUE scripts pass 0.95), so reference ``masking_rate: r`` is ``rate: 1 − r`` here; and its
TLM runs set ``attention_probs_dropout_prob 0``, which ``attention_dropout: 0.0`` reproduces
(unset, the backbone's own attention dropout stays).
"""

from __future__ import annotations

import functools

import torch

from study.maskers import Masker, register
from study.maskers.attention import (
    HOOK_ATTR,
    attention_roles,
    get_attention_dropout,
    route_attention,
    set_attention_dropout,
    unroute,
)
from study.maskers.params import TLMParams


@functools.lru_cache(maxsize=32)
def _eyes(t: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    eye = torch.eye(t, dtype=torch.bool, device=device)
    return eye, ~eye


def tlm_allowed(d: torch.Tensor, siblings: torch.Tensor) -> torch.Tensor:
    """Vectorised TLM mask. d, siblings: (B, T) bool → allowed (B, T, T) bool (rows = queries)."""
    eye, not_eye = _eyes(d.shape[1], str(d.device))
    masked_rows = torch.where(siblings[:, :, None], eye, not_eye)
    return torch.where(d[:, :, None], d[:, None, :], masked_rows)


def tlm_allowed_rowwise(d: torch.Tensor, siblings: torch.Tensor) -> torch.Tensor:
    """The reference code's construction, one row at a time (kept for tests and the benchmark)."""
    rows_b = []
    for b in range(d.shape[0]):
        dm = d[b].long()
        rows = []
        for i in range(len(dm)):
            if dm[i] == 1:
                row = dm
            elif bool(siblings[b, i]):
                row = torch.zeros(len(dm), dtype=torch.int64, device=dm.device)
                row[i] = 1
            else:
                row = torch.ones(len(dm), dtype=torch.int64, device=dm.device)
                row[i] = 0
            rows.append(row.unsqueeze(0))
        rows_b.append(torch.cat(rows).unsqueeze(0))
    return torch.cat(rows_b).bool()


@functools.lru_cache(maxsize=64)
def _row_templates(t: int, device: str, dtype: torch.dtype, causal: bool, window: int | None):
    """Additive (T, T) rows of a siblings-masked and a self-masked token, within the structure."""
    low = torch.finfo(dtype).min
    eye, not_eye = _eyes(t, device)
    structure = structure_mask(t, causal, window, device)
    self_rows = not_eye
    if structure is not None:  # a self-masked first token of a causal model would see nothing
        self_rows = not_eye & structure
        self_rows = self_rows | (~self_rows.any(-1, keepdim=True) & eye)
    zero = torch.zeros((), dtype=dtype, device=device)
    return torch.where(eye, zero, low), torch.where(self_rows, zero, low), structure


def tlm_additive(d: torch.Tensor, siblings: torch.Tensor, dtype=torch.float32, causal: bool = False,
                 window: int | None = None) -> torch.Tensor:
    """The additive (B, 1, T, T) mask of ``tlm_allowed`` (∧ structure), built by one row gather.

    Every row is one of B + 2T distinct rows: a kept token's row is its example's d (as 0 /
    finfo.min), a masked token's row is row i of the siblings or self template. So the mask is
    ``table[index]`` with a (B + 2T, T) table — one pass over the output instead of several
    broadcast ``where``s. A causal structure (or sliding window) is applied on top; the
    templates already respect it, and a kept row always keeps its own position.
    """
    b, t = d.shape
    low = torch.finfo(dtype).min
    sib_rows, self_rows, structure = _row_templates(t, str(d.device), dtype, causal, window)
    kept_rows = torch.where(d, torch.zeros((), dtype=dtype, device=d.device), low)
    table = torch.cat([kept_rows, sib_rows, self_rows])
    pos = torch.arange(t, device=d.device)
    index = torch.where(d, torch.arange(b, device=d.device)[:, None],
                        torch.where(siblings, b + pos, b + t + pos))
    out = torch.index_select(table, 0, index.reshape(-1)).view(b, 1, t, t)
    if structure is not None:
        out = out.masked_fill(~structure, low)
    return out


def structure_mask(t: int, causal: bool, sliding_window: int | None, device) -> torch.Tensor | None:
    """(T, T) bool of what the architecture allows regardless of padding (None: everything)."""
    if not causal and not sliding_window:
        return None
    i = torch.arange(t, device=device)[:, None]
    j = torch.arange(t, device=device)[None, :]
    allowed = j <= i if causal else torch.ones(t, t, dtype=torch.bool, device=device)
    if sliding_window:
        allowed = allowed & ((i - j).abs() < sliding_window)
    return allowed


@register("tlm")
class TLMMasker(Masker):
    Params = TLMParams
    level = "attention"

    def setup(self, model, tokenizer, train_batches, total_steps):
        super().setup(model, tokenizer, train_batches, total_steps)
        roles = attention_roles(model)
        self.modules = [m for m, role in roles.items() if role != "cross"]  # never the cross-attention
        self.decoder_modules = {m for m, role in roles.items() if role == "decoder"}

    def attach(self, model) -> None:
        if not hasattr(self, "modules"):
            self.setup(model, None, [], 1)
        self.model = model
        self.original = route_attention(model)
        self.original_dropout = [get_attention_dropout(m) for m in self.modules]
        for m in self.modules:
            setattr(m, HOOK_ATTR, self)
            if self.params.attention_dropout is not None:
                set_attention_dropout(m, self.params.attention_dropout)
        self._padding = self._decoder_padding = None

    def detach(self) -> None:
        if getattr(self, "model", None) is None:  # not attached
            return
        for m, p in zip(self.modules, self.original_dropout, strict=True):
            if getattr(m, HOOK_ATTR, None) is self:
                delattr(m, HOOK_ATTR)
            set_attention_dropout(m, p)
        unroute(self.model, self.original)
        self.model = None

    def apply(self, batch: dict, step: int) -> dict:
        self._padding = batch["attention_mask"].bool()  # the 2-D mask the reference builds d from
        # an encoder-decoder's decoder: a position is real where it predicts a target token
        self._decoder_padding = batch["labels"] != -100 if "decoder_input_ids" in batch else None
        return batch

    def draw(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d, siblings) for one layer, from the masker's generator."""
        gen = self.generator
        both = self.params.variant == "both"
        u = torch.rand((2 if both else 1, *real.shape), generator=gen, device=gen.device).to(real.device)
        d = real & (u[0] >= self.params.rate)
        if both:
            return d, u[1] < 0.5
        return d, torch.full_like(real, self.params.variant == "siblings")

    def build(self, real: torch.Tensor, causal: bool, sliding_window: int | None, dtype) -> torch.Tensor:
        """One layer's additive (B, 1, T, T) mask for the 2-D padding mask ``real`` (draws included)."""
        d, siblings = self.draw(real)
        self.record_tensors(real & ~d, real)
        return tlm_additive(d, siblings, dtype, causal, sliding_window or None)

    def attention_mask(self, module, query, key, attention_mask, kwargs):
        """Called by the router for every attention call in training; returns the additive mask."""
        b, t = query.shape[0], query.shape[2]
        if key.shape[2] != t:  # cached decoding is never training; leave it alone
            return attention_mask
        real = self._decoder_padding if module in getattr(self, "decoder_modules", ()) else self._padding
        if real is None or real.shape != (b, t):
            real = torch.ones((b, t), dtype=torch.bool, device=query.device)
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", self.context.is_decoder) if causal is None else causal
        causal = causal or module in getattr(self, "decoder_modules", ())  # a decoder stays causal
        return self.build(real.to(query.device), bool(causal), kwargs.get("sliding_window"), query.dtype)
