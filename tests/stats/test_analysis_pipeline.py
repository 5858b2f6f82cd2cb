"""analyze / write_analysis end to end, tables, summary sentence, figures, torch-free import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _analysis_testkit import make_runs, small_study

import analysis
from analysis import analyze, compare, figures, summary_sentence, write_analysis
from analysis.summary import across_sentence, selection_sentences
from analysis.tables import comparisons_latex, latex_escape, to_markdown

ROOT = Path(__file__).resolve().parents[2]


def test_import_without_torch():
    code = ("import sys; import analysis, analysis.figures, analysis.pipeline; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_write_analysis_writes_every_file(tmp_path):
    study = small_study()
    runs, preds = study
    files = write_analysis(runs, preds, out_dir=tmp_path / "out", baseline="none",
                           margin=0.01, n_boot=300, seed=1)
    expected = {f"{stem}.{ext}" for stem, exts in {
        "comparisons": ("md", "csv", "tex"), "power": ("md", "csv"),
        "disagreement": ("md", "csv"), "variance": ("md", "csv"),
        "multibootstrap": ("md", "csv")}.items() for ext in exts}
    expected |= {"summary.txt", "audit.csv"} | {f"{n}.png" for n in analysis.pipeline.FIGURES}
    assert expected <= set(files)
    for name, path in files.items():
        assert path.exists() and path.stat().st_size > 0, name
    table = pd.read_csv(files["comparisons.csv"])
    assert {"task", "model", "treatment", "baseline", "n_pairs", "estimate", "sd", "ci_low",
            "ci_high", "p_ttest", "p_wilcoxon", "p_signflip", "p_adj", "significant",
            "boot_low", "boot_high", "d_z", "mde", "p_tost", "equivalent", "level",
            "warning"} <= set(table.columns)
    assert all(c.isidentifier() and c == c.lower() for c in table.columns)
    tex = files["comparisons.tex"].read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert "significant after Holm" in files["summary.txt"].read_text()
    assert files["forest.png"].read_bytes()[:4] == b"\x89PNG"


def test_write_analysis_without_predictions(tmp_path):
    study = small_study()
    runs, _ = study
    files = write_analysis(runs, None, out_dir=tmp_path, comparisons=[("typhoon", "random")],
                           n_boot=200)
    assert "multibootstrap.csv" not in files and "comparisons.tex" in files


def test_analysis_result_tables():
    study = small_study()
    runs, preds = study
    res = analyze(runs, preds, baseline="none", n_boot=200, margin=0.005)
    assert len(res.comparisons) == len(res.multibootstrap) == len(res.disagreement) == 8
    assert len(res.power) == 8 * 4 and res.audit.status.eq("ok").all()
    # one decomposition per metric (f1, mcc), each summing to 1
    assert res.variance.groupby("metric").share.sum().to_numpy() == pytest.approx([1.0, 1.0])
    # the per-comparison verdict, then the across-cell verdict (issue 14 phase 2)
    assert res.summary == (summary_sentence(res.comparisons)
                           + across_sentence(res.across, res.bayes, res.comparisons)
                           + selection_sentences(res.many_to_one, res.best, res.rate_response,
                                                 res.rate_interaction, 0.05))
    assert " Max-T over the treatments of each cell" in res.summary  # 2 treatments per baseline
    assert "Rate response" not in res.summary  # no rate column: no sweep
    # f1 and mcc are pooled apart; each pools 2 cells into an interval wider than either
    # cell's, so the summary points to the table instead of leading with it
    assert list(res.across.metric) == ["f1", "mcc"] * 2 and set(res.across.n_cells) == {2}
    assert "Across 2 cells" not in res.summary
    assert (" The pooled intervals of 4 comparisons over 2–3 cells are wider than every one of "
            "the pooled cells' own intervals") in res.summary
    one = across_sentence(res.across.iloc[:1], res.bayes, res.comparisons)
    assert one.startswith(" The pooled interval of random vs none over 2 cells (f1) is wider")


def test_summary_sentence_variants():
    null = compare(make_runs({"a": [0.001, -0.002, 0.0015, 0.0, -0.001, 0.002]}),
                   n_boot=100, margin=0.01)
    s = summary_sentence(null)
    assert s.startswith("0 of 1 comparison significant after Holm at α = 0.05")
    assert "all 95% CIs include zero" in s
    assert "equivalent within ±1 pts (TOST, α = 0.05): 1 of 1" in s
    strong = compare(make_runs({"a": [0.02, 0.021, 0.019, 0.022, 0.02, 0.018, 0.02]}),
                     n_boot=100)
    s = summary_sentence(strong)
    assert s.startswith("1 of 1 comparison significant") and "+2.00 pts" in s
    assert "not all 95% CIs include zero" in s and "equivalence not tested" in s
    five = compare(make_runs({"a": [0.02, 0.021, 0.019, 0.022, 0.02]}), n_boot=100)
    assert "cannot reach p < 0.0625" in summary_sentence(five)


def test_markdown_and_latex_rendering():
    df = pd.DataFrame({"name": ["a|b", "c"], "x": [0.123456, np.nan], "ok": [True, False],
                       "n": [5, 6]})
    md = to_markdown(df)
    lines = md.strip().splitlines()
    assert lines[0] == "| name | x | ok | n |" and lines[1] == "|:---|---:|:---|---:|"
    assert "a\\|b" in lines[2] and "0.1235" in lines[2] and "yes" in lines[2]
    assert lines[3].count("|") == 5
    assert latex_escape("whole_word & 50%") == r"whole\_word \& 50\%"


def test_latex_table_points_and_bold():
    table = compare(make_runs({"whole_word": [0.02, 0.021, 0.019, 0.022, 0.02, 0.018]}),
                    n_boot=100, margin=0.01)
    tex = comparisons_latex(table)
    assert r"whole\_word" in tex and r"\textbf{" in tex and "2.00" in tex
    assert r"$p_{\mathrm{TOST}}$" in tex and "Holm" in tex


def test_figures_draw_on_given_axes_and_return_figure():
    study = small_study()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs, _ = study
    res = analyze(runs, None, baseline="none", n_boot=100)
    calls = [
        lambda ax: figures.forest_plot(res.comparisons, margin=0.005, ax=ax),
        lambda ax: figures.slope_plot(runs, "none", ax=ax),
        lambda ax: figures.distribution_plot(runs, ax=ax),
        lambda ax: figures.power_curve(res.comparisons, ax=ax),
        lambda ax: figures.disagreement_heatmap(res.disagreement, ax=ax),
    ]
    for draw in calls:
        fig = Figure()
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        assert draw(ax) is fig
        assert draw(None) is not fig


def test_distribution_plot_gives_each_cell_its_own_panel_and_axis():
    """Its own figure: one titled panel per task × model (4 to a row), each y-axis scaled to
    its cell, so a cell at 0.6 and one at 0.9 both show their masker spread."""
    frames = []
    for i, (task, level) in enumerate([("a", 0.6), ("b", 0.9), ("c", 0.75), ("d", 0.7),
                                        ("e", 0.8)]):
        r = make_runs({"tlm": [0.01, 0.02, 0.0]}, base_values=[level] * 3)
        frames.append(r.assign(task=task, metric="accuracy" if i % 2 else "macro_f1"))
    runs = pd.concat(frames, ignore_index=True)
    fig = figures.distribution_plot(runs)
    shown = [a for a in fig.axes if a.axison]
    assert [a.get_title() for a in shown] == [f"{t} / {runs.model.iloc[0]}" for t in "abcde"]
    assert len(fig.axes) == 8  # two rows of four; the three empty panels hidden
    low, high = shown[0].get_ylim(), shown[1].get_ylim()
    assert high[0] > low[1]  # not one shared axis
    assert shown[0].get_ylabel() == "score (macro_f1)" and shown[1].get_ylabel() == "score (accuracy)"


def test_write_analysis_survives_degenerate_study(tmp_path):
    """n = 1, n = 2, all-zero and constant differences in one study: files, not a crash."""
    runs = make_runs({"one": [0.01], "two": [0.01, 0.03], "zero": [0.0] * 4,
                      "const": [0.01] * 4}, base_values=[0.8] * 4)
    with pytest.warns(analysis.AnalysisWarning):
        files = write_analysis(runs, None, out_dir=tmp_path, baseline="none", margin=0.005,
                               n_boot=200)
    table = pd.read_csv(files["comparisons.csv"])
    assert list(table.n_pairs) == [1, 2, 4, 4]
    assert "no test possible" in table.warning[0]
    assert files["forest.png"].stat().st_size > 0 and files["power_curve.png"].exists()
    assert "4 comparisons" in files["summary.txt"].read_text()
