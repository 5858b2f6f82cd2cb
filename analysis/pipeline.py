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
from analysis.across import across_cells
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
from analysis.summary import across_sentence, summary_sentence
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

    def tables(self) -> dict[str, pd.DataFrame]:
        """name -> frame of every result table, in reading order. A new table added here is
        written (md, csv, tex) by ``write_result`` with no further change."""
        out = {"comparisons": self.comparisons, "bayes": self.bayes}
        if len(self.across):
            out["across"] = self.across
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
) -> AnalysisResult:
    """All tables for one study. ``runs``: the store's runs frame (one row per run);
    ``predictions``: its per-example predictions (optional; enables the multibootstrap and
    the collapsed-run check). ``margin``, ``effects`` and ``win_threshold`` are in metric
    units (0.005 = 0.5 points). A study with one masker (a seed-variance or pilot study)
    has nothing to compare: its result holds the per-cell table and the variance only.

    Every ``AnalysisWarning`` raised on the way is still emitted and also kept in
    ``result.warnings``, so the report and ``summary.txt`` carry it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _analyze(runs, predictions, baseline, comparisons, alpha, margin, correction,
                          n_boot, seed, effects, win_threshold, metric_by_task, on_mismatch,
                          n_jobs)
    said: list[str] = []
    for w in caught:
        if issubclass(w.category, AnalysisWarning):
            if str(w.message) in said:
                continue
            said.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return replace(result, warnings=said)


def _analyze(runs, predictions, baseline, comparisons, alpha, margin, correction, n_boot, seed,
             effects, win_threshold, metric_by_task, on_mismatch, n_jobs) -> AnalysisResult:
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
    if clean["masker"].nunique() < 2:
        maskers = ", ".join(map(str, pd.unique(clean["masker"])))
        collapse_notes, _ = caveats.collapse(empty, clean, collapsed)
        return AnalysisResult(
            comparisons=empty, power=pd.DataFrame(), disagreement=pd.DataFrame(),
            variance=variance_decomposition(clean), audit=pd.DataFrame(), multibootstrap=None,
            cells=cell_table(clean), runs=clean, pairs=[], alpha=alpha, margin=margin,
            summary=f"Nothing to compare: the study has one masker ({maskers}); the table of "
                    "cells gives each cell's mean and seed spread.",
            collapsed=collapsed, caveats=collapse_notes, settings=settings)
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
    collapse_notes, dead = caveats.collapse(table, clean, collapsed)
    mb_note = caveats.multiboot_disagreement(table, mb, alpha)
    return AnalysisResult(
        comparisons=table,
        power=power_table(table, effects=effects, alpha=alpha),
        disagreement=disagreement,
        variance=variance_decomposition(clean),
        audit=audit.rename(columns={"masker": "treatment"}),
        multibootstrap=mb,
        cells=cell_table(clean),
        summary=summary_sentence(table, alpha) + across_sentence(across, bayes),
        runs=clean,
        pairs=pairs,
        alpha=alpha,
        margin=margin,
        collapsed=collapsed,
        uninformative=dead,
        caveats=caveats.small_n(table) + collapse_notes + mb_note,
        pairing=caveats.pairing_verdict(audit, clean),
        multiboot_note=" ".join(mb_note),
        settings=settings,
        across=across,
        bayes=bayes,
        paired_runs=paired_runs,
    )


def across_and_bayes(runs, pairs, table, alpha, margin, seed, on_mismatch):
    """The across-cell table (REML tau2, HKSJ interval at level 1 - alpha) for comparisons
    made in at least 2 cells, and the Bayesian table with rope = ``margin``.

    Without a margin the rope is 0: P(better) + P(worse) = 1 and ``p_rope`` is 0, which
    says "no margin declared", not "never equivalent" (the summary words it so). Across-scope
    Bayesian rows are kept only where the across-cell table has a row: one cell is not a
    population of cells."""
    cells = table.groupby(["treatment", "baseline"], sort=False)[["task", "model"]].apply(
        lambda g: len(g.drop_duplicates()))
    multi = [pair for pair in pairs if cells.get(pair, 0) >= 2]
    across = (across_cells(runs, comparisons=multi, method="reml", hksj=True, level=1 - alpha,
                           on_mismatch=on_mismatch)
              if multi else pd.DataFrame(columns=ACROSS_COLUMNS))
    bayes = bayes_paired(runs, comparisons=pairs, rope=margin, seed=seed, on_mismatch=on_mismatch)
    keep = (bayes["scope"] == "cell") | pd.Series(
        [(t, b) in multi for t, b in zip(bayes["treatment"], bayes["baseline"], strict=True)],
        index=bayes.index)
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
    ``<name>.md/.csv/.tex`` (comparisons, multibootstrap with predictions, power,
    disagreement, variance, cells, audit), ``summary.txt`` and the PNG figures ``forest``,
    ``slopes``, ``distributions``, ``power_curve``, ``disagreement``. Returns file name -> path.
    Extra keyword arguments go to :func:`analyze`."""
    result = analyze(runs, predictions, baseline=baseline, comparisons=comparisons, alpha=alpha,
                     margin=margin, n_boot=n_boot, seed=seed, **kwargs)
    return write_result(result, out_dir)
