"""Small PDF building blocks on reportlab: real (searchable) text, readable tables, sharp figures.

Kept separate from what goes into the report (``study/report.py``) so each stays short.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import (
    Image,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

PAGE_W, PAGE_H = A4
MARGIN = 1.8 * cm
TEXT_W = PAGE_W - 2 * MARGIN

_styles = getSampleStyleSheet()
STYLES = {
    "title": ParagraphStyle("title", parent=_styles["Title"], fontSize=18, spaceAfter=6),
    "h1": ParagraphStyle("h1", parent=_styles["Heading1"], fontSize=14, spaceBefore=10, spaceAfter=4),
    "h2": ParagraphStyle("h2", parent=_styles["Heading2"], fontSize=11.5, spaceBefore=8, spaceAfter=3),
    "body": ParagraphStyle("body", parent=_styles["BodyText"], fontSize=9.5, leading=12.5),
    "small": ParagraphStyle("small", parent=_styles["BodyText"], fontSize=8, leading=10,
                            textColor=colors.HexColor("#444444")),
    "cell": ParagraphStyle("cell", parent=_styles["BodyText"], fontSize=7.2, leading=8.6),
    "cellb": ParagraphStyle("cellb", parent=_styles["BodyText"], fontSize=7.2, leading=8.6,
                            fontName="Helvetica-Bold"),
}


def esc(text) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def para(text: str, style: str = "body") -> Paragraph:
    """A paragraph; ``text`` may use reportlab's mini-markup (<b>, <i>), so escape user text with esc()."""
    return Paragraph(text, STYLES[style])


def fmt(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != 0 and abs(value) < 10 ** (-digits):
            return f"{value:.1e}"
        return f"{value:.{digits}f}"
    return str(value)


def table(df: pd.DataFrame, widths: list[float] | None = None, digits: int = 4,
          bold_cells: set[tuple[int, int]] | None = None, max_rows: int | None = None) -> Table:
    """A DataFrame as a zebra-striped table that wraps long cells and repeats its header on new pages."""
    bold_cells = bold_cells or set()
    if max_rows is not None and len(df) > max_rows:
        df = df.head(max_rows)
    header = [Paragraph(f"<b>{esc(c)}</b>", STYLES["cell"]) for c in df.columns]
    rows = [header]
    for i, (_, row) in enumerate(df.iterrows()):
        rows.append([Paragraph(esc(fmt(v, digits)), STYLES["cellb" if (i, j) in bold_cells else "cell"])
                     for j, v in enumerate(row)])
    if widths is None:
        widths = [TEXT_W / max(1, len(df.columns))] * len(df.columns)
    t = Table(rows, colWidths=widths, repeatRows=1)
    t.setStyle(TableStyle([
        ("LINEABOVE", (0, 0), (-1, 0), 0.8, colors.black),
        ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
        ("LINEBELOW", (0, -1), (-1, -1), 0.8, colors.black),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f4f7")]),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]))
    return t


def figure(fig, width: float = TEXT_W, dpi: int = 200) -> Image:
    """A matplotlib figure embedded as a high-resolution PNG, scaled to ``width`` points."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    buf.seek(0)
    img = Image(buf)
    scale = width / img.imageWidth
    img.drawWidth, img.drawHeight = width, img.imageHeight * scale
    if img.drawHeight > PAGE_H - 4 * MARGIN:  # tall figures shrink to fit one page
        shrink = (PAGE_H - 4 * MARGIN) / img.drawHeight
        img.drawWidth, img.drawHeight = img.drawWidth * shrink, img.drawHeight * shrink
    return img


def spacer(h: float = 0.25) -> Spacer:
    return Spacer(1, h * cm)


def page_break() -> PageBreak:
    return PageBreak()


def build(path: Path, story: list, title: str) -> Path:
    """Write the PDF atomically (temporary file, then rename) with numbered pages."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pdf.tmp")

    def footer(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(colors.HexColor("#555555"))
        canvas.drawString(MARGIN, 0.9 * cm, title)
        canvas.drawRightString(PAGE_W - MARGIN, 0.9 * cm, f"page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(str(tmp), pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN,
                            topMargin=MARGIN, bottomMargin=1.6 * cm, title=title, author="maskstudy")
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    tmp.replace(path)
    return path
