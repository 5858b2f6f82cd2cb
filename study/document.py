"""The report as a neutral document: headings, paragraphs, tables and figures, no renderer.

``study/report.py`` builds a :class:`Document` from the store (what the report says); renderers
turn it into a file (how it looks): ``study/pdf.py`` (reportlab) and ``study/htmlreport.py`` (one
self-contained HTML page). Both show the same blocks in the same order.

Paragraph text is escaped text with a small inline markup both renderers understand: ``<b>``,
``<i>`` and ``<code>`` (use :func:`esc` on anything that comes from the user or the data).
Tables hold display strings (``analysis.display.display_frame``) or plain values, formatted by
:func:`fmt`. Figures are rendered to PNG once, here, so each renderer embeds the same image.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field

import pandas as pd

MINUS = "−"  # U+2212: numbers use the minus sign, never the hyphen
_NUMBER_HYPHEN = re.compile(r"(?<![\w.\-/])-(?=\.?\d)")  # "-0.68", " -1e-3"; not "sst-2", "2026-12-04"


@dataclass
class Heading:
    text: str
    level: int  # 0: the title; 1: a numbered section; 2: a subsection


@dataclass
class Paragraph:
    text: str  # escaped text with <b>, <i>, <code>
    style: str = "body"  # body | small (notes, captions)


@dataclass
class Table:
    frame: pd.DataFrame
    widths: list[float] | None = None  # fractions of the text width; None: fitted to the content
    digits: int = 4  # for float cells that are not display strings yet
    bold: set = field(default_factory=set)  # (row, column) cells to set in bold

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """(header, rows) as display text."""
        return ([str(c) for c in self.frame.columns],
                [[fmt(v, self.digits) for v in row] for row in self.frame.itertuples(index=False)])


@dataclass
class Figure:
    png: bytes
    width: float = 1.0  # fraction of the text width
    alt: str = ""


@dataclass
class PageBreak:
    """Start the next block on a new page, unless the page has room enough (the PDF keeps a small
    block with what precedes it rather than leave a page holding only one small table)."""


@dataclass
class Spacer:
    pass


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)


def esc(text) -> str:
    """Plain text for a paragraph or heading; a hyphen before a number becomes the minus sign
    ("[-0.68, +2.66]" → "[−0.68, +2.66]"), so sentences composed elsewhere read like the tables."""
    text = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _NUMBER_HYPHEN.sub(MINUS, text)


def code(text) -> str:
    """User text (a path, a file name) in a fixed-width face."""
    return "<code>" + str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") + "</code>"


def fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.1e}".replace("-", MINUS)
        return f"{value:.{digits}f}".replace("-", MINUS)
    if isinstance(value, int) and value < 0:
        return f"{MINUS}{-value}"
    return str(value)


def para(text: str, style: str = "body") -> Paragraph | Heading:
    """A paragraph (``style`` body or small), or a heading (``style`` title, h1, h2)."""
    levels = {"title": 0, "h1": 1, "h2": 2}
    return Heading(text, levels[style]) if style in levels else Paragraph(text, style)


def table(df: pd.DataFrame, widths: list[float] | None = None, digits: int = 4,
          bold_cells: set | None = None) -> Table:
    return Table(df.reset_index(drop=True), widths, digits, set(bold_cells or ()))


def figure(fig, width: float = 1.0, dpi: int = 200, alt: str = "") -> Figure:
    """A matplotlib figure as a high-resolution PNG, ``width`` a fraction of the text width."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    if not alt and fig.axes:
        alt = "; ".join(t for t in (ax.get_title() for ax in fig.axes) if t) or fig.axes[0].get_xlabel()
    return Figure(buf.getvalue(), width, alt)


def page_break() -> PageBreak:
    return PageBreak()


def spacer() -> Spacer:
    return Spacer()
