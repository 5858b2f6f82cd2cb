"""Tracking sinks: where researchers already follow runs (MLflow first).

A protocol's ``tracking:`` block lists sinks; it is not part of any run_id (adding, changing or
removing it re-runs nothing). The results store stays authoritative: a sink is a copy, written by
the driver alone (workers are unchanged) from what the store holds, so ``study track PROTOCOL``
can push a finished store after the fact and back-fill whatever a sink missed.

    tracking:
      - sink: mlflow
        uri: sqlite:///mlflow.sqlite   # relative to the protocol file; default: beside the store
        experiment: demo               # default: the study's name

Sinks are a :class:`~study.registry.Registry` of kinds, each a torch-free Params dataclass and a
``"module:Class"`` implementation imported on first use (so ``mlflow`` is imported only when a
protocol asks for it: ``pip install 'maskstudy[mlflow]'``). A sink that fails — a tracking server
that is down, a store it cannot write — never fails a study: :class:`Tracking` warns once and
stops using that sink for the rest of the command.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from study.errors import UserError
from study.registry import Registry, resolve


@dataclass(frozen=True)
class MlflowParams:
    uri: str | None = None  # tracking URI; sqlite:///relative/path is relative to the protocol file
    experiment: str | None = None  # default: the study's name


@dataclass(frozen=True)
class SinkKind:
    params: type  # the frozen dataclass a protocol's sink entry is validated into
    target: str  # "module:Class" of the implementation, imported on first use
    package: str  # the import it needs ...
    extra: str  # ... and the pip extra that installs it


SINKS = Registry("tracking sink")
SINKS.register("mlflow", SinkKind(MlflowParams, "study.tracking.mlflow_sink:MlflowSink", "mlflow", "mlflow"))


@dataclass(frozen=True)
class SinkConfig:
    sink: str
    params: Any


def parse_tracking(conv, raw) -> tuple[SinkConfig, ...]:
    """The protocol's ``tracking:`` list (``conv``: the protocol's converter, for key-path errors)."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        conv.fail("tracking", f"expected a list of sinks, got {type(raw).__name__}",
                  "write `tracking: [{sink: mlflow}]`")
    out = []
    for i, item in enumerate(raw):
        path = f"tracking[{i}]"
        if not isinstance(item, dict):
            conv.fail(path, f"expected a mapping, got {item!r}", "write `- {sink: mlflow, uri: ...}`")
        item = dict(item)
        kind = item.pop("sink", None)
        if kind not in SINKS:
            conv.fail(f"{path}.sink", "required key is missing" if kind is None else SINKS.unknown(kind),
                      f"use one of {', '.join(SINKS.names())}")
        if any(c.sink == kind for c in out):
            conv.fail(f"{path}.sink", f"sink {kind!r} is listed twice", "list each sink once")
        out.append(SinkConfig(kind, conv.dataclass(SINKS.get(kind).params, item, path)))
    return tuple(out)


@dataclass
class TrackedRun:
    """What a sink records of one run, read from the store (the authority)."""

    run_id: str
    name: str  # task/model/masker/seed
    tags: dict  # study, task, model, masker, masker_kind, seed, run_id, status
    params: dict  # flattened training.* and masker.* parameters
    status: str  # done | failed
    epochs: dict = field(default_factory=dict)  # epoch → {metric name: value}
    final: dict = field(default_factory=dict)  # final metrics, realised masking rate, wall time
    error: str | None = None  # a failed run's last error
    started_at: float | None = None
    finished_at: float | None = None


def _flatten(prefix: str, values: dict) -> dict:
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(_flatten(f"{prefix}{k}.", v))
        elif v is not None:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
    return out


def tracked_runs(store, specs, run_ids=None) -> list[TrackedRun]:
    """The finished (done or failed) runs of ``specs`` in ``store``, ready for a sink."""
    from study.store import VALIDATION_PREFIX

    by_id = {s.run_id: s for s in specs}
    wanted = [r for r in (by_id if run_ids is None else run_ids) if r in by_id]
    out = []
    for rid in wanted:
        row = store.conn.execute(
            "SELECT status, primary_metric, value, realised_mask_rate, wall_time_s, train_time_s, started_at, "
            "finished_at, attempts FROM runs WHERE run_id=?", (rid,)).fetchone()
        if row is None or row[0] not in ("done", "failed"):
            continue
        status, metric, value, rate, wall, train, started, finished, attempts = row
        s = by_id[rid]
        masker_params = {k: v for k, v in s.masker.items() if k not in ("name", "kind")}
        run = TrackedRun(
            run_id=rid, name=f"{s.task['name']}/{s.model['name']}/{s.masker['name']}/{s.seed}",
            tags={"study": s.study, "task": s.task["name"], "model": s.model["name"], "masker": s.masker["name"],
                  "masker_kind": s.masker["kind"], "seed": str(s.seed), "run_id": rid, "status": status},
            params={**_flatten("training.", s.training), **_flatten("masker.", masker_params),
                    "masker.kind": s.masker["kind"], "model.source": s.model["source"],
                    "task.dataset": s.task["dataset"], "seed": s.seed},
            status=status, started_at=started, finished_at=finished)
        if status == "done":
            for epoch, name, val, is_final in store.conn.execute(
                    "SELECT epoch, name, value, is_final FROM metrics WHERE run_id=? ORDER BY epoch", (rid,)):
                if val is None:
                    continue
                if name == "train_loss":
                    key = "train_loss"
                elif name.startswith(VALIDATION_PREFIX):
                    key = "validation/" + name[len(VALIDATION_PREFIX):]
                else:
                    key = "eval/" + name
                    if is_final:
                        run.final[f"final/{name}"] = val
                run.epochs.setdefault(epoch, {})[key] = val
            run.final.update({k: v for k, v in {"final/value": value, "realised_mask_rate": rate,
                                                "wall_time_s": wall, "train_time_s": train,
                                                "attempts": attempts}.items() if v is not None})
            run.tags["metric"] = metric
        else:
            last = store.conn.execute("SELECT message FROM events WHERE run_id=? AND kind IN ('failure', 'oom') "
                                      "ORDER BY id DESC LIMIT 1", (rid,)).fetchone()
            run.error = last[0] if last else "failed (no error recorded)"
        out.append(run)
    return out


class Sink:
    """What a sink implements. ``push`` must never duplicate: a run already recorded (found by its
    run_id) is updated, not created again."""

    def __init__(self, params, protocol): ...

    def describe(self) -> str: ...

    def open(self) -> None:
        """Connect; find or create the study's parent record."""

    def push(self, runs: list[TrackedRun]) -> int:
        """Record runs not recorded yet, or whose status changed; returns how many were written."""

    def log_artifacts(self, paths: list[Path], folder: str) -> None: ...

    def close(self) -> None: ...


def check_installed(protocol) -> None:
    """Exit 2 (before any work) when a sink's package is missing, naming the extra that installs it."""
    for i, cfg in enumerate(protocol.tracking):
        kind = SINKS.get(cfg.sink)
        if importlib.util.find_spec(kind.package) is None:
            raise UserError(f"{protocol.source}: tracking[{i}].sink: {cfg.sink!r} needs the {kind.package} package, "
                            f"which is not installed. Fix: pip install 'maskstudy[{kind.extra}]', or remove the "
                            "tracking block (the results store is complete without it).")


class Tracking:
    """The protocol's sinks, as the driver uses them: every call is safe — a sink that fails is
    reported once (on ``stream``) and left out for the rest of the command."""

    def __init__(self, protocol, specs, stream=None):
        self.protocol = protocol
        self.specs = specs
        self.stream = stream or sys.stderr
        self._sinks: list[Sink] | None = None
        self.failed: list[str] = []  # sinks that failed in this command

    @classmethod
    def from_protocol(cls, protocol, specs, stream=None) -> Tracking | None:
        if not protocol.tracking:
            return None
        check_installed(protocol)
        return cls(protocol, specs, stream)

    def _open(self) -> list[Sink]:
        if self._sinks is None:
            self._sinks = []
            for cfg in self.protocol.tracking:
                sink = resolve(SINKS.get(cfg.sink).target)(cfg.params, self.protocol)
                if self._safely(sink, sink.open)[0]:
                    self._sinks.append(sink)
        return self._sinks

    def _safely(self, sink: Sink, fn, *args) -> tuple[bool, Any]:
        """(True, what ``fn(*args)`` returned), or (False, None) after warning that the sink failed."""
        try:
            return True, fn(*args)
        except Exception as e:  # a tracker must never fail a study: warn once, go on without it
            if self._sinks is not None and sink in self._sinks:
                self._sinks.remove(sink)
            self.failed.append(sink.describe())
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"warning: tracking: {sink.describe()} failed ({type(e).__name__}: {first[:300]}); it is left "
                  f"out for the rest of this command. The results store is complete; run `study track "
                  f"{self.protocol.source}` later to push what it missed.", file=self.stream)
            return False, None

    def push(self, store, run_ids=None) -> int:
        """Push the finished runs of ``run_ids`` (default: the whole grid: a back-fill)."""
        sinks = self._open()
        if not sinks:
            return 0
        runs = tracked_runs(store, self.specs, run_ids)
        written = 0
        for sink in list(sinks):
            ok, count = self._safely(sink, sink.push, runs)
            if ok:
                written = max(written, count)
        return written

    def log_artifacts(self, paths, folder: str = "") -> None:
        for sink in list(self._open()):
            self._safely(sink, sink.log_artifacts, [Path(p) for p in paths], folder)

    def close(self) -> None:
        for sink in list(self._sinks or []):
            self._safely(sink, sink.close)
