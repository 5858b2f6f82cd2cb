"""Example masker plugin: contiguous span masking (SpanBERT-style), a kind named ``span``.

Instead of masking tokens independently (random-token), mask whole runs of neighbouring
tokens: span lengths are geometric with mean ``mean_span`` (clipped at ``max_span``), and span
starts are drawn so that the expected share of masked tokens is ``rate`` before overlaps merge
spans (the realised rate the run records is a little lower). A span never covers special
tokens or padding: it is cut where the eligible positions end.

Use it from a protocol::

    plugins: [span_masking.py]            # relative to the protocol file
    maskers:
      - {name: span-0.15, kind: span, rate: 0.15, mean_span: 3}

torch is imported inside the methods, so ``study validate`` checks this plugin's parameters
without importing torch (the built-in kinds do the same).
"""

from __future__ import annotations

from dataclasses import dataclass

from study.maskers import Masker, ParamError, register


@dataclass(frozen=True)
class SpanParams:
    rate: float  # expected share of eligible tokens masked (before overlapping spans merge)
    mean_span: float = 3.0  # mean of the geometric span length, in tokens
    max_span: int = 10  # longest span

    def __post_init__(self):
        if not 0.0 <= self.rate < 1.0:
            raise ParamError("rate", f"must be in [0, 1), got {self.rate}", "e.g. rate: 0.15")
        if self.mean_span < 1.0:
            raise ParamError("mean_span", f"must be at least 1 token, got {self.mean_span}", "e.g. mean_span: 3")
        if self.max_span < 1:
            raise ParamError("max_span", f"must be at least 1, got {self.max_span}", "e.g. max_span: 10")

    @property
    def expected_length(self) -> float:
        """E[min(G, max_span)] for G geometric on {1, 2, ...} with mean ``mean_span``."""
        keep = 1.0 - 1.0 / self.mean_span  # P(G > k | G >= k)
        return float(sum(keep**k for k in range(self.max_span)))


@register("span")
class SpanMasker(Masker):
    Params = SpanParams
    level = "input"

    def apply(self, batch: dict, step: int) -> dict:
        import torch

        from study.maskers.base import eligible_positions
        from study.maskers.input_level import replace_tokens

        ids, attn = batch["input_ids"], batch["attention_mask"]
        eligible = eligible_positions(ids, attn, self.context.special_ids)
        shape, device, gen = ids.shape, self.generator.device, self.generator
        p = self.params
        start = torch.rand(shape, generator=gen, device=device) < p.rate / p.expected_length
        if p.mean_span > 1.0:  # inverse-CDF draw of a geometric length per potential start
            u = torch.rand(shape, generator=gen, device=device).clamp_min(1e-12)
            length = 1 + torch.floor(torch.log(u) / torch.log(torch.tensor(1.0 - 1.0 / p.mean_span)))
            length = length.clamp(max=p.max_span)
        else:
            length = torch.ones(shape, device=device)
        start, length = start.to(ids.device) & eligible, length.to(ids.device)
        chosen = torch.zeros_like(eligible)
        covering = start.clone()  # spans still running at the current offset
        for k in range(p.max_span):
            chosen |= covering
            # a span continues to the next position while it is shorter than its length and stays eligible
            # (no early exit on "nothing left": that would cost a host sync every step)
            covering = torch.cat([torch.zeros_like(covering[:, :1]), (covering & (length > k + 1))[:, :-1]], dim=1)
            length = torch.cat([torch.zeros_like(length[:, :1]), length[:, :-1]], dim=1)
            covering &= eligible
        self.record_tensors(chosen, eligible)
        return replace_tokens(batch, chosen, self.context.replacement_id)

    def state(self) -> dict:
        return {"expected_span_length": self.params.expected_length}
