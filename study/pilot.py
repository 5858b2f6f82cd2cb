"""``study pilot``: run the first seeds of a grid, then say per cell whether it learns, how noisy
it is, and what the whole grid will cost.

Pilot runs are ordinary runs of the grid — same run_ids, same store, run by the same
:func:`study.scheduler.run.execute` — so a study that goes on after its pilot retrains nothing.
The statistics are :func:`analysis.pilot.pilot_table`; this module selects the runs, renders the
table and records the verdicts as a ``pilot`` event in the store (taking the driver lock for that
one write: the driver is the store's only writer), which ``study run`` reads to warn about
collapsed cells (:func:`warn_collapsed`). :func:`recorded_pilot_table` gives the report the table
of the latest recorded pilot (the "Pilot" table of the PDF report).
"""

from __future__ import annotations

import json
import sys

from study.errors import UserError
from study.progress import fmt_duration
from study.protocol import Protocol
from study.spec import RunSpec
from study.tasktypes import get_task_type

PILOT_EVENT = "pilot"


def baseline_maskers(protocol: Protocol) -> list[str]:
    """The maskers the study compares against, in protocol order (a protocol without a comparison:
    its baseline, else its first masker)."""
    wanted = {b for _, b in protocol.comparisons()} or {protocol.analysis.baseline or protocol.maskers[0].name}
    return [m.name for m in protocol.maskers if m.name in wanted]


def pilot_specs(protocol: Protocol, specs: list[RunSpec], seeds: int, maskers: str) -> list[RunSpec]:
    """The grid's runs of the first ``seeds`` seeds and of the baseline maskers (or of all)."""
    if seeds < 1:
        raise UserError(f"{protocol.source}: --seeds must be at least 1, got {seeds}. Fix: use --seeds 2 (the default).")
    if seeds > len(protocol.seeds):
        raise UserError(f"{protocol.source}: seeds: the protocol lists {len(protocol.seeds)} seed(s), so a pilot "
                        f"of {seeds} is the whole study. Fix: use --seeds {len(protocol.seeds)} or fewer, or "
                        "`study run`.")
    first = set(protocol.seeds[:seeds])
    names = set(baseline_maskers(protocol)) if maskers == "baseline" else {m.name for m in protocol.maskers}
    return [s for s in specs if s.seed in first and s.masker["name"] in names]


def load_pilot_table(protocol: Protocol, pilot: list[RunSpec]):
    """The pilot table (:func:`analysis.pilot.pilot_table`) of the finished runs among ``pilot``."""
    from analysis.pilot import pilot_table
    from study.store import Store

    with Store(protocol.store_path) as store:
        runs = store.load_runs(pilot)
        preds = store.load_predictions(pilot)  # generation runs' rows included (collapse reads them)
    a = protocol.analysis
    return pilot_table(runs, preds, protocol.comparisons(), margin=a.margin, alpha=a.alpha,
                       planned_seeds=len(protocol.seeds), seed=a.seed, levels=generation_levels(protocol, runs))


def generation_levels(protocol: Protocol, runs) -> dict:
    """Per generation task that ran: (most frequent target, copy source) — the scores of the two
    trivial systems (:func:`study.tasktypes.seq2seq.reference_levels`), in the pilot's majority and
    chance columns."""
    from study.tasks import load_task
    from study.tasktypes import get_task_type
    from study.tasktypes.seq2seq import reference_levels

    out = {}
    for t in protocol.tasks:
        if not get_task_type(t.task_type).generates or t.name not in set(runs["task"]):
            continue
        task = load_task(t)
        levels = reference_levels(task.primary_metric, task.train, task.eval, task.lowercase)
        out[t.name] = (levels["most frequent target"], levels["copy source"])
    return out


def projection(protocol: Protocol, specs: list[RunSpec]) -> str:
    """Projected wall time and GPU-hours of the whole grid from the measured runs (as ``study plan``)."""
    from study.scheduler.local import detect_gpus
    from study.scheduler.plan import Estimator, _finished_runs, schedule_makespan
    from study.store import Store

    with Store(protocol.store_path) as store:
        finished = _finished_runs(store, {s.run_id: s for s in specs})
    ex = protocol.execution
    est = Estimator(finished, calibrate="never")
    seconds = [e.seconds for e in map(est.estimate, specs) if e.seconds is not None]
    gpus = detect_gpus()
    slots = len(gpus) * ex.runs_per_gpu if gpus else ex.cpu_slots
    if not seconds:
        return "whole grid: no estimate (no run finished)"
    where = f"{slots} GPU slot(s)" if gpus else f"{slots} CPU slot(s), no GPU"
    cost = (f"{sum(seconds) / 3600 / ex.runs_per_gpu:.2f} GPU-hours" if gpus
            else f"{sum(seconds) / 3600:.2f} CPU-slot-hours")
    missing = len(specs) - len(seconds)
    return (f"whole grid ({len(specs)} runs): ~{fmt_duration(schedule_makespan(seconds, slots))} wall on {where}; "
            f"{cost}" + (f" ({missing} run(s) without an estimate not counted)" if missing else "")
            + "; from the pilot's measured run times (maskers that cost more than the baseline are not priced in)")


def render(table, stream) -> None:
    import pandas as pd

    def num(x, fmt="{:.3f}"):
        return "—" if pd.isna(x) else fmt.format(x)

    # the name columns as wide as their longest entry (weighted_f1, long task names), so columns line up
    w = {c: max([minimum, *(len(str(v)) for v in table[c])]) for c, minimum in
         (("task", 12), ("model", 14), ("masker", 16), ("metric", 9))}
    print(f"{'task':{w['task']}} {'model':{w['model']}} {'masker':{w['masker']}} {'metric':{w['metric']}} "
          f"{'runs':>4} {'mean':>6} {'majority':>8} "
          f"{'chance':>6} {'collapsed':>9} {'seed SD':>7} {'diff SD':>7} {'seeds: detect':>13} {'equiv.':>6} "
          f"{'s/run':>6}", file=stream)
    for r in table.itertuples(index=False):
        diff = num(r.sd_diff) + ("" if r.sd_source == "paired" else "*")
        print(f"{r.task:{w['task']}} {r.model:{w['model']}} {r.masker:{w['masker']}} {r.metric:{w['metric']}} "
              f"{r.n_runs:>4} {num(r.mean):>6} "
              f"{num(r.majority):>8} {num(r.chance):>6} {f'{r.n_collapsed}/{r.n_runs}':>9} {num(r.sd_seed):>7} "
              f"{diff:>7} {num(r.seeds_needed, '{}'):>13} {num(r.seeds_needed_equivalence, '{}'):>6} "
              f"{num(r.run_s, '{:.0f}'):>6}", file=stream)


def run_pilot(protocol: Protocol, specs: list[RunSpec], seeds: int = 2, maskers: str = "baseline",
              stream=None) -> int:
    from analysis.pilot import cell_verdicts
    from study.scheduler.run import EXIT_OK, execute

    out = stream or sys.stdout
    pilot = pilot_specs(protocol, specs, seeds, maskers)
    code = execute(protocol, pilot)
    if code not in (EXIT_OK, 1):  # locked or interrupted: nothing to judge yet
        return code
    table = load_pilot_table(protocol, pilot)
    if table.empty:
        print(f"{protocol.name}: no pilot run finished; `study status {protocol.source} --failures` says why",
              file=out)
        return code
    a = protocol.analysis
    print(f"\npilot of {protocol.name}: seeds {protocol.seeds[:seeds]}, maskers: "
          f"{', '.join(sorted(set(table['masker'])))}; margin {a.margin}, α {a.alpha}, power 0.8, "
          f"{len(protocol.seeds)} seeds planned", file=out)
    render(table, out)
    if any(get_task_type(t.task_type).generates for t in protocol.tasks):
        print("  generation tasks: majority = the most frequent training target answered for every source, "
              "chance = every source copied; collapsed = the same output for every example", file=out)
    print("  collapsed = predicted one class, or accuracy within 2 binomial SE of the majority class; "
          "seeds: detect = pairs for 80 % power to detect the margin (paired t), equiv. = to show "
          "equivalence within it (TOST); * = no paired run: √2 × seed SD", file=out)
    if seeds < 3:
        print(f"  (an SD from {seeds} seed(s) is a rough guide: `--seeds 3` or more firms it up)", file=out)
    print(projection(protocol, specs), file=out)
    from study.store import Store
    from study.truncation import lines

    with Store(protocol.store_path) as store:
        for line in lines(store.load_runs(pilot), protocol.training.max_length):
            print(line, file=out)
    verdicts = cell_verdicts(table)
    for v in verdicts.itertuples(index=False):
        print(f"verdict {v.task}/{v.model}: {v.verdict}", file=out)
    _record(protocol, table, pilot)
    return code  # 0, or 1 when some pilot runs failed (the table covers those that finished)


def _record(protocol: Protocol, table, pilot: list[RunSpec]) -> None:
    """One ``pilot`` event: each cell's verdict and the run_ids it rests on."""
    from analysis.pilot import cell_verdicts
    from study.scheduler.lock import DriverLock, StoreLocked
    from study.store import Store

    cells = []
    for v in cell_verdicts(table).itertuples(index=False):
        ids = [s.run_id for s in pilot if s.task["name"] == v.task and s.model["name"] == v.model]
        cells.append({"task": v.task, "model": v.model, "verdict": v.verdict,
                      "collapsed": v.verdict.startswith("collapsed"), "run_ids": ids})
    with Store(protocol.store_path) as store:
        lock = DriverLock(store, backend="pilot")
        try:
            lock.acquire()
        except StoreLocked as e:
            print(f"warning: pilot verdicts not recorded in the store ({e})", file=sys.stderr)
            return
        try:
            store.log_event(PILOT_EVENT, json.dumps({"cells": cells}))
        finally:
            lock.release()


def recorded_cells(protocol: Protocol, specs: list[RunSpec]) -> list[dict]:
    """The latest pilot's cells (task, model, verdict, collapsed, run_ids) whose pilot runs are all
    still part of this grid; [] when no pilot was recorded."""
    from study.store import Store

    if not protocol.store_path.exists():
        return []
    with Store(protocol.store_path) as store:
        events = store.events()
    events = events[events["kind"] == PILOT_EVENT]
    if events.empty:
        return []
    ids = {s.run_id for s in specs}
    cells = json.loads(events.iloc[-1]["message"])["cells"]
    return [c for c in cells if c["run_ids"] and set(c["run_ids"]) <= ids]


def recorded_pilot_table(protocol: Protocol, specs: list[RunSpec]):
    """The pilot table of the latest recorded pilot (for the report), or None when there is none."""
    ids = {r for c in recorded_cells(protocol, specs) for r in c["run_ids"]}
    return load_pilot_table(protocol, [s for s in specs if s.run_id in ids]) if ids else None


def collapsed_cells(protocol: Protocol, specs: list[RunSpec]) -> list[dict]:
    """Cells the latest pilot found collapsed, if their pilot runs are still part of this grid."""
    return [c for c in recorded_cells(protocol, specs) if c["collapsed"]]


def warn_collapsed(protocol: Protocol, specs: list[RunSpec], stream=None) -> None:
    """``study run``'s warning: name the cells a pilot found collapsed."""
    for c in collapsed_cells(protocol, specs):
        print(f"warning: the pilot found {c['task']}/{c['model']} {c['verdict']}: its runs learn only the label "
              "prior at these settings, so its comparisons will be artefacts. Fix: change the cell (data, "
              f"epochs, learning rate) and pilot again (`study pilot {protocol.source}`).", file=stream or sys.stderr)
