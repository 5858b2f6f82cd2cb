"""The parameters of the built-in masker kinds: frozen dataclasses that validate themselves.

They live apart from the implementations, which import torch, so that ``study validate`` (and
every other command that reads a protocol) knows each kind and checks its parameters without
importing torch. What a parameter does is documented in the kind's implementation module
(named in :data:`study.maskers.kinds.BUILTIN`). A ``ParamError`` names the field, the
problem and the fix; the protocol loader turns it into ``maskers[i].<field>: ...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from study.maskers.base import ParamError, check_rate
from study.maskers.schedules import ScheduledRate


@dataclass(frozen=True)
class RandomTokenParams(ScheduledRate):
    """``rate`` = probability that an eligible token is masked, plus an optional schedule.
    ``side`` (seq2seq tasks): mask the encoder input (``source``, the default when unset), the
    decoder input (``target``) or ``both``."""

    side: Literal["source", "target", "both"] | None = None


@dataclass(frozen=True)
class WholeWordParams(ScheduledRate):
    """``rate`` = probability that a word is masked, plus an optional schedule. ``side`` is accepted
    only as ``source`` (the default): words come from the fast tokenizer's word ids of the encoder
    input, which a seq2seq model's decoder input does not carry."""

    side: str | None = None  # "source" only (checked below, with the reason)

    def __post_init__(self):
        super().__post_init__()
        if self.side == "source":  # the default, stored as None so run_ids match an omitted side
            object.__setattr__(self, "side", None)
        if self.side is not None:
            raise ParamError("side", f"whole-word masking acts on the encoder input (source) only, not {self.side!r}: "
                             "the decoder input carries no word ids",
                             "remove side, or use kind: random-token with side: target or both")


@dataclass(frozen=True)
class TyphoonParams(ScheduledRate):
    ema: float = 0.8  # α: weight of the new batch estimate in the EMA
    spread: float = 0.4  # f: 0 = uniform masking, towards 1 = masking follows saliency
    report_top: int = 10  # how many most/least salient types the run records
    # True: behave exactly as the reference code (cs324-final-project-2023, masking.py) in the two
    # respects where the project differs by default; see study/maskers/typhoon.py. Off by default,
    # so existing protocols keep their run_ids (a default is not hashed) and their results.
    reference: bool = False

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 < self.ema <= 1.0:
            raise ParamError("ema", f"must be in (0, 1], got {self.ema}", "the paper's default is 0.8")
        if not 0.0 <= self.spread < 1.0:
            raise ParamError("spread", f"must be in [0, 1), got {self.spread}",
                             "φ = 1 − f + f·ŝ must stay positive; the default is 0.4")
        if self.report_top < 0:
            raise ParamError("report_top", f"must be non-negative, got {self.report_top}")
        if not isinstance(self.reference, bool):
            raise ParamError("reference", f"must be true or false, got {self.reference!r}",
                             "write `reference: true` to reproduce the reference code")


@dataclass(frozen=True)
class TLMParams:
    rate: float  # probability that a token is masked in a layer
    variant: Literal["both", "siblings", "self"] = "both"
    attention_dropout: float | None = None  # set the backbone's attention dropout too (reference: 0)

    def __post_init__(self):
        check_rate("rate", self.rate)
        if self.rate == 1.0:
            raise ParamError("rate", "1.0 masks every token in every layer", "use a rate below 1")
        if self.attention_dropout is not None:
            check_rate("attention_dropout", self.attention_dropout)


@dataclass(frozen=True)
class AttentionDropoutParams:
    rate: float  # dropout probability on the attention weights, every layer

    def __post_init__(self):
        check_rate("rate", self.rate)


@dataclass(frozen=True)
class DropHeadParams(ScheduledRate):
    def __post_init__(self):
        super().__post_init__()
        if self.max_rate >= 1.0:
            raise ParamError("rate", "DropHead needs a rate below 1 (every example keeps at least one head)",
                             "use a rate below 1")
