"""Sequential seeds: which runs a look needs, and what each comparison decided.

With a protocol ``sequential:`` block, ``study run`` runs the grid look by look. Look k runs
the first ``looks[k]`` seeds (in protocol order) of every comparison still undecided in its
cell: the treatment's runs and the baseline's (a masker's runs are needed while any comparison
it is part of is undecided). When they have all ended (done or failed), every comparison of
the study is decided with :meth:`analysis.sequential.SequentialDesign.replay` on the seed-paired
differences of the first ``looks[k]`` seeds (the whole family at once, so Holm's step-down
holds the family-wise error), and the decided ones stop.

Everything here is a pure function of the store's statuses and values: a restarted
``study run`` recomputes the same decisions and carries on from the look it was in. Runs never
started because their comparisons stopped stay ``pending`` in the store; :func:`plan_looks`
names them (``stopped``) so ``status``/``plan``/``run`` count them apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from study.protocol import Protocol
from study.spec import RunSpec

EVENT = "sequential"  # kind of the store event recorded once per decided comparison

Comparison = tuple[str, str, str, str]  # (task, model, treatment, baseline)


@dataclass(frozen=True)
class Decision:
    look: int  # 1-based look the comparison stopped at
    n_pairs: int  # seed pairs the decision rests on
    decision: str  # better | worse | equivalent | futile
    estimate: float  # naive mean paired difference at the stop (biased after early stopping)

    def event(self, key: Comparison) -> str:
        """The store event's message: JSON, so the report reads it back exactly."""
        task, model, treatment, baseline = key
        return json.dumps({"task": task, "model": model, "treatment": treatment, "baseline": baseline,
                           "look": self.look, "n_pairs": self.n_pairs, "decision": self.decision,
                           "estimate": self.estimate})


@dataclass
class LookPlan:
    """Where a sequential study stands. ``look``: 0-based index of the look whose runs are still
    to run (``len(looks)`` when finished); ``needed``: those runs' ids; ``decisions``: every
    comparison decided so far; ``stopped``: pending runs no comparison will ever need."""

    look: int
    needed: list[str]
    decisions: dict[Comparison, Decision] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    comparisons: list[Comparison] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return not self.needed


def comparisons(protocol: Protocol) -> list[Comparison]:
    """Every (task, model, treatment, baseline) of the study, in protocol order."""
    return [(t.name, m.name, treat, base) for t in protocol.tasks for m in protocol.models
            for treat, base in protocol.comparisons()]


def _key(spec: RunSpec) -> tuple[str, str, str, int]:
    return spec.task["name"], spec.model["name"], spec.masker["name"], spec.seed


def plan_looks(protocol: Protocol, specs: Iterable[RunSpec], statuses: dict[str, str],
               values: dict[str, float]) -> LookPlan:
    """The sequential state from the store: ``statuses`` run_id -> status (missing: pending),
    ``values`` run_id -> primary metric of done runs. Pure; see the module docstring."""
    assert protocol.sequential is not None
    design = protocol.sequential.design(protocol.analysis)
    looks = design.looks
    run_of = {_key(s): s.run_id for s in specs}
    comps = comparisons(protocol)
    decided: dict[Comparison, Decision] = {}
    plan = None
    for k, n in enumerate(looks):
        seeds = protocol.seeds[:n]
        live = [c for c in comps if c not in decided]
        if not live:
            break
        need = {run_of[(t, m, masker, s)] for t, m, treat, base in live for masker in (treat, base)
                for s in seeds}
        waiting = sorted(r for r in need if statuses.get(r, "pending") in ("pending", "running"))
        if waiting:
            plan = LookPlan(k, waiting, decided)
            break
        diffs = {c: _paired(c, seeds, run_of, values) for c in comps}
        for c, (dec, n_pairs) in design.replay(diffs).items():
            if dec != "continue" and c not in decided:
                decided[c] = Decision(k + 1, n_pairs, dec, float(np.mean(diffs[c][:n_pairs])))
    plan = plan or LookPlan(len(looks), [], decided)
    plan.comparisons = comps
    plan.stopped = stopped_runs(comps, plan.decisions, run_of, statuses)
    return plan


def _paired(c: Comparison, seeds, run_of, values) -> np.ndarray:
    """Treatment - baseline per seed, in seed order, over the seeds where both runs are done."""
    t, m, treat, base = c
    out = []
    for s in seeds:
        a, b = values.get(run_of[(t, m, treat, s)]), values.get(run_of[(t, m, base, s)])
        if a is not None and b is not None:
            out.append(a - b)
    return np.asarray(out, dtype=float)


def stopped_runs(comps: list[Comparison], decided: dict, run_of: dict, statuses: dict) -> set[str]:
    """Pending runs of cells x maskers whose every comparison has decided."""
    open_ = {(t, m, masker) for t, m, treat, base in comps if (t, m, treat, base) not in decided
             for masker in (treat, base)}
    return {rid for (t, m, masker, _s), rid in run_of.items()
            if (t, m, masker) not in open_ and statuses.get(rid, "pending") == "pending"}


def store_plan(protocol: Protocol, specs: list[RunSpec], store) -> LookPlan:
    """:func:`plan_looks` from a :class:`study.store.Store`."""
    runs = store.load_runs(specs, status=None)
    statuses = dict(zip(runs["run_id"], runs["status"], strict=True)) if len(runs) else {}
    done = runs[runs["status"] == "done"] if len(runs) else runs
    values = {rid: float(v) for rid, v in zip(done.get("run_id", []), done.get("value", []), strict=True)
              if pd.notna(v)}
    return plan_looks(protocol, specs, statuses, values)


def record_decisions(store, plan: LookPlan) -> list[tuple[Comparison, Decision]]:
    """Log a ``sequential`` event for each decision not logged yet; returns those."""
    logged = {tuple(json.loads(m)[k] for k in ("task", "model", "treatment", "baseline"))
              for m in logged_messages(store)}
    new = [(c, d) for c, d in plan.decisions.items() if c not in logged]
    for c, d in new:
        store.log_event(EVENT, d.event(c))
    return new


def logged_messages(store) -> list[str]:
    ev = store.events()
    return list(ev.loc[ev["kind"] == EVENT, "message"]) if len(ev) else []


def logged_decisions(events: pd.DataFrame) -> pd.DataFrame:
    """The ``sequential`` events of a store's events table as one row per decided comparison:
    task, model, treatment, baseline, look, n_pairs, decision, estimate."""
    cols = ["task", "model", "treatment", "baseline", "look", "n_pairs", "decision", "estimate"]
    if not len(events):
        return pd.DataFrame(columns=cols)
    rows = [json.loads(m) for m in events.loc[events["kind"] == EVENT, "message"]]
    return pd.DataFrame(rows, columns=cols)
