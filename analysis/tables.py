"""Markdown and LaTeX (booktabs) renderings of the analysis tables, and the one writer
(:func:`write_tables`) that puts every table of an analysis on disk as md, csv and tex.

Written by hand rather than through ``DataFrame.to_markdown``/``to_latex`` so the package
needs neither tabulate nor jinja2. CSV files keep full precision and the frames' snake_case
columns; Markdown keeps the same column names with rounded numbers; LaTeX tables are
paper-ready (human headers from :mod:`analysis.display`, differences in points).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.display import display_frame, fmt_p

# Markdown shows the columns a reader scans; the CSV keeps them all.
MD_COLUMNS = {"comparisons": [
    "task", "model", "treatment", "baseline", "n_pairs", "estimate", "ci_low", "ci_high",
    "p_ttest", "p_wilcoxon", "p_signflip", "p_adj", "significant", "boot_low",
    "boot_high", "d_z", "mde", "p_tost", "equivalent", "level", "warning",
]}
CAPTIONS = {
    "bayes": "Bayesian probabilities that the treatment is better, within $\\pm$margin, or worse "
             "(per cell: $t$ posterior; across cells: Bayesian signed-rank test).",
    "across": "Across tasks and models: random-effects pooled difference (points), "
              "heterogeneity and prediction interval for a new cell.",
    "multibootstrap": "Multibootstrap over seeds and evaluation examples (differences in points).",
    "paired_runs": "Each treatment run against the baseline run of its seed on the evaluation "
                   "set (sacrebleu's paired bootstrap; differences in points).",
    "power": "Power of the paired $t$-test and seeds needed for the target power.",
    "disagreement": "What a single run would have told you: shares of single-seed comparisons.",
    "variance": "Variance decomposition of the primary metric.",
    "cells": "Per-cell score over seeds (points).",
    "audit": "Pairing audit: one row per seed pair.",
}


def _fmt(value, digits: int = 4) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return ""
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


def _finite(v) -> bool:
    return isinstance(v, (float, np.floating)) and math.isfinite(v)


def to_markdown(df: pd.DataFrame, columns: Sequence[str] | None = None, digits: int = 4) -> str:
    """A GitHub-flavoured Markdown table; numbers to ``digits`` significant digits, NaN blank."""
    cols = [c for c in (columns or df.columns) if c in df.columns]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])
               for c in cols]
    lines = ["| " + " | ".join(cols) + " |",
             "|" + "|".join("---:" if num else ":---" for num in numeric) + "|"]
    for rec in df[cols].itertuples(index=False):
        cells = [(fmt_p(v) if c.startswith("p_") and _finite(v) else _fmt(v, digits))
                 .replace("|", "\\|").replace("\n", " ") for c, v in zip(cols, rec, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}


# Display text uses a few non-ASCII signs; these spell them in plain LaTeX.
_LATEX_SIGNS = {"Δ": r"$\Delta$", "α": r"$\alpha$", "−": "$-$", "<": "$<$", ">": "$>$",
                "∞": r"$\infty$", "–": "--"}


def latex_escape(text) -> str:
    return "".join(_LATEX_ESCAPES.get(ch) or _LATEX_SIGNS.get(ch, ch) for ch in str(text))


def _p(p) -> str:
    if p is None or not np.isfinite(p):
        return "--"
    return r"$<$0.001" if p < 0.001 else f"{p:.3f}"


def _pt(x, digits: int = 2) -> str:
    return "--" if x is None or not np.isfinite(x) else f"{x * 100:.{digits}f}"


def latex_table(
    header: Sequence[str], rows: Sequence[Sequence[str]], align: str, caption: str = "",
    label: str = "",
) -> str:
    """A booktabs ``table`` environment; cells are already LaTeX (escape them first)."""
    out = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{align}}}",
           r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    out += [" & ".join(r) + r" \\" for r in rows]
    out += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        out.append(rf"\caption{{{caption}}}")
    if label:
        out.append(rf"\label{{{label}}}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def comparisons_latex(table: pd.DataFrame, label: str = "tab:comparisons") -> str:
    """Paper-ready booktabs table of a :func:`analysis.compare` result (needs booktabs).

    Differences, intervals and MDE in points; the adjusted p of significant rows in bold.
    """
    level = float(table["level"].iloc[0]) if len(table) else 0.95
    has_tost = "p_tost" in table and table["p_tost"].notna().any()
    pct = f"{level * 100:g}"
    header = ["Task", "Model", "Treatment", "Baseline", "$n$", r"$\Delta$ (pts)",
              rf"{pct}\% CI (t)", rf"{pct}\% CI (BCa)", "$p_t$", "$p_W$", r"$p_{\pm}$",
              r"$p_{\mathrm{adj}}$", "$d_z$", "MDE (pts)"]
    if has_tost:
        header.append(r"$p_{\mathrm{TOST}}$")
    rows = []
    for r in table.to_dict("records"):
        p_adj = _p(r["p_adj"])
        if bool(r["significant"]):
            p_adj = rf"\textbf{{{p_adj}}}"
        row = [latex_escape(r[c]) for c in ("task", "model", "treatment", "baseline")]
        row += [str(int(r["n_pairs"])), _pt(r["estimate"]),
                f"[{_pt(r['ci_low'])}, {_pt(r['ci_high'])}]",
                f"[{_pt(r['boot_low'])}, {_pt(r['boot_high'])}]",
                _p(r["p_ttest"]), _p(r["p_wilcoxon"]), _p(r["p_signflip"]), p_adj,
                "--" if not np.isfinite(r["d_z"]) else f"{r['d_z']:.2f}", _pt(r["mde"])]
        if has_tost:
            row.append(_p(r["p_tost"]))
        rows.append(row)
    corr = str(table["correction"].iloc[0]) if len(table) else "holm"
    corr_name = {"holm": "Holm", "bonferroni": "Bonferroni", "none": "no"}.get(corr, corr)
    caption = (
        r"Seed-paired differences (treatment $-$ baseline, in points). $p_t$: paired $t$-test; "
        r"$p_W$: exact Wilcoxon signed-rank; $p_{\pm}$: exact sign-flip permutation; "
        rf"$p_{{\mathrm{{adj}}}}$: {corr_name} correction of $p_t$ over the table "
        rf"(bold: significant at $\alpha={1 - level:g}$); MDE: true difference detected with "
        r"80\% power by the paired $t$-test."
    )
    if has_tost:
        margin = float(table["margin"].dropna().iloc[0])
        caption += rf" $p_{{\mathrm{{TOST}}}}$: equivalence within $\pm{margin * 100:g}$ points."
    return latex_table(header, rows, "llll" + "r" * (len(header) - 4), caption, label)


_NUMBERLIKE = re.compile(r"[-−–+0-9.,%<>\[\] ∞]*")


def frame_latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """Any result table as a booktabs table, with the report's headers and number formats."""
    shown = display_frame(df, fold=False)
    header = [rf"\textbf{{{latex_escape(c)}}}" for c in shown.columns]
    rows = [[latex_escape(v) for v in rec] for rec in shown.itertuples(index=False)]
    align = "".join("r" if all(_NUMBERLIKE.fullmatch(v) for v in shown[c]) else "l" for c in shown)
    return latex_table(header, rows, align, caption, label)


def write_table(df: pd.DataFrame, path_stem, formats=("md", "csv", "tex")) -> dict:
    """Write one result table as ``<stem>.md`` / ``.csv`` / ``.tex``; returns {file name: path}.
    The stem's name picks the Markdown columns, the LaTeX caption and, for ``comparisons``,
    the paper-ready comparison layout."""
    from pathlib import Path

    stem = Path(path_stem)
    name = stem.name
    out = {}
    for fmt in formats:
        path = stem.with_suffix(f".{fmt}")
        if fmt == "csv":
            df.to_csv(path, index=False)
        elif fmt == "md":
            path.write_text(to_markdown(df, MD_COLUMNS.get(name)))
        elif fmt == "tex":
            text = (comparisons_latex(df) if name == "comparisons"
                    else frame_latex(df, CAPTIONS.get(name, ""), f"tab:{name}"))
            path.write_text(text)
        else:
            raise ValueError(f"unknown table format {fmt!r}")
        out[path.name] = path
    return out


def write_tables(tables: dict[str, pd.DataFrame], out_dir) -> dict:
    """Every table of ``tables`` (name -> frame, e.g. ``AnalysisResult.tables()``) as
    ``<name>.md``, ``.csv`` and ``.tex`` in ``out_dir``."""
    from pathlib import Path

    files = {}
    for name, df in tables.items():
        files |= write_table(df, Path(out_dir) / name)
    return files
