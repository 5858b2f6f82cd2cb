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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from study.maskers.attention import HOOK_ATTR, attention_modules, route_attention, unroute
from study.maskers.base import Masker, ParamError, check_rate
from study.registry import MASKERS


@dataclass(frozen=True)
class TLMParams:
    rate: float  # probability that a token is masked in a layer
    variant: Literal["both", "siblings", "self"] = "both"

    def __post_init__(self):
        check_rate("rate", self.rate)
        if self.rate == 1.0:
            raise ParamError("rate", "1.0 masks every token in every layer", "use a rate below 1")


def tlm_allowed(d: torch.Tensor, siblings: torch.Tensor) -> torch.Tensor:
    """Vectorised TLM mask. d, siblings: (B, T) bool → allowed (B, T, T) bool (rows = queries)."""
    t = d.shape[1]
    eye = torch.eye(t, dtype=torch.bool, device=d.device)
    masked_rows = torch.where(siblings[:, :, None], eye, ~eye)
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


@MASKERS.register("tlm")
class TLMMasker(Masker):
    kind = "tlm"
    Params = TLMParams
    level = "attention"

    def setup(self, model, tokenizer, train_batches, total_steps):
        super().setup(model, tokenizer, train_batches, total_steps)
        self.modules = attention_modules(model)

    def attach(self, model) -> None:
        if not hasattr(self, "modules"):
            self.setup(model, None, [], 1)
        self.model = model
        self.original = route_attention(model)
        for m in self.modules:
            setattr(m, HOOK_ATTR, self)
        self._padding = None

    def detach(self) -> None:
        for m in getattr(self, "modules", []):
            if getattr(m, HOOK_ATTR, None) is self:
                delattr(m, HOOK_ATTR)
        if getattr(self, "model", None) is not None:
            unroute(self.model, self.original)
            self.model = None

    def apply(self, batch: dict, step: int) -> dict:
        self._padding = batch["attention_mask"].bool()  # the 2-D mask the reference builds d from
        return batch

    def draw(self, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d, siblings) for one layer, from the masker's generator."""
        b, t = real.shape
        gen = self.generator
        keep = torch.rand((b, t), generator=gen, device=gen.device).to(real.device) >= self.params.rate
        if self.params.variant == "both":
            siblings = torch.rand((b, t), generator=gen, device=gen.device).to(real.device) < 0.5
        else:
            siblings = torch.full((b, t), self.params.variant == "siblings", device=real.device)
        return real & keep, siblings

    def attention_mask(self, module, query, key, attention_mask, kwargs):
        """Called by the router for every attention call in training; returns the additive mask."""
        b, t = query.shape[0], query.shape[2]
        if key.shape[2] != t:  # cached decoding is never training; leave it alone
            return attention_mask
        real = self._padding
        if real is None or real.shape != (b, t):
            real = torch.ones((b, t), dtype=torch.bool, device=query.device)
        real = real.to(query.device)
        d, siblings = self.draw(real)
        allowed = tlm_allowed(d, siblings)
        causal = kwargs.get("is_causal")
        causal = getattr(module, "is_causal", self.context.is_decoder) if causal is None else causal
        structure = structure_mask(t, bool(causal), kwargs.get("sliding_window"), query.device)
        if structure is not None:
            allowed = allowed & structure
            empty = ~allowed.any(-1, keepdim=True)
            allowed = allowed | (empty & torch.eye(t, dtype=torch.bool, device=query.device))
        self.record_tensors(real & ~d, real)
        additive = torch.zeros((b, 1, t, t), dtype=query.dtype, device=query.device)
        return additive.masked_fill_(~allowed[:, None], torch.finfo(query.dtype).min)
