"""The ``study`` command: validate, plan, pilot, run, status, analyze, report, export, publish.

Exit codes: 0 success, 1 some runs failed, 2 bad input (the message names the file, the key
and the fix, and nothing is written), 3 another driver holds the store, 4 the disk is full
(`study run`: free space, then run it again), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from study.errors import UserError

EXIT_OK, EXIT_RUNS_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _load(path: str):
    """The validated protocol, after checking its store can be used (every command, before anything runs)."""
    from study.protocol import load_protocol
    from study.storecheck import check_store, check_store_moved

    p = load_protocol(path)
    check_store_moved(p)
    check_store(p.store_path, study=p.name, source=p.source)
    return p


def _writable_output(p, out: Path, flag: str, is_file: bool = False) -> Path:
    """``out`` (a folder, or a file with ``is_file``) can be written; checked before any work is done,
    so a bad ``--out`` never leaves half a set of tables behind."""

    def fail(problem: str) -> None:
        raise UserError(f"{p.source}: {flag} {out}: {problem}. Fix: pass --out a path in a folder you can write.")

    if "\0" in str(out):
        fail("contains a NUL character, which no file name can hold")
    try:
        problem = _output_problem(out, is_file)
    except OSError as e:  # a name too long, a loop of links ...
        problem = e.strerror
    if problem:
        fail(problem)
    return out


def _output_problem(out: Path, is_file: bool) -> str | None:
    from study.storecheck import creatable_problem

    if is_file and out.is_dir():
        return f"is a folder; the report is a file (e.g. {out / 'report.pdf'})"
    if not is_file and out.exists() and not out.is_dir():
        return "is a file, not a folder"
    if out.is_file() and not os.access(out, os.W_OK):
        return "the file cannot be written (permission denied)"
    return creatable_problem(out if is_file else out / "table")


def _grid(protocol):
    from study.spec import expand

    return expand(protocol)


def _open_store(protocol, must_exist: bool = False):
    from study.store import Store

    path = protocol.store_path
    if must_exist and not path.exists():
        raise UserError(f"{protocol.source}: no results store at {path} yet. Fix: run `study run {protocol.source}` first.")
    return Store(path, study=protocol.name)


def _report_dir(protocol, out: str | None) -> Path:
    return Path(out) if out else Path("reports") / protocol.name


def _check_data(p) -> None:
    """Local data folders exist and hold the expected files (before any run starts)."""
    from study.protocol import local_data_hint
    from study.tasks import check_data_dir

    for i, t in enumerate(p.tasks):
        try:
            check_data_dir(t.dataset, t.data_dir)
        except ValueError as e:
            key = f"tasks[{i}].data_dir"
            raise UserError(f"{p.source}: {key}: {e}{local_data_hint(p.local_data, key)}") from None


def cmd_validate(args) -> int:
    from study.spec import expand
    from study.tracking import check_installed

    for path in args.protocols:
        p = _load(path)
        _check_data(p)
        check_installed(p)
        if args.smoke:
            from study.smoke import check_maskers

            check_maskers(p)
        n = len(expand(p))
        print(f"{path}: ok — {len(p.seeds)} seeds × {len(p.tasks)} tasks × {len(p.models)} models × "
              f"{len(p.maskers)} maskers = {n} runs; store {p.store}")
    return EXIT_OK


def cmd_plan(args) -> int:
    from study.scheduler.local import parse_gpus
    from study.scheduler.plan import print_plan

    p = _load(args.protocol)
    return print_plan(p, _grid(p), gpus=parse_gpus(args.gpus), calibrate=args.calibrate)


def cmd_run(args) -> int:
    from study.scheduler.local import parse_gpus
    from study.scheduler.run import execute

    p = _load(args.protocol)
    _check_data(p)
    specs = _grid(p)
    from study.pilot import warn_collapsed

    warn_collapsed(p, specs)
    return execute(p, specs, backend=args.backend, gpus=parse_gpus(args.gpus), retry_failed=args.retry_failed)


def cmd_pilot(args) -> int:
    from study.pilot import run_pilot

    p = _load(args.protocol)
    _check_data(p)
    return run_pilot(p, _grid(p), seeds=args.seeds, maskers=args.maskers)


def cmd_status(args) -> int:
    from study.scheduler.plan import print_status

    p = _load(args.protocol)
    return print_status(p, _grid(p), failures=args.failures)


def _analysis_inputs(p):
    """Every run of the grid (failed and pending ones too, so the analysis can name a masker
    without a finished run) and the predictions of the finished ones."""
    specs = _grid(p)
    with _open_store(p, must_exist=True) as store:
        runs = store.load_grid(specs)
        preds = store.load_predictions(specs)
    if not runs["status"].eq("done").any():
        raise UserError(f"{p.source}: no finished runs in {p.store} yet. Fix: run `study run {p.source}` first.")
    return runs, preds


def _analysis_result(p):
    """The study's ``AnalysisResult`` from its store (what analyze and publish write)."""
    import warnings

    from analysis import AnalysisWarning, analyze

    runs, preds = _analysis_inputs(p)
    with warnings.catch_warnings():  # result.text() prints them, once, as the report does
        warnings.simplefilter("ignore", AnalysisWarning)
        return analyze(runs, preds, **p.analysis_options())


def cmd_analyze(args) -> int:
    from analysis.pipeline import write_result
    from analysis.tables import MD_COLUMNS, to_markdown

    p = _load(args.protocol)
    out = _writable_output(p, _report_dir(p, args.out), "--out" if args.out else "output folder")
    tracking = _tracking(p)
    result = _analysis_result(p)
    files = write_result(result, out)
    if tracking:
        tracking.log_artifacts(sorted(files.values()), "tables")
        tracking.close()
    # The terminal shows what summary.txt and the report show, rendered from the result.
    first, table = next(iter(result.tables().items()))
    print(to_markdown(table, MD_COLUMNS.get(first)))
    print(result.text())
    print(f"tables written to {out}/", file=sys.stderr)
    return EXIT_OK


def cmd_report(args) -> int:
    from study.report import write_report

    p = _load(args.protocol)
    out = _writable_output(p, Path(args.out) if args.out else _report_dir(p, None) / f"report.{args.format}",
                           "--out" if args.out else "report file", is_file=True)
    tracking = _tracking(p)
    path = write_report(p, out, args.format)
    print(f"report written to {path}")
    if tracking:
        tracking.log_artifacts([path], "report")
        tracking.close()
    return EXIT_OK


def _tracking(p):
    """The protocol's tracking sinks (None without a ``tracking:`` block); exit 2 if one's package is missing."""
    from study.tracking import Tracking

    return Tracking.from_protocol(p, _grid(p))


def cmd_track(args) -> int:
    """Push a store into the protocol's tracking sinks, back-filling what they missed."""
    from study.scheduler.lock import DriverLock, StoreLocked
    from study.scheduler.run import EXIT_LOCKED

    p = _load(args.protocol)
    if not p.tracking:
        raise UserError(f"{p.source}: tracking: the protocol lists no tracking sink. Fix: add "
                        "`tracking: [{sink: mlflow}]` (README \"Tracking\").")
    tracking = _tracking(p)
    specs = _grid(p)
    with _open_store(p, must_exist=True) as store:
        try:
            with DriverLock(store, backend="track"):  # one writer of the sinks: never beside a running `study run`
                written = tracking.push(store)
                reports = _report_dir(p, None)
                reports_written = [reports / f"report.{f}" for f in ("pdf", "html") if (reports / f"report.{f}").is_file()]
                tables = sorted(f for f in reports.glob("*") if f.is_file() and f not in reports_written)
                if tables:
                    tracking.log_artifacts(tables, "tables")
                if reports_written:
                    tracking.log_artifacts(reports_written, "report")
                tracking.close()
                finished = sum(store.counts([s.run_id for s in specs])[k] for k in ("done", "failed"))
        except StoreLocked as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_LOCKED
    if tracking.failed:
        return EXIT_RUNS_FAILED
    for cfg in p.tracking:
        print(f"{p.name}: {cfg.sink}: {written} run(s) pushed, {finished - written} already there "
              f"({finished} finished run(s) in the store)")
    return EXIT_OK


def cmd_export(args) -> int:
    p = _load(args.protocol)
    out = _writable_output(p, Path(args.out) if args.out else _report_dir(p, None) / "export",
                           "--out" if args.out else "output folder")
    with _open_store(p, must_exist=True) as store:
        files = store.export(out, args.format)
    for f in files:
        print(f)
    return EXIT_OK


def cmd_publish(args) -> int:
    from study.publish import check_destination, default_folder, publish, unfinished_problem

    p = _load(args.protocol)
    flag = "--out" if args.out else "output folder"
    out = _writable_output(p, Path(args.out) if args.out else default_folder(p), flag)
    check_destination(p, out, flag)
    specs = _grid(p)
    with _open_store(p, must_exist=True) as store:
        problem = unfinished_problem(p, specs, store)
    if problem:
        raise UserError(f"{p.source}: {problem}. Nothing was published.")
    manifest = publish(p, specs, out, _analysis_result(p))
    for name, size in manifest["files"].items():
        print(f"{out / name}  ({size:,} bytes)")
    pred = manifest["predictions"]
    if not pred["included"]:
        print(f"per-example predictions left out: {pred['gzip_bytes']:,} bytes gzipped, over the "
              f"{pred['limit_bytes']:,}-byte limit (`study export {p.source}` writes them)", file=sys.stderr)
    print(f"published {p.name}: {manifest['runs_published']} runs to {out}/", file=sys.stderr)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="study", description="Seed-paired studies of token-masking regularizers.")
    sub = parser.add_subparsers(dest="command", required=True)
    v = sub.add_parser("validate", help="check protocol files without building anything")
    v.add_argument("protocols", nargs="+")
    v.add_argument("--no-smoke", dest="smoke", action="store_false",
                   help="skip the masker smoke test (two training steps of every masker, plugins included, on a "
                        "small batch with a 1-layer model, in a child process)")
    v.set_defaults(fn=cmd_validate)
    gpus_help = ("GPUs to use: a count (2), a list (0,2) or none; default: detected. A count above the real "
                 "GPUs makes fake slots (dry runs, tests)")
    pl = sub.add_parser("plan", help="list the runs, which are done, and the remaining wall time and GPU-hours")
    pl.add_argument("protocol")
    pl.add_argument("--gpus", help=gpus_help + "; sets the slots the estimate assumes")
    pl.add_argument("--calibrate", choices=["auto", "always", "never"], default="auto",
                    help="measure throughput with a few training steps when no finished run of a model exists "
                         "(auto, the default), always, or never")
    pl.set_defaults(fn=cmd_plan)
    pi = sub.add_parser("pilot", help="run the first seeds of every cell, then say whether each learns, how noisy "
                                      "it is, how many seeds it needs and what the grid will cost")
    pi.add_argument("protocol")
    pi.add_argument("--seeds", type=int, default=2, help="how many of the protocol's first seeds to run (default 2)")
    pi.add_argument("--maskers", choices=["baseline", "all"], default="baseline",
                    help="run the baseline masker(s) only (default) or every masker (adds paired-difference SDs)")
    pi.set_defaults(fn=cmd_pilot)
    st = sub.add_parser("status", help="counts of done / failed / running / pending runs, and the running driver")
    st.add_argument("protocol")
    st.add_argument("--failures", action="store_true", help="print the last traceback of each failed run")
    st.set_defaults(fn=cmd_status)
    r = sub.add_parser("run", help="run every run that is not done yet (resumes after any crash)")
    r.add_argument("protocol")
    r.add_argument("--retry-failed", action="store_true", help="give failed runs a fresh set of attempts")
    r.add_argument("--backend", choices=["local", "ray", "slurm"],
                   help="where runs execute (default: the protocol's execution.backend, else local)")
    r.add_argument("--gpus", help=gpus_help + " (local backend)")
    r.set_defaults(fn=cmd_run)
    a = sub.add_parser("analyze", help="write the significance tables from the store")
    a.add_argument("protocol")
    a.add_argument("--out", help="output folder (default reports/<name>/)")
    a.set_defaults(fn=cmd_analyze)
    rep = sub.add_parser("report", help="write the report (PDF, or one self-contained HTML page) from the store")
    rep.add_argument("protocol")
    rep.add_argument("--format", choices=["pdf", "html"], default="pdf",
                     help="pdf (default) or html: the same content; the HTML page embeds its figures and sorts "
                          "its tables with no network")
    rep.add_argument("--out", help="file path (default reports/<name>/report.pdf or report.html)")
    rep.set_defaults(fn=cmd_report)
    tr = sub.add_parser("track", help="push the store's finished runs (and tables, report) into the protocol's "
                                      "tracking sinks, back-filling what they missed")
    tr.add_argument("protocol")
    tr.set_defaults(fn=cmd_track)
    e = sub.add_parser("export", help="export the store's tables as CSV or parquet")
    e.add_argument("protocol")
    e.add_argument("--format", choices=["csv", "parquet"], default="csv")
    e.add_argument("--out", help="output folder (default reports/<name>/export/)")
    e.set_defaults(fn=cmd_export)
    pu = sub.add_parser("publish", help="write a finished study's tables, report and runs table to results/<name>/")
    pu.add_argument("protocol")
    pu.add_argument("--out", help="output folder (default results/<name>/; an earlier publication there is replaced)")
    pu.set_defaults(fn=cmd_publish)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`study status | head`): stop quietly, as other Unix tools do, and
        # keep Python from complaining again when it flushes stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
