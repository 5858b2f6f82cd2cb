"""``analyze`` (every table as a DataFrame) and ``write_analysis`` (the files ``study analyze``
writes). The PDF report reuses :class:`AnalysisResult` without re-reading files."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from analysis import caveats
from analysis._frames import AnalysisWarning, check_runs, resolve_comparisons
from analysis.across import COLUMNS as ACROSS_COLUMNS
from analysis.across import across_cells, metric_of_tasks
from analysis.audit import pair_runs
from analysis.bayes import COLUMNS as BAYES_COLUMNS
from analysis.bayes import bayes_paired
from analysis.collapse import collapsed_runs
from analysis.comparisons import COLUMNS as COMPARISON_COLUMNS
from analysis.comparisons import compare
from analysis.disagreement import single_run_disagreement
from analysis.generation import PAIRED_COLUMNS, paired_run_tests
from analysis.multiboot import multibootstrap
from analysis.power import power_table
from analysis.rate import (
    INTERACTION_COLUMNS,
    RESPONSE_COLUMNS,
    rate_interaction,
    rate_response,
    sweeps,
)
from analysis.selection import BEST_COLUMNS, MANY_TO_ONE_COLUMNS, best, many_to_one
from analysis.summary import across_sentence, selection_sentences, summary_sentence
from analysis.tables import write_tables
from analysis.variance import variance_decomposition

FIGURES = ("forest", "across_forest", "slopes", "distributions", "power_curve", "disagreement")
CELL_COLUMNS = ["task", "model", "masker", "metric", "n_seeds", "mean", "sd", "min", "max"]


@dataclass(frozen=True)
class AnalysisResult:
    """Every table, caveat and verdict of one study's analysis: the CLI, ``summary.txt`` and
    the PDF report render this and recompute nothing. Frames follow the column vocabulary of
    analysis/README.md ("Result tables")."""

    comparisons: pd.DataFrame
    power: pd.DataFrame
    disagreement: pd.DataFrame
    variance: pd.DataFrame
    audit: pd.DataFrame
    multibootstrap: pd.DataFrame | None
    cells: pd.DataFrame  # per task x model x masker: mean, sd, min, max over seeds
    summary: str  # the one-paragraph verdict
    runs: pd.DataFrame  # the cleaned runs the tables were computed from
    pairs: list[tuple[str, str]]
    alpha: float
    margin: float | None
    collapsed: pd.DataFrame = field(default_factory=pd.DataFrame)  # collapsed runs (analysis.collapse), criteria as columns
    uninformative: list[str] = field(default_factory=list)  # comparisons of collapsed runs only
    caveats: list[str] = field(default_factory=list)  # what a reader must know beside the tables
    warnings: list[str] = field(default_factory=list)  # what the analysis did to the data
    pairing: str = ""  # the pairing audit's verdict
    multiboot_note: str = ""  # where the multibootstrap and the seed-level tests disagree, and why
    settings: dict = field(default_factory=dict)
    # random-effects summary over task x model cells, per comparison run in >= 2 cells
    across: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ACROSS_COLUMNS))
    # P(better) / P(within ±margin) / P(worse): per cell, then across cells (scope column)
    bayes: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=BAYES_COLUMNS))
    # generation tasks: each treatment run against the baseline run of its seed (sacrebleu's
    # paired bootstrap); empty for classification
    paired_runs: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIRED_COLUMNS))
    # several treatments per baseline: max-T / step-down / Holm, and Hsu's best set
    many_to_one: pd.DataFrame = field(default_factory=pd.DataFrame)
    best: pd.DataFrame = field(default_factory=pd.DataFrame)
    # a rate sweep: optimum per cell, the rate x model test, the fitted curves (figure only)
    rate_response: pd.DataFrame = field(default_factory=pd.DataFrame)
    rate_interaction: pd.DataFrame = field(default_factory=pd.DataFrame)
    rate_curves: pd.DataFrame = field(default_factory=pd.DataFrame)

    def tables(self) -> dict[str, pd.DataFrame]:
        """name -> frame of every result table, in reading order. A new table added here is
        written (md, csv, tex) by ``write_result`` with no further change."""
        out = {"comparisons": self.comparisons, "bayes": self.bayes}
        if len(self.across):
            out["across"] = self.across
        for name in ("many_to_one", "best", "rate_response", "rate_interaction"):
            if len(getattr(self, name)):
                out[name] = getattr(self, name)
        if self.multibootstrap is not None:
            out["multibootstrap"] = self.multibootstrap
        if len(self.paired_runs):
            out["paired_runs"] = self.paired_runs
        out |= {"power": self.power, "disagreement": self.disagreement,
                "variance": self.variance, "cells": self.cells, "audit": self.audit}
        if not self.pairs:  # nothing compared: only the per-cell spread is meaningful
            out = {"cells": self.cells, "variance": self.variance}
        return out

    def text(self) -> str:
        """The summary, caveats, warnings and pairing verdict: ``summary.txt`` and what
        ``study analyze`` prints."""
        lines = [self.summary]
        lines += [f"caveat: {c}" for c in self.caveats]
        lines += [f"warning: {w}" for w in self.warnings]
        if self.pairing:
            lines.append(f"pairing: {self.pairing}")
        return "\n".join(lines) + "\n"

    def figures(self) -> dict:
        """name -> matplotlib Figure for the standard figures (only the distributions when
        nothing is compared)."""
        from analysis import figures as F

        if not self.pairs:
            return {"distributions": F.distribution_plot(self.runs)}
        out = {"forest": F.forest_plot(self.comparisons, self.margin)}
        if len(self.across):
            out["across_forest"] = F.across_forest_plot(self.across, self.comparisons, self.margin)
        if len(self.rate_response):
            out["rate_response"] = F.rate_response_plot(self.runs, self.rate_response,
                                                        self.rate_curves)
        return out | {
            "slopes": F.slope_plot(self.runs, comparisons=self.pairs),
            "distributions": F.distribution_plot(self.runs),
            "power_curve": F.power_curve(self.comparisons),
            "disagreement": F.disagreement_heatmap(self.disagreement),
        }


def cell_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean, sd, min and max of the value over seeds per task x model x masker (CELL_COLUMNS)."""
    metric = runs["metric"] if "metric" in runs else pd.Series(None, index=runs.index)
    g = runs.assign(metric=metric).groupby(["task", "model", "masker"], sort=False)
    out = g["value"].agg(n_seeds="count", mean="mean", sd="std", min="min", max="max")
    out["metric"] = g["metric"].first()
    return out.reset_index()[CELL_COLUMNS]


def analyze(
    runs: pd.DataFrame,
    predictions: pd.DataFrame | None = None,
    *,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] | None = None,
    alpha: float = 0.05,
    margin: float | None = None,
    correction: str = "holm",
    n_boot: int = 10_000,
    seed: int = 0,
    effects: Sequence[float] = (0.005, 0.01, 0.02),
    win_threshold: float = 0.005,
    metric_by_task: dict | None = None,
    on_mismatch: str = "raise",
    n_jobs: int = 1,
    model_sizes: dict | None = None,
) -> AnalysisResult:
    """All tables for one study. ``runs``: the store's runs frame (one row per run);
    ``predictions``: its per-example predictions (optional; enables the multibootstrap and
    the collapsed-run check). ``margin``, ``effects`` and ``win_threshold`` are in metric
    units (0.005 = 0.5 points). A study with one masker (a seed-variance or pilot study)
    has nothing to compare: its result holds the per-cell table and the variance only.

    ``model_sizes`` (model -> parameter count, models of one family) adds the test that a rate
    sweep's response moves with log model size.

    Every ``AnalysisWarning`` raised on the way is still emitted and also kept in
    ``result.warnings``, so the report and ``summary.txt`` carry it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _analyze(runs, predictions, baseline, comparisons, alpha, margin, correction,
                          n_boot, seed, effects, win_threshold, metric_by_task, on_mismatch,
                          n_jobs, model_sizes)
    said: list[str] = []
    for w in caught:
        if issubclass(w.category, AnalysisWarning):
            if str(w.message) in said:
                continue
            said.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return replace(result, warnings=said)


def _analyze(runs, predictions, baseline, comparisons, alpha, margin, correction, n_boot, seed,
             effects, win_threshold, metric_by_task, on_mismatch, n_jobs, model_sizes
             ) -> AnalysisResult:
    unfinished = caveats.unfinished_maskers(runs)  # before check_runs drops unfinished runs
    clean = check_runs(runs)
    has_preds = predictions is not None and len(predictions) > 0
    flags = collapsed_runs(predictions if has_preds else None)
    collapsed = flags[flags["collapsed"]].drop(columns=[c for c in ("run_id",) if c in flags]).reset_index(drop=True)
    if len(collapsed):  # only runs the analysis uses
        keys = clean[["task", "model", "masker", "seed"]]
        collapsed = collapsed.merge(keys, on=list(keys.columns)).reset_index(drop=True)
    settings = {"correction": correction, "n_boot": n_boot, "seed": seed,
                "effects": tuple(effects), "win_threshold": win_threshold}
    empty = pd.DataFrame(columns=COMPARISON_COLUMNS)
    if comparisons is not None:  # a comparison of a masker without finished runs is named, not made
        comparisons = [c for c in comparisons if not set(map(str, c)) & set(unfinished)]
    not_run = list(unfinished.values())
    base = baseline if baseline is not None or comparisons is not None else "none"
    if (clean["masker"].nunique() < 2 or str(base) in unfinished
            or (comparisons is not None and not comparisons)):
        maskers = list(map(str, pd.unique(clean["masker"])))
        collapse_notes, _ = caveats.collapse(empty, clean, collapsed)
        if not_run:
            have = (f"only {', '.join(maskers)} {'has' if len(maskers) == 1 else 'have'} finished "
                    "runs" if maskers else "no masker has finished runs")
            summary = (f"Nothing compared: {'; '.join(not_run)}; {have}. The table of cells gives "
                       "each cell's mean and seed spread.")
        else:
            summary = (f"Nothing to compare: the study has one masker ({', '.join(maskers)}); the "
                       "table of cells gives each cell's mean and seed spread.")
        return AnalysisResult(
            comparisons=empty, power=pd.DataFrame(), disagreement=pd.DataFrame(),
            variance=variance_decomposition(clean), audit=pd.DataFrame(), multibootstrap=None,
            cells=cell_table(clean), runs=clean, pairs=[], alpha=alpha, margin=margin,
            summary=summary, collapsed=collapsed, caveats=collapse_notes, settings=settings)
    pairs = resolve_comparisons(clean, baseline, comparisons)
    table = compare(clean, alpha=alpha, margin=margin, correction=correction, n_boot=n_boot,
                    seed=seed, comparisons=pairs, on_mismatch=on_mismatch)
    # compare has already warned about dropped runs and seeds; say it once, not four times.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        _, audit, _ = pair_runs(clean, pairs, on_mismatch=on_mismatch)
        mb, paired_runs = None, pd.DataFrame(columns=PAIRED_COLUMNS)
        if has_preds:
            mb = multibootstrap(predictions, clean, comparisons=pairs,
                                metric_by_task=metric_by_task, alpha=alpha, n_boot=n_boot,
                                seed=seed, n_jobs=n_jobs, on_mismatch=on_mismatch)
            if "stats" in predictions.columns:  # generation tasks: sacrebleu's defaults
                paired_runs = paired_run_tests(predictions, clean, comparisons=pairs,
                                               metric_by_task=metric_by_task,
                                               on_mismatch=on_mismatch)
        disagreement = single_run_disagreement(clean, comparisons=pairs,
                                               win_threshold=win_threshold,
                                               on_mismatch=on_mismatch)
        across, bayes = across_and_bayes(clean, pairs, table, alpha, margin, seed, on_mismatch)
        sizes = clean["model"].map(model_sizes) if model_sizes else None
        sel = selection_tables(clean if sizes is None else clean.assign(n_params=sizes),
                               pairs, alpha, seed)
    collapse_notes, dead = caveats.collapse(table, clean, collapsed)
    mb_note = caveats.multiboot_disagreement(table, mb, alpha)
    return AnalysisResult(
        comparisons=table,
        power=power_table(table, effects=effects, alpha=alpha),
        disagreement=disagreement,
        variance=variance_decomposition(clean),
        audit=audit,
        multibootstrap=mb,
        cells=cell_table(clean),
        summary=("; ".join(not_run) + ". " if not_run else "")
        + summary_sentence(table, alpha) + across_sentence(across, bayes, table)
        + selection_sentences(sel["many_to_one"], sel["best"], sel["rate_response"],
                              sel["rate_interaction"], alpha),
        runs=clean,
        pairs=pairs,
        alpha=alpha,
        margin=margin,
        collapsed=collapsed,
        uninformative=dead,
        caveats=caveats.small_n(table) + collapse_notes + mb_note
        + caveats.maxt_floor(sel["many_to_one"], alpha),
        pairing=caveats.pairing_verdict(audit, clean),
        multiboot_note=" ".join(mb_note),
        settings=settings,
        across=across,
        bayes=bayes,
        paired_runs=paired_runs,
        **sel,
    )


def selection_tables(runs, pairs, alpha, seed) -> dict:
    """The tables for several treatments against one baseline (``many_to_one``, ``best``:
    for each baseline compared with >= 2 treatments) and for rate sweeps (``rate_response``,
    ``rate_interaction``, ``rate_curves``: when the baseline has rate 0 and >= 2 maskers of
    one sweep differ only in rate)."""
    out = {"many_to_one": pd.DataFrame(columns=MANY_TO_ONE_COLUMNS),
           "best": pd.DataFrame(columns=BEST_COLUMNS),
           "rate_response": pd.DataFrame(columns=RESPONSE_COLUMNS),
           "rate_interaction": pd.DataFrame(columns=INTERACTION_COLUMNS),
           "rate_curves": pd.DataFrame()}
    by_base: dict[str, list[str]] = {}
    for treat, base in pairs:
        by_base.setdefault(base, []).append(treat)
    many, best_sets = [], []
    for base, treats in by_base.items():
        if len(treats) < 2:
            continue
        m = many_to_one(runs, base, alpha, treatments=treats, seed=seed)
        many.append(m)
        best_sets.append(best(runs, base, alpha, treatments=treats, seed=seed, many=m))
    if many:
        out["many_to_one"] = pd.concat(many, ignore_index=True)
        out["best"] = pd.concat(best_sets, ignore_index=True)
    for base in by_base:
        if "rate" not in runs.columns:
            break
        rate = pd.to_numeric(runs.loc[runs["masker"] == base, "rate"], errors="coerce")
        if not (rate.fillna(0.0) == 0).all() or not sweeps(runs, base):
            continue
        table, curves = rate_response(runs, base, alpha, seed=seed, curves=True)
        out["rate_response"], out["rate_curves"] = table, curves
        out["rate_interaction"] = rate_interaction(runs, base)
        break  # one rate-0 baseline per study
    return out


def across_and_bayes(runs, pairs, table, alpha, margin, seed, on_mismatch):
    """The across-cell table (REML tau2, modified HKSJ interval at level 1 - alpha) for
    comparisons made in at least 2 cells of one metric, and the Bayesian table with rope =
    ``margin``.

    Cells are pooled only within a metric (one across row per comparison and metric).
    Without a margin the rope is 0: P(better) + P(worse) = 1 and ``p_rope`` is 0, which
    says "no margin declared", not "never equivalent" (the summary words it so). Across-scope
    Bayesian rows are kept only where the across-cell table has a row: one cell is not a
    population of cells."""
    metric_of = {t: m or "" for t, m in metric_of_tasks(runs).items()}  # "": no metric column
    cells = table[["treatment", "baseline", "task", "model"]].drop_duplicates()
    n_cells = cells.assign(metric=cells["task"].map(metric_of)).groupby(
        ["treatment", "baseline", "metric"], sort=False).size()
    groups = {key for key, n in n_cells.items() if n >= 2}
    multi = [pair for pair in pairs if any(key[:2] == pair for key in groups)]

    def pooled(df):
        keys = zip(df["treatment"], df["baseline"], df["metric"].fillna(""), strict=True)
        return df[[key in groups for key in keys]]

    across = (across_cells(runs, comparisons=multi, method="reml", level=1 - alpha,
                           on_mismatch=on_mismatch)
              if multi else pd.DataFrame(columns=ACROSS_COLUMNS))
    across = pooled(across).reset_index(drop=True)
    bayes = bayes_paired(runs, comparisons=pairs, rope=margin, seed=seed, on_mismatch=on_mismatch)
    keep = bayes["scope"].eq("cell")
    keep[~keep] = keep[~keep].index.isin(pooled(bayes[~keep]).index)
    return across, bayes[keep].reset_index(drop=True)


def write_result(result: AnalysisResult, out_dir, figures: bool = True) -> dict[str, Path]:
    """Write an :class:`AnalysisResult`'s tables (md, csv, tex), ``summary.txt`` (the
    summary with every caveat and warning) and figures into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = write_tables(result.tables(), out)
    summary = out / "summary.txt"
    summary.write_text(result.text())
    files[summary.name] = summary
    if figures:
        for name, fig in result.figures().items():
            path = out / f"{name}.png"
            fig.savefig(path, dpi=110)
            files[path.name] = path
    return files


def write_analysis(
    runs: pd.DataFrame,
    predictions: pd.DataFrame | None,
    *,
    out_dir,
    baseline: str | None = None,
    comparisons: Sequence[tuple[str, str]] | None = None,
    alpha: float = 0.05,
    margin: float | None = None,
    n_boot: int = 10_000,
    seed: int = 0,
    **kwargs,
) -> dict[str, Path]:
    """What ``study analyze`` writes: every table of ``AnalysisResult.tables()`` as
    ``<name>.md/.csv/.tex`` (comparisons, bayes, across, many_to_one and best with several
    treatments per baseline, rate_response and rate_interaction with a rate sweep,
    multibootstrap with predictions, power, disagreement, variance, cells, audit), ``summary.txt`` and the PNG figures ``forest``,
    ``slopes``, ``distributions``, ``power_curve``, ``disagreement``. Returns file name -> path.
    Extra keyword arguments go to :func:`analyze`."""
    result = analyze(runs, predictions, baseline=baseline, comparisons=comparisons, alpha=alpha,
                     margin=margin, n_boot=n_boot, seed=seed, **kwargs)
    return write_result(result, out_dir)
