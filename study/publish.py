"""``study publish``: a finished study's results as one folder anyone can check.

``results/<study name>/`` holds the analysis (``summary.txt`` and every table ``study analyze``
writes, as md and csv), the PDF report, ``runs.csv`` (``study export``'s runs table, the grid's
runs only), ``predictions.csv.gz`` when it is small enough, and ``published.json`` (what was
published, from which protocol and commit). tests/test_published_results.py recomputes every
comparison from ``runs.csv``.

The folder is built beside its destination and renamed into place, so a failure leaves either
the previous publication or none, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

from study.errors import UserError
from study.protocol import Protocol
from study.spec import RunSpec

MANIFEST = "published.json"
# Per-example predictions are published only below this size (gzipped): results/ lives in git.
PREDICTIONS_LIMIT_BYTES = 5 * 1024 * 1024
ANALYSIS_SUFFIXES = (".md", ".csv")  # of what `study analyze` writes: the tables anyone can read and diff


def default_folder(protocol: Protocol) -> Path:
    return Path("results") / protocol.name


def unfinished_problem(protocol: Protocol, specs: list[RunSpec], store) -> str | None:
    """Why the study is not finished (a run of the grid not done and not stopped early by a
    sequential design), with the fix; None when it is."""
    statuses = store.statuses([s.run_id for s in specs])
    stopped: set[str] = set()
    if protocol.sequential is not None:
        from study.scheduler.looks import store_plan

        stopped = store_plan(protocol, specs, store).stopped
    left = {"failed": 0, "running": 0, "pending": 0}
    for run_id, status in statuses.items():
        if status != "done" and run_id not in stopped:
            left[status] += 1
    if not any(left.values()):
        return None
    said = ", ".join(f"{n} {status}" for status, n in left.items() if n)
    fix = f"`study run {protocol.source}` finishes it (it resumes)"
    if left["failed"]:
        fix += f"; `study run {protocol.source} --retry-failed` retries failed runs (`study status --failures` shows why they failed)"
    if left["running"]:
        fix += "; runs marked running belong to a `study run` still going, or killed (running it again resumes them)"
    return f"the study is not finished: {sum(left.values())} of {len(specs)} runs not done ({said}). Fix: {fix}"


def check_destination(protocol: Protocol, out: Path, flag: str) -> None:
    """``out`` is new, empty or an earlier publication (which is replaced); anything else is
    someone's folder and is never replaced."""
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise UserError(f"{protocol.source}: {flag} {out}: is a folder that is not a published study (no {MANIFEST}); "
                        f"publishing would replace it. Fix: pass --out a new folder, or remove {out} first.")


def publish(protocol: Protocol, specs: list[RunSpec], out: Path, analysis_result,
            predictions_limit: int = PREDICTIONS_LIMIT_BYTES) -> dict:
    """Write the publication of a finished study to ``out`` (replacing an earlier one) and
    return its manifest. ``analysis_result``: the ``AnalysisResult`` of the study's runs."""
    out = Path(out)
    created = _make_parents(out.parent)
    building = out.parent / f".{out.name}.publishing-{os.getpid()}"
    try:
        building.mkdir()
        manifest = _build(protocol, specs, building, analysis_result, predictions_limit)
        _swap_in(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        for folder in reversed(created):  # innermost first; only folders this call made
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    return manifest


def _build(protocol, specs, folder: Path, result, predictions_limit: int) -> dict:
    from analysis.pipeline import write_result
    from study.report import write_report
    from study.store import Store

    scratch = folder / ".analysis"
    write_result(result, scratch, figures=False)  # the figures are in the report
    for path in sorted(scratch.iterdir()):
        if path.suffix in ANALYSIS_SUFFIXES or path.name == "summary.txt":
            path.rename(folder / path.name)
    shutil.rmtree(scratch)
    with warnings.catch_warnings():  # the report prints the analysis warnings itself
        warnings.simplefilter("ignore")
        write_report(protocol, folder / "report.pdf")
    with Store(protocol.store_path, study=protocol.name) as store:
        store.export(folder, "csv", specs=specs, tables=("runs",))
        store.export(folder, "csv", specs=specs, tables=("predictions",), compress=True)
    predictions = folder / "predictions.csv.gz"
    size = predictions.stat().st_size
    included = size <= predictions_limit
    if not included:
        predictions.unlink()
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
    manifest = {
        "study": protocol.name,
        "protocol": str(protocol.source),
        "protocol_sha256": hashlib.sha256(Path(protocol.source).read_bytes()).hexdigest(),
        "maskstudy_commit": _commit(),
        "runs_in_grid": len(specs),
        "runs_published": int(result.runs["run_id"].nunique()) if "run_id" in result.runs else len(result.runs),
        "predictions": {"file": predictions.name, "gzip_bytes": size, "included": included,
                        "limit_bytes": predictions_limit},
        "files": files,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _commit() -> str | None:
    from study.env import git_commit

    return git_commit()


def _swap_in(building: Path, out: Path) -> None:
    """Rename the finished folder to ``out``; an earlier publication is moved aside first and
    deleted only once the new one is in place."""
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    try:
        os.rename(building, out)
    except BaseException:
        if old.exists():
            os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, outermost first."""
    missing = []
    while not folder.exists():
        missing.append(folder)
        folder = folder.parent
    for f in reversed(missing):
        f.mkdir(exist_ok=True)
    return list(reversed(missing))
