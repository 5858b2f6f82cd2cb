"""Masking-rate schedules, shared by every masker with a ``rate`` (input-level and DropHead).

The schedule is written flat next to the rate::

    - {name: rt-warm, kind: random-token, rate: 0.15, schedule: linear-warmup, warmup: 0.2}
    - {name: rt-cur,  kind: random-token, rate: 0.3,  schedule: curriculum, start: 0.05}

``constant`` (the default; stored as an unset ``schedule`` so that writing it or not gives the
same run_id) keeps ``rate``; ``linear-warmup`` rises linearly from 0 at the first
step to ``rate`` after a ``warmup`` fraction (default 0.1) of all training steps and stays
there; ``curriculum`` moves linearly from ``start`` (default 0) at the first step to ``end``
(default ``rate``) at the last. The schedule depends on the global step only, so it is the same
for every seed, and options that the chosen schedule does not use are errors (a typo'd
schedule would otherwise silently train at a constant rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from study.maskers.base import ParamError, check_rate

SCHEDULES = ("constant", "linear-warmup", "curriculum")
DEFAULT_WARMUP = 0.1


@dataclass(frozen=True)
class ScheduledRate:
    """Params base class: a masking ``rate`` with an optional schedule over training steps."""

    rate: float
    schedule: Literal["constant", "linear-warmup", "curriculum"] | None = None  # None: constant
    warmup: float | None = None  # linear-warmup only: fraction of training steps to reach `rate`
    start: float | None = None  # curriculum only: rate at the first step (default 0)
    end: float | None = None  # curriculum only: rate at the last step (default `rate`)

    def __post_init__(self):
        check_rate("rate", self.rate)
        if self.schedule == "constant":  # the default, stored as None so run_ids match an omitted schedule
            object.__setattr__(self, "schedule", None)
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ParamError("schedule", f"unknown schedule {self.schedule!r}", f"use one of {', '.join(SCHEDULES)}")
        if self.warmup is not None:
            if self.schedule != "linear-warmup":
                raise ParamError("warmup", f"only used by schedule: linear-warmup (schedule is {self.schedule or 'constant'})",
                                 "remove it or set `schedule: linear-warmup`")
            if not 0.0 < self.warmup <= 1.0:
                raise ParamError("warmup", f"must be in (0, 1], got {self.warmup}",
                                 "give the fraction of training steps, e.g. 0.1")
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                if self.schedule != "curriculum":
                    raise ParamError(name, f"only used by schedule: curriculum (schedule is {self.schedule or 'constant'})",
                                     "remove it or set `schedule: curriculum`")
                check_rate(name, value)

    def rate_at(self, step: int, total_steps: int) -> float:
        """The masking rate at 0-based ``step`` of ``total_steps``."""
        return schedule_rate(self.schedule or "constant", self.rate, step, total_steps,
                             warmup=self.warmup, start=self.start, end=self.end)

    @property
    def max_rate(self) -> float:
        if self.schedule == "curriculum":
            return max(self.start or 0.0, self.rate if self.end is None else self.end)
        return self.rate


def schedule_rate(kind: str, rate: float, step: int, total_steps: int, *, warmup: float | None = None,
                  start: float | None = None, end: float | None = None) -> float:
    total = max(1, int(total_steps))
    if kind == "constant":
        return rate
    if kind == "linear-warmup":
        ramp = max(1.0, (DEFAULT_WARMUP if warmup is None else warmup) * total)
        return rate * min(1.0, step / ramp)
    if kind == "curriculum":
        first = 0.0 if start is None else start
        last = rate if end is None else end
        frac = step / (total - 1) if total > 1 else 1.0
        return first + (last - first) * min(1.0, max(0.0, frac))
    raise ValueError(f"unknown schedule {kind!r}")
