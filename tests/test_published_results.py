"""Every study published under results/ agrees with its own runs table.

For each row of a published ``comparisons.csv``, the seed-paired differences are recomputed from
the published ``runs.csv`` with plain pandas/numpy/scipy (nothing from ``analysis``): the
number of pairs, the mean paired difference (``estimate``), the paired t-test p-value
(``p_ttest``, scipy's ``ttest_rel``) and, for Holm-corrected tables, ``p_adj``. A reader can
run the same check on the files alone.

With no published study the check skips, saying so. That it can fail is shown on a real tiny
study published into a temporary folder, and on altered copies of it.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from protocoltools import ROOT, TINY, study_cli, tiny_protocol_dict, write_protocol
from scipy import stats

from study.cli import main

RESULTS = ROOT / "results"
# Relative tolerance for recomputed numbers: the CSVs keep full precision, and a sum taken in
# another order differs in the last bits only.
RTOL, ATOL = 1e-9, 1e-12


def published_studies(root: Path = RESULTS) -> list[Path]:
    """The published study folders under ``root`` (hidden folders are publications in progress)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _no_spread(d: np.ndarray) -> bool:
    """Differences without spread (all equal, to 1e-9 of the largest): the documented
    convention is no t-test there (README "The statistics": p_ttest NaN), not p = 0 or 1."""
    scale = max(float(np.max(np.abs(d))), 1e-300)
    return float(np.ptp(d)) <= 1e-9 * scale


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values; a missing p counts as 1 in the family and gets NaN."""
    filled = np.where(np.isnan(p), 1.0, p)
    m = len(filled)
    order = np.argsort(filled, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * filled[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return np.where(np.isnan(p), np.nan, adjusted)


def recompute(runs: pd.DataFrame, task, model, treatment, baseline) -> dict:
    """n_pairs, estimate and p_ttest of one comparison, pairing done runs by seed."""
    done = runs[(runs["status"] == "done") & (runs["task"] == task) & (runs["model"] == model)]
    t = done[done["masker"] == treatment].set_index("seed")["value"]
    b = done[done["masker"] == baseline].set_index("seed")["value"]
    seeds = sorted(set(t.index) & set(b.index))
    d = t.loc[seeds].to_numpy(float) - b.loc[seeds].to_numpy(float)
    n = len(seeds)
    estimate = float(d.mean()) if n else np.nan
    if n < 2 or _no_spread(d):
        p = np.nan
    else:
        p = float(stats.ttest_rel(t.loc[seeds].to_numpy(float), b.loc[seeds].to_numpy(float)).pvalue)
    return {"n_pairs": n, "estimate": estimate, "p_ttest": p}


def _same(a, b) -> bool:
    a, b = float(a), float(b)
    return (np.isnan(a) and np.isnan(b)) or bool(np.isclose(a, b, rtol=RTOL, atol=ATOL))


def check_study(folder: Path) -> tuple[int, list[str]]:
    """(comparisons checked, what disagrees) for one published study folder."""
    missing = [name for name in ("runs.csv", "comparisons.csv") if not (folder / name).is_file()]
    if missing:
        return 0, [f"{folder}: missing {', '.join(missing)} (publish it with `study publish PROTOCOL`)"]
    runs = pd.read_csv(folder / "runs.csv")
    table = pd.read_csv(folder / "comparisons.csv")
    problems = []
    recomputed = []
    for row in table.itertuples(index=False):
        mine = recompute(runs, row.task, row.model, row.treatment, row.baseline)
        recomputed.append(mine["p_ttest"])
        where = f"{folder.name}: {row.task}/{row.model} {row.treatment} vs {row.baseline}"
        for column, value in mine.items():
            if not _same(value, getattr(row, column)):
                problems.append(f"{where}: {column} is {getattr(row, column)!r} in comparisons.csv, "
                                f"{value!r} from runs.csv")
    if len(table) and (table["correction"] == "holm").all():
        for row, adjusted in zip(table.itertuples(index=False), holm(np.array(recomputed)), strict=True):
            if not _same(adjusted, row.p_adj):
                problems.append(f"{folder.name}: {row.task}/{row.model} {row.treatment} vs {row.baseline}: "
                                f"p_adj is {row.p_adj!r} in comparisons.csv, {adjusted!r} by Holm from runs.csv")
    return len(table), problems


STUDIES = published_studies()
NO_STUDY = pytest.param(None, marks=pytest.mark.skip(
    reason="results/ holds no published study yet: `study publish PROTOCOL` writes results/<name>/ (README \"Results\")"))


@pytest.mark.parametrize("folder", STUDIES or [NO_STUDY], ids=lambda f: f.name if f else "none")
def test_published_comparisons_match_their_runs_table(folder):
    checked, problems = check_study(folder)
    assert problems == []
    assert checked > 0, f"{folder}: comparisons.csv has no rows"


# --------------------------------------------------------------------------------------------
# The check and `study publish` on a real tiny study: 2 maskers x 3 seeds, a 1-layer MiniLM read
# by mean pooling, so the runs learn a little and their paired differences have a spread (the
# default tiny protocol's runs all predict one class: every difference would be zero).

TINY_LEARNING = dict(
    models=[{**TINY["models"][0], "pooling": "mean"}],
    maskers=[TINY["maskers"][0], {"name": "random-0.5", "kind": "random-token", "rate": 0.5}],
    training={**TINY["training"], "epochs": 2, "learning_rate": 1e-3},
)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(folder the commands run in, protocol, results/tiny) after `study run` and `study publish`."""
    tmp = tmp_path_factory.mktemp("publish")
    protocol = write_protocol(tmp, tiny_protocol_dict(store="runs/tiny.sqlite", **TINY_LEARNING))
    out = study_cli("run", protocol, cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    out = study_cli("publish", protocol, cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    return tmp, protocol, tmp / "results" / "tiny"


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every file under ``folder`` with its size and modification time, and every folder: 'nothing
    written'. (A folder's own time is not compared: reading a store creates and removes its WAL
    files, and checking that --out is writable creates and removes a probe file.)"""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            out[str((Path(root) / name).relative_to(folder))] = "folder"
        for name in files:
            st = (Path(root) / name).lstat()
            out[str((Path(root) / name).relative_to(folder))] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def cli_in_process(*args, cwd: Path) -> tuple[int, str]:
    """``study ARGS`` through ``study.cli.main`` in this process, in ``cwd`` (faster than a fresh
    interpreter; tests/test_cli_errors.py runs publish in a subprocess too): the exit code and
    what it printed."""
    err, out = io.StringIO(), io.StringIO()
    here = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(list(map(str, args)))
    finally:
        os.chdir(here)
    return code, out.getvalue() + err.getvalue()


def test_publish_writes_the_tables_report_and_runs_table(published):
    tmp, protocol, folder = published
    code, text = cli_in_process("analyze", protocol, "--out", tmp / "analyzed", cwd=tmp)
    assert code == 0, text[-2000:]
    tables = {p.name for p in (tmp / "analyzed").iterdir() if p.suffix in (".md", ".csv")}
    assert {"comparisons.csv", "comparisons.md", "cells.csv", "bayes.csv"} <= tables
    assert {p.name for p in folder.iterdir()} == tables | {
        "summary.txt", "report.pdf", "runs.csv", "predictions.csv.gz", "published.json"}
    for name in tables | {"summary.txt"}:  # the same analysis as `study analyze`
        assert (folder / name).read_bytes() == (tmp / "analyzed" / name).read_bytes(), name
    assert (folder / "report.pdf").read_bytes().startswith(b"%PDF")
    assert [p.name for p in folder.parent.iterdir()] == ["tiny"]  # no building or replaced folder left

    code, text = cli_in_process("export", protocol, "--out", tmp / "export", cwd=tmp)
    assert code == 0, text[-2000:]
    assert (folder / "runs.csv").read_bytes() == (tmp / "export" / "runs.csv").read_bytes()
    with gzip.open(folder / "predictions.csv.gz", "rb") as f:
        assert f.read() == (tmp / "export" / "predictions.csv").read_bytes()

    manifest = json.loads((folder / "published.json").read_text())
    assert manifest["study"] == "tiny" and manifest["runs_in_grid"] == manifest["runs_published"] == 6
    assert manifest["predictions"]["included"] and manifest["predictions"]["gzip_bytes"] < 100_000
    assert manifest["files"]["runs.csv"] == (folder / "runs.csv").stat().st_size


def test_the_check_passes_on_a_published_study(published):
    _, _, folder = published
    checked, problems = check_study(folder)
    assert (checked, problems) == (1, [])
    row = pd.read_csv(folder / "comparisons.csv").iloc[0]
    assert row["n_pairs"] == 3 and np.isfinite(row["p_ttest"]) and row["estimate"] != 0  # not vacuous


def _edit_csv(path: Path, change) -> None:
    frame = pd.read_csv(path)
    change(frame)
    frame.to_csv(path, index=False)


def _treatment(frame, seed):
    return (frame["masker"] == "random-0.5") & (frame["seed"] == seed)


def nudge_one_score(folder):  # one run's score up by a tenth of a point
    def change(runs):
        runs.loc[_treatment(runs, 1), "value"] += 0.001
    _edit_csv(folder / "runs.csv", change)


def swap_two_seeds(folder):  # two treatment runs trade seeds: the same mean, other pairs
    def change(runs):
        treated = runs["masker"] == "random-0.5"
        runs.loc[treated, "seed"] = runs.loc[treated, "seed"].map({0: 1, 1: 0, 2: 2})
    _edit_csv(folder / "runs.csv", change)


def drop_one_run(folder):
    def change(runs):
        runs.drop(runs.index[_treatment(runs, 2)], inplace=True)
    _edit_csv(folder / "runs.csv", change)


def round_the_p_value(folder):  # the published p-value rounded as a careless hand would
    def change(table):
        table["p_ttest"] = table["p_ttest"].round(2)
    _edit_csv(folder / "comparisons.csv", change)


# alteration -> the column the check must name
ALTERATIONS = {nudge_one_score: "estimate", swap_two_seeds: "p_ttest", drop_one_run: "n_pairs",
               round_the_p_value: "p_ttest"}


@pytest.mark.parametrize("alteration", list(ALTERATIONS), ids=lambda f: f.__name__)
def test_the_check_fails_on_an_altered_copy(published, tmp_path, alteration):
    _, _, folder = published
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy)
    alteration(copy)
    checked, problems = check_study(copy)
    assert problems, f"{alteration.__name__} went unnoticed"
    column = ALTERATIONS[alteration]
    assert any(f": {column} is " in p and "random-0.5 vs none" in p for p in problems), problems


def test_a_folder_without_the_tables_fails_the_check(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "runs.csv").write_text("run_id\n")
    assert published_studies(tmp_path) == [tmp_path / "half"]
    assert check_study(tmp_path / "half")[1] == [f"{tmp_path / 'half'}: missing comparisons.csv "
                                                 "(publish it with `study publish PROTOCOL`)"]


# --------------------------------------------------------------------------------------------
# `study publish` refuses what it cannot publish whole: exit 2, the problem and the fix, nothing
# written (the earlier publication stays as it was).

def _refused(result: tuple[int, str], *expected) -> None:
    code, text = result
    assert code == 2, text
    assert "Traceback" not in text and text.startswith("error: ") and "Fix:" in text, text
    for e in expected:
        assert e in text, text


def test_publish_refuses_an_unfinished_study(published):
    tmp, _, folder = published
    more_seeds = write_protocol(tmp, tiny_protocol_dict(store="runs/tiny.sqlite", **TINY_LEARNING,
                                                        seeds=[0, 1, 2, 3]), "more-seeds.yaml")
    before = snapshot(tmp)
    _refused(cli_in_process("publish", more_seeds, cwd=tmp), "more-seeds.yaml", "not finished: 2 of 8 runs not done (2 pending)",
             "study run")
    assert snapshot(tmp) == before


def test_publish_refuses_failed_runs_and_names_retry(published):
    tmp, protocol, _ = published
    other = tmp / "failed"
    other.mkdir(exist_ok=True)
    shutil.copy(tmp / "runs" / "tiny.sqlite", other / "tiny.sqlite")
    with contextlib.closing(sqlite3.connect(other / "tiny.sqlite")) as con:
        con.execute("UPDATE runs SET status='failed' WHERE run_id=(SELECT MIN(run_id) FROM runs)")
        con.commit()
    path = write_protocol(other, tiny_protocol_dict(store="tiny.sqlite", **TINY_LEARNING))
    before = snapshot(other)
    _refused(cli_in_process("publish", path, cwd=other), "1 of 6 runs not done (1 failed)", "--retry-failed")
    assert snapshot(other) == before


def test_publish_accepts_runs_a_sequential_design_stopped(published):
    """Runs a sequential design will never start do not hold publication back. A copy of the
    store whose treatment runs beat their baseline by 20 points (+ a spread) on every seed, with
    a fourth seed planned after a first look at three: the comparison decides at the first look."""
    tmp, _, _ = published
    folder = tmp / "sequential"
    folder.mkdir()
    shutil.copy(tmp / "runs" / "tiny.sqlite", folder / "tiny.sqlite")
    with contextlib.closing(sqlite3.connect(folder / "tiny.sqlite")) as con:
        con.execute("UPDATE runs SET value = 0.2 + 0.001 * seed * seed + (SELECT b.value FROM runs b "
                    "WHERE b.masker = 'none' AND b.seed = runs.seed) WHERE masker != 'none'")
        con.commit()
    path = write_protocol(folder, tiny_protocol_dict(store="tiny.sqlite", **TINY_LEARNING, seeds=[0, 1, 2, 3],
                                                     sequential={"looks": [3, 4]}))
    code, text = cli_in_process("status", path, cwd=folder)
    assert code == 0 and "2 stopped early by the sequential design" in text, text
    code, text = cli_in_process("publish", path, cwd=folder)
    assert code == 0, text[-2000:]
    manifest = json.loads((folder / "results" / "tiny" / "published.json").read_text())
    assert (manifest["runs_in_grid"], manifest["runs_published"]) == (8, 6)
    assert check_study(folder / "results" / "tiny") == (1, [])


def test_publish_refuses_a_missing_store(tmp_path):
    path = write_protocol(tmp_path, tiny_protocol_dict(store="runs/none.sqlite"))
    before = snapshot(tmp_path)
    _refused(cli_in_process("publish", path, cwd=tmp_path), "no results store", "study run")
    assert snapshot(tmp_path) == before


def test_publish_never_replaces_a_folder_it_did_not_write(published):
    tmp, protocol, _ = published
    mine = tmp / "notes"
    mine.mkdir(exist_ok=True)
    (mine / "draft.txt").write_text("someone's work")
    before = snapshot(tmp)
    _refused(cli_in_process("publish", protocol, "--out", mine, cwd=tmp), "not a published study", "new folder")
    assert snapshot(tmp) == before


def test_publishing_again_replaces_the_earlier_publication(published):
    tmp, protocol, folder = published
    tables = {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".csv", ".md", ".gz", ".json")}
    (folder / "stale.md").write_text("left from an earlier publication")
    code, text = cli_in_process("publish", protocol, cwd=tmp)
    assert code == 0, text[-2000:]
    assert not (folder / "stale.md").exists()
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.suffix in (".csv", ".md", ".gz", ".json")} == tables
    assert [p.name for p in folder.parent.iterdir()] == ["tiny"]


def test_a_masker_renamed_in_the_protocol_is_published_under_its_new_name(published):
    """runs.csv carries the protocol's labels, as the analysis does, so the check still pairs them."""
    tmp, _, _ = published
    renamed = {**TINY_LEARNING, "maskers": [TINY_LEARNING["maskers"][0], {**TINY_LEARNING["maskers"][1], "name": "r50"}]}
    path = write_protocol(tmp, tiny_protocol_dict(store="runs/tiny.sqlite", **renamed), "renamed.yaml")
    code, text = cli_in_process("publish", path, "--out", tmp / "renamed", cwd=tmp)
    assert code == 0, text[-2000:]
    runs = pd.read_csv(tmp / "renamed" / "runs.csv")
    assert sorted(runs["masker"].unique()) == ["none", "r50"]
    assert pd.read_csv(tmp / "renamed" / "comparisons.csv")["treatment"].tolist() == ["r50"]
    assert check_study(tmp / "renamed") == (1, [])


def test_predictions_over_the_limit_are_left_out_and_said(published, monkeypatch):
    from study.cli import _analysis_result
    from study.protocol import load_protocol
    from study.publish import publish
    from study.spec import expand

    tmp, protocol, _ = published
    monkeypatch.chdir(tmp)
    p = load_protocol(protocol)
    manifest = publish(p, expand(p), tmp / "small", _analysis_result(p), predictions_limit=100)
    assert not (tmp / "small" / "predictions.csv.gz").exists()
    assert manifest["predictions"]["included"] is False and manifest["predictions"]["gzip_bytes"] > 100
    assert json.loads((tmp / "small" / "published.json").read_text()) == manifest
    assert check_study(tmp / "small") == (1, [])
