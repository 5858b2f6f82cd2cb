"""Attention-level plumbing shared by TLM, attention dropout and DropHead, plus attention dropout.

**Routing.** transformers 5 models call their attention through the registry
``ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)``
as ``attention_interface(module, query, key, value, attention_mask, dropout=..., ...)``. While a
masker is attached, :func:`route_attention` points the model's ``config._attn_implementation``
at a registered wrapper (``maskstudy+sdpa`` or ``maskstudy+eager``) that calls the original
function with the original arguments, unless the calling module carries an
``_maskstudy_attention`` hook and is in training mode, in which case the hook may rewrite the
mask first. The wrapper's mask functions are the original ones (``sdpa_mask``/``eager_mask``),
so in evaluation the model computes exactly what it computed before: same masks, same
kernel (SDPA stays SDPA). ``unroute`` puts the original name back. Flash/flex kernels take no
dense additive mask, so routing refuses them with a clear error.

**Discovery.** :func:`attention_modules` runs one tiny forward pass (eval mode, no grad, no
random draws) through the router and records which modules called the attention function, in
call order — for any backbone that uses the registry (BERT family, Qwen2, Llama, ...), without a
table of class names.

**Attention dropout** (``attention-dropout``) sets the dropout probability those modules pass
to the attention function (``dropout.p`` on BERT-style modules, ``attention_dropout`` on
Qwen2/Llama-style ones) to ``rate`` and restores it on detach. Its realised rate is that
configured probability, and — by definition — its draws come from the global torch RNG (the
run's dropout stream), not from the masker's generator.

    - {name: attn-drop-0.1, kind: attention-dropout, rate: 0.1}
"""

from __future__ import annotations

import sys

import torch

from study.maskers import Masker, register
from study.maskers.params import AttentionDropoutParams

ROUTED_PREFIX = "maskstudy+"
HOOK_ATTR = "_maskstudy_attention"  # set on an attention module: object with .attention_mask(...)
_RECORDER: list | None = None  # set while attention_modules() probes a model


def _base_function(base: str, module):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if base == "eager":  # each modeling file has its own eager function; it is not in the registry
        fn = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if fn is None:
            raise RuntimeError(f"{type(module).__name__}: no eager_attention_forward in its modeling module")
        return fn
    return ALL_ATTENTION_FUNCTIONS[base]


def _make_router(base: str):
    def routed_attention(module, query, key, value, attention_mask, **kwargs):
        if _RECORDER is not None:
            _RECORDER.append((module, query.shape[-2], key.shape[-2]))
        hook = getattr(module, HOOK_ATTR, None)
        if hook is not None and module.training:
            attention_mask = hook.attention_mask(module, query, key, attention_mask, kwargs)
        return _base_function(base, module)(module, query, key, value, attention_mask, **kwargs)

    routed_attention.__name__ = f"maskstudy_routed_{base}"
    return routed_attention


def _register(base: str) -> str:
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    name = ROUTED_PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(name, _make_router(base))
        ALL_MASK_ATTENTION_FUNCTIONS.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    return name


def _configs(model) -> list:
    """The model's config and every sub-model's own copy (T5's stacks, an EncoderDecoderModel's
    encoder and decoder each read their own ``_attn_implementation``)."""
    seen: dict = {}
    for m in (model, *model.modules()):
        config = getattr(m, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            seen.setdefault(id(config), config)
    return list(seen.values())


def route_attention(model) -> str:
    """Point the model at the routing wrapper; returns the original implementation name."""
    current = model.config._attn_implementation or "eager"
    if current.startswith(ROUTED_PREFIX):
        return current[len(ROUTED_PREFIX):]
    if current not in ("sdpa", "eager"):
        raise ValueError(f"attention-level maskers need sdpa or eager attention (a dense additive mask); "
                         f"this model uses {current!r}. Load it with attn_implementation='sdpa'.")
    routed = _register(current)
    for config in _configs(model):
        config._attn_implementation = routed
    return current


def unroute(model, original: str) -> None:
    for config in _configs(model):
        if (config._attn_implementation or "").startswith(ROUTED_PREFIX):
            config._attn_implementation = original


PROBE_SOURCE, PROBE_TARGET = 3, 2  # probe lengths: an encoder-decoder's stacks are told apart by them


def _probe_inputs(model) -> dict:
    device = next(model.parameters()).device
    pad = getattr(model.config, "pad_token_id", None)
    token = 1 if pad != 1 else 2
    ids = torch.full((1, PROBE_SOURCE), token, dtype=torch.long, device=device)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if getattr(model.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = torch.full((1, PROBE_TARGET), token, dtype=torch.long, device=device)
    return inputs


def attention_modules(model) -> list[torch.nn.Module]:
    """The self-attention modules, in call (layer) order, found by one probe pass: of an
    encoder-decoder, the encoder's then the decoder's — never the cross-attention, which attends
    from the target to the source (query and key lengths differ in the probe)."""
    return [m for m, role in attention_roles(model).items() if role != "cross"]


def attention_roles(model) -> dict:
    """Every module that calls the attention function → ``"self"`` (an encoder or a decoder-only
    model), ``"decoder"`` (an encoder-decoder's decoder self-attention) or ``"cross"``, in call order."""
    global _RECORDER
    original = route_attention(model)
    was_training = model.training
    seen: list = []
    _RECORDER = seen
    try:
        model.eval()
        with torch.no_grad():
            model(**_probe_inputs(model))
    finally:
        _RECORDER = None
        model.train(was_training)
        unroute(model, original)
    roles: dict = {}
    for module, q, k in seen:  # a module called twice (shared layers) counts once
        role = "cross" if q != k else "decoder" if q == PROBE_TARGET and "decoder_input_ids" in _probe_inputs(model) \
            else "self"
        roles.setdefault(module, role)
    if not roles:
        raise RuntimeError(f"{type(model).__name__} never called the attention registry; "
                           "attention-level maskers support transformers models that do")
    return roles


def get_attention_dropout(module) -> float:
    if isinstance(getattr(module, "attention_dropout", None), (int, float)):
        return float(module.attention_dropout)
    if isinstance(getattr(module, "dropout", None), torch.nn.Dropout):
        return float(module.dropout.p)
    if isinstance(getattr(module, "dropout", None), float):  # BART, T5: the probability itself
        return module.dropout
    raise RuntimeError(f"{type(module).__name__}: no attention dropout attribute "
                       "(expected `attention_dropout` or a `dropout` nn.Dropout)")


def set_attention_dropout(module, p: float) -> None:
    if isinstance(getattr(module, "attention_dropout", None), (int, float)):
        module.attention_dropout = p
    elif isinstance(getattr(module, "dropout", None), torch.nn.Dropout):
        module.dropout.p = p
    elif isinstance(getattr(module, "dropout", None), float):
        module.dropout = p
    else:
        get_attention_dropout(module)  # raises the explanatory error


@register("attention-dropout")
class AttentionDropoutMasker(Masker):
    """Baseline of the TLM paper: the backbone's attention dropout probability set to ``rate``."""

    Params = AttentionDropoutParams
    level = "attention"

    def setup(self, model, tokenizer, train_batches, total_steps):
        super().setup(model, tokenizer, train_batches, total_steps)
        self.modules = attention_modules(model)
        self.original_p = [get_attention_dropout(m) for m in self.modules]

    def attach(self, model) -> None:
        if not hasattr(self, "modules"):
            self.setup(model, None, [], 1)
        for m in self.modules:
            set_attention_dropout(m, self.params.rate)

    def detach(self) -> None:
        for m, p in zip(getattr(self, "modules", []), getattr(self, "original_p", []), strict=True):
            set_attention_dropout(m, p)

    @property
    def realised_rate(self) -> float:
        return self.params.rate  # the configured probability: its draws are the model's own dropout

    def stats(self) -> dict:
        return {**super().stats(), "realised_rate": self.params.rate, "modules": len(getattr(self, "modules", [])),
                "original_attention_dropout": sorted(set(getattr(self, "original_p", [])))}
