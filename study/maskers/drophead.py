"""DropHead: drop whole attention heads per example (a baseline of the TLM paper).

In every layer of every training forward pass each (example, head) is dropped with
probability ``rate`` (scheduled like any rate); an example that would lose every head of a
layer is redrawn until it keeps one. The kept heads' outputs are rescaled by H / kept, so the
expected sum over heads is unchanged. transformers 5 has no ``head_mask`` any more, so the
mask is applied by a forward pre-hook on each layer's attention output projection, whose input
is the concatenation of the H head outputs (B, T, H·d): ``o_proj`` (Qwen2, Llama, ...),
``out_proj``, or the BERT family's ``attention.output.dense``. Evaluation is untouched. The
realised rate is dropped heads / (examples × heads), over all layers and steps.

    - {name: drophead-0.1, kind: drophead, rate: 0.1}
    - {name: drophead-warm, kind: drophead, rate: 0.2, schedule: linear-warmup, warmup: 0.3}
"""

from __future__ import annotations

import math

import torch

from study.maskers import Masker, register
from study.maskers.attention import attention_modules
from study.maskers.params import DropHeadParams

MAX_REDRAWS = 1000


def output_projection(model, attn_module) -> torch.nn.Linear:
    """The linear layer that reads the concatenated head outputs of ``attn_module``."""
    for name in ("o_proj", "out_proj", "out_lin", "dense", "o"):  # o: T5
        layer = getattr(attn_module, name, None)
        if isinstance(layer, torch.nn.Linear):
            return layer
    names = {m: n for n, m in model.named_modules()}
    parent_name = names[attn_module].rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    layer = getattr(getattr(parent, "output", None), "dense", None)  # BERT: BertAttention.output.dense
    if isinstance(layer, torch.nn.Linear):
        return layer
    raise RuntimeError(f"drophead: cannot find the output projection of {names[attn_module]} "
                       f"({type(attn_module).__name__}); expected o_proj, out_proj or a sibling output.dense")


def sample_keep(batch: int, heads: int, rate: float, generator: torch.Generator, device) -> torch.Tensor:
    """(batch, heads) bool keep-mask, P(drop) = rate, rows with no kept head redrawn."""
    keep = torch.rand((batch, heads), generator=generator, device=generator.device) >= rate
    for _ in range(MAX_REDRAWS):
        dead = ~keep.any(1)
        if not bool(dead.any()):
            break
        redraw = torch.rand((batch, heads), generator=generator, device=generator.device) >= rate
        keep = torch.where(dead[:, None], redraw, keep)
    else:
        raise RuntimeError(f"drophead: an example lost every head {MAX_REDRAWS} times at rate {rate}")
    return keep.to(device)


def sample_keep_sync_free(batch: int, heads: int, rate: float, generator: torch.Generator, device) -> torch.Tensor:
    """The same distribution as :func:`sample_keep` — independent drops conditioned on at least one
    kept head per row — without its redraw loop, which reads the device once per layer per step.

    Every row with a kept head has a unique first kept head j, with P(j) ∝ rate^j · (1 − rate)
    over j < H (a truncated geometric, drawn by inverting its CDF); heads before j are dropped
    and heads after j are dropped independently with probability ``rate``. The CUDA path: on the
    CPU the loop costs nothing and its draws are the ones published results were made with.
    """
    gen_device = generator.device
    u = torch.rand((batch,), generator=generator, device=gen_device, dtype=torch.float64)
    after = torch.rand((batch, heads), generator=generator, device=gen_device) >= rate
    head = torch.arange(heads, device=gen_device)
    if rate <= 0.0:
        first = torch.zeros((batch,), dtype=torch.long, device=gen_device)
    else:
        # CDF(j) = (1 − rate^(j+1)) / (1 − rate^H): the smallest j with CDF(j) > u
        first = torch.floor(torch.log1p(-u * (1.0 - rate ** heads)) / math.log(rate)).long().clamp_(0, heads - 1)
    keep = (head[None, :] == first[:, None]) | ((head[None, :] > first[:, None]) & after)
    return keep.to(device)


def head_scale(keep: torch.Tensor) -> torch.Tensor:
    """Per (example, head) factor: 0 for dropped heads, H / kept for the others."""
    heads = keep.shape[1]
    return keep.float() * (heads / keep.sum(1, keepdim=True).float())


@register("drophead")
class DropHeadMasker(Masker):
    Params = DropHeadParams
    level = "attention"

    def setup(self, model, tokenizer, train_batches, total_steps):
        super().setup(model, tokenizer, train_batches, total_steps)
        self.projections = [output_projection(model, m) for m in attention_modules(model)]
        self.heads = int(self.context.num_heads)
        for proj in self.projections:
            if proj.in_features % self.heads:
                raise RuntimeError(f"drophead: projection input {proj.in_features} is not divisible by "
                                   f"{self.heads} heads")

    def attach(self, model) -> None:
        if not hasattr(self, "projections"):
            self.setup(model, None, [], 1)
        self.step = 0
        self._handles = [p.register_forward_pre_hook(self._pre_hook) for p in self.projections]

    def detach(self) -> None:
        for h in getattr(self, "_handles", []):
            h.remove()
        self._handles = []

    def apply(self, batch: dict, step: int) -> dict:
        self.step = step
        return batch

    def rate_at(self, step: int) -> float:
        return self.params.rate_at(step, self.total_steps)

    def _pre_hook(self, module, args):
        if not module.training:
            return None
        rate = self.rate_at(self.step)
        x = args[0]
        b = x.shape[0]
        sampler = sample_keep_sync_free if x.device.type == "cuda" else sample_keep
        keep = sampler(b, self.heads, rate, self.generator, x.device)
        self.record_tensors(~keep, b * self.heads)
        if rate == 0.0:
            return None
        scale = head_scale(keep).to(x.dtype)
        heads_view = x.unflatten(-1, (self.heads, -1))  # (B, T, H, d)
        shape = (b,) + (1,) * (heads_view.dim() - 3) + (self.heads, 1)
        return ((heads_view * scale.view(shape)).flatten(-2), *args[1:])
