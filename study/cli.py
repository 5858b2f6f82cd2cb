"""The ``study`` command: validate, plan, run, status, analyze, report, export.

Exit codes: 0 success, 1 some runs failed, 2 bad input (the message names the file, the key
and the fix), 3 another driver holds the store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from study.errors import UserError

EXIT_OK, EXIT_RUNS_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _load(path: str):
    from study.protocol import load_protocol

    return load_protocol(path)


def _grid(protocol):
    from study.spec import expand

    return expand(protocol)


def _open_store(protocol, must_exist: bool = False):
    from study.store import Store

    path = protocol.store_path
    if must_exist and not path.exists():
        raise UserError(f"{protocol.source}: no results store at {path} yet. Fix: run `study run {protocol.source}` first.")
    return Store(path)


def _report_dir(protocol, out: str | None) -> Path:
    return Path(out) if out else Path("reports") / protocol.name


def _check_data(p) -> None:
    """Local data folders exist and hold the expected files (before any run starts)."""
    from study.tasks import check_data_dir

    for i, t in enumerate(p.tasks):
        try:
            check_data_dir(t.dataset, t.data_dir)
        except ValueError as e:
            raise UserError(f"{p.source}: tasks[{i}].data_dir: {e}") from None


def cmd_validate(args) -> int:
    from study.spec import expand

    for path in args.protocols:
        p = _load(path)
        _check_data(p)
        n = len(expand(p))
        print(f"{path}: ok — {len(p.seeds)} seeds × {len(p.tasks)} tasks × {len(p.models)} models × "
              f"{len(p.maskers)} maskers = {n} runs; store {p.store}")
    return EXIT_OK


def cmd_plan(args) -> int:
    p = _load(args.protocol)
    specs = _grid(p)
    statuses = {}
    if p.store_path.exists():
        with _open_store(p) as store:
            statuses = store.statuses(s.run_id for s in specs)
    print(f"{'run_id':16}  {'task':12} {'model':14} {'masker':16} {'seed':>4}  status")
    for s in specs:
        print(f"{s.run_id:16}  {s.task['name']:12} {s.model['name']:14} {s.masker['name']:16} {s.seed:>4}  "
              f"{statuses.get(s.run_id, 'pending')}")
    done = sum(1 for v in statuses.values() if v == "done")
    print(f"{len(specs)} runs: {done} done, {len(specs) - done} to run")
    return EXIT_OK


def cmd_run(args) -> int:
    from study.progress import Progress
    from study.scheduler.local import run_local

    p = _load(args.protocol)
    specs = _grid(p)
    with _open_store(p) as store:
        new = store.register(specs)
        store.recover_stale()
        if args.retry_failed:
            store.reset_failed(s.run_id for s in specs)
        counts = store.counts(s.run_id for s in specs)
        todo = counts["pending"] + counts["running"]
        print(f"{p.name}: {len(specs)} runs ({new} new), {counts['done']} done, {counts['failed']} failed, "
              f"{todo} to run", file=sys.stderr)
        if todo == 0:
            return EXIT_OK if counts["failed"] == 0 else EXIT_RUNS_FAILED
        progress = Progress(total=len(specs), already_done=counts["done"])
        try:
            counts = run_local(p, specs, store, progress)
        finally:
            progress.close()
    print(f"{p.name}: {counts['done']} done, {counts['failed']} failed, {counts['pending']} pending", file=sys.stderr)
    return EXIT_OK if counts["failed"] == 0 else EXIT_RUNS_FAILED


def cmd_status(args) -> int:
    p = _load(args.protocol)
    specs = _grid(p)
    counts = {"done": 0, "failed": 0, "running": 0, "pending": len(specs)}
    if p.store_path.exists():
        with _open_store(p) as store:
            counts = store.counts(s.run_id for s in specs)
    print(f"{p.name}: {len(specs)} runs — " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    return EXIT_OK


def _analysis_inputs(p):
    specs = _grid(p)
    with _open_store(p, must_exist=True) as store:
        runs = store.load_runs(specs)
        preds = store.load_predictions(specs)
    if runs.empty:
        raise UserError(f"{p.source}: no finished runs in {p.store} yet. Fix: run `study run {p.source}` first.")
    return runs, preds


def cmd_analyze(args) -> int:
    from analysis import write_analysis

    p = _load(args.protocol)
    runs, preds = _analysis_inputs(p)
    out = _report_dir(p, args.out)
    a = p.analysis
    paths = write_analysis(runs, preds, out_dir=out, baseline=a.baseline if not a.comparisons else None,
                           comparisons=p.comparisons() if a.comparisons else None, alpha=a.alpha,
                           margin=a.margin, n_boot=a.n_boot, seed=a.seed)
    if "comparisons.md" in paths:
        print(Path(paths["comparisons.md"]).read_text())
    if "summary.txt" in paths:
        print(Path(paths["summary.txt"]).read_text())
    print(f"tables written to {out}/", file=sys.stderr)
    return EXIT_OK


def cmd_report(args) -> int:
    from study.report import write_report

    p = _load(args.protocol)
    out = Path(args.out) if args.out else _report_dir(p, None) / "report.pdf"
    path = write_report(p, out)
    print(f"report written to {path}")
    return EXIT_OK


def cmd_export(args) -> int:
    p = _load(args.protocol)
    with _open_store(p, must_exist=True) as store:
        files = store.export(args.out or _report_dir(p, None) / "export", args.format)
    for f in files:
        print(f)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description="Seed-paired studies of token-masking regularizers.")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check protocol files without building anything")
    v.add_argument("protocols", nargs="+")
    v.set_defaults(fn=cmd_validate)
    for name, fn, help_ in [("plan", cmd_plan, "list the runs of a protocol and which are done"),
                            ("status", cmd_status, "counts of done / failed / running / pending runs")]:
        s = sub.add_parser(name, help=help_)
        s.add_argument("protocol")
        s.set_defaults(fn=fn)
    r = sub.add_parser("run", help="run every run that is not done yet (resumes after any crash)")
    r.add_argument("protocol")
    r.add_argument("--retry-failed", action="store_true", help="give failed runs a fresh set of attempts")
    r.set_defaults(fn=cmd_run)
    a = sub.add_parser("analyze", help="write the significance tables from the store")
    a.add_argument("protocol")
    a.add_argument("--out", help="output folder (default reports/<name>/)")
    a.set_defaults(fn=cmd_analyze)
    rep = sub.add_parser("report", help="write the PDF report from the store")
    rep.add_argument("protocol")
    rep.add_argument("--out", help="PDF path (default reports/<name>/report.pdf)")
    rep.set_defaults(fn=cmd_report)
    e = sub.add_parser("export", help="export the store's tables as CSV or parquet")
    e.add_argument("protocol")
    e.add_argument("--format", choices=["csv", "parquet"], default="csv")
    e.add_argument("--out", help="output folder (default reports/<name>/export/)")
    e.set_defaults(fn=cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
