"""``analyze`` (every table as a DataFrame) and ``write_analysis`` (the files ``study analyze``
writes). The PDF report reuses :class:`AnalysisResult` without re-reading files."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis._frames import AnalysisWarning, check_runs, resolve_comparisons
from analysis.audit import pair_runs
from analysis.comparisons import compare
from analysis.disagreement import single_run_disagreement
from analysis.multiboot import multibootstrap
from analysis.power import power_table
from analysis.summary import summary_sentence
from analysis.tables import COMPARISON_MD_COLUMNS, write_table
from analysis.variance import variance_decomposition

FIGURES = ("forest", "slopes", "distributions", "power_curve", "disagreement")


@dataclass(frozen=True)
class AnalysisResult:
    """Every table of one study's analysis. Frames follow the column lists of their modules."""

    comparisons: pd.DataFrame
    power: pd.DataFrame
    disagreement: pd.DataFrame
    variance: pd.DataFrame
    audit: pd.DataFrame
    multibootstrap: pd.DataFrame | None
    summary: str
    runs: pd.DataFrame  # the cleaned runs the tables were computed from
    pairs: list[tuple[str, str]]
    alpha: float
    margin: float | None
    settings: dict = field(default_factory=dict)

    def figures(self) -> dict:
        """name -> matplotlib Figure for the five standard figures."""
        from analysis import figures as F

        return {
            "forest": F.forest_plot(self.comparisons, self.margin),
            "slopes": F.slope_plot(self.runs, comparisons=self.pairs),
            "distributions": F.distribution_plot(self.runs),
            "power_curve": F.power_curve(self.comparisons),
            "disagreement": F.disagreement_heatmap(self.disagreement),
        }


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
    ``predictions``: its per-example predictions (optional; enables the multibootstrap).
    ``margin``, ``effects`` and ``win_threshold`` are in metric units (0.005 = 0.5 points)."""
    clean = check_runs(runs)
    pairs = resolve_comparisons(clean, baseline, comparisons)
    table = compare(clean, alpha=alpha, margin=margin, correction=correction, n_boot=n_boot,
                    seed=seed, comparisons=pairs, on_mismatch=on_mismatch)
    # compare has already warned about dropped runs and seeds; say it once, not four times.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnalysisWarning)
        _, audit, _ = pair_runs(clean, pairs, on_mismatch=on_mismatch)
        mb = None
        if predictions is not None and len(predictions):
            mb = multibootstrap(predictions, clean, comparisons=pairs,
                                metric_by_task=metric_by_task, alpha=alpha, n_boot=n_boot,
                                seed=seed, n_jobs=n_jobs, on_mismatch=on_mismatch)
        disagreement = single_run_disagreement(clean, comparisons=pairs,
                                               win_threshold=win_threshold,
                                               on_mismatch=on_mismatch)
    return AnalysisResult(
        comparisons=table,
        power=power_table(table, effects=effects, alpha=alpha),
        disagreement=disagreement,
        variance=variance_decomposition(clean),
        audit=audit,
        multibootstrap=mb,
        summary=summary_sentence(table, alpha),
        runs=clean,
        pairs=pairs,
        alpha=alpha,
        margin=margin,
        settings={"correction": correction, "n_boot": n_boot, "seed": seed,
                  "effects": tuple(effects), "win_threshold": win_threshold},
    )


def write_result(result: AnalysisResult, out_dir, figures: bool = True) -> dict[str, Path]:
    """Write an :class:`AnalysisResult`'s tables, summary and figures into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    files |= write_table(result.comparisons, out / "comparisons", ("md", "csv", "tex"),
                         md_columns=COMPARISON_MD_COLUMNS)
    files |= write_table(result.power, out / "power")
    files |= write_table(result.disagreement, out / "disagreement")
    files |= write_table(result.variance, out / "variance")
    files |= write_table(result.audit, out / "audit", ("csv",))
    if result.multibootstrap is not None:
        files |= write_table(result.multibootstrap, out / "multibootstrap")
    summary = out / "summary.txt"
    summary.write_text(result.summary + "\n")
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
    """What ``study analyze`` writes: ``comparisons.md/.csv/.tex``, ``power.md/.csv``,
    ``disagreement.md/.csv``, ``variance.md/.csv``, ``audit.csv``, ``multibootstrap.md/.csv``
    (with predictions), ``summary.txt`` and the PNG figures ``forest``, ``slopes``,
    ``distributions``, ``power_curve``, ``disagreement``. Returns file name -> path.
    Extra keyword arguments go to :func:`analyze`."""
    result = analyze(runs, predictions, baseline=baseline, comparisons=comparisons, alpha=alpha,
                     margin=margin, n_boot=n_boot, seed=seed, **kwargs)
    return write_result(result, out_dir)
