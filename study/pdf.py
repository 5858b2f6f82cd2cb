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
from reportlab.pdfbase.pdfmetrics import stringWidth
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
    # keepWithNext: a heading never stands alone at the foot of a page, apart from its table
    "h1": ParagraphStyle("h1", parent=_styles["Heading1"], fontSize=14, spaceBefore=10, spaceAfter=4,
                         keepWithNext=1),
    "h2": ParagraphStyle("h2", parent=_styles["Heading2"], fontSize=11.5, spaceBefore=8, spaceAfter=3,
                         keepWithNext=1),
    "body": ParagraphStyle("body", parent=_styles["BodyText"], fontSize=9.5, leading=12.5),
    "small": ParagraphStyle("small", parent=_styles["BodyText"], fontSize=8, leading=10, spaceAfter=3,
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


PAD = 3.0  # left/right cell padding, points


def _text_width(text: str, bold: bool = False) -> float:
    return stringWidth(text, "Helvetica-Bold" if bold else "Helvetica", STYLES["cell"].fontSize)


def column_widths(header: list[str], cells: list[list[str]], total: float = TEXT_W) -> list[float]:
    """Widths that never break a word: each column gets at least its longest word (header in
    bold or cell), then the room left goes to the columns whose full text would not fit on
    one line, in proportion to what they lack."""
    need_min, cells_line, head_line = [], [], []
    for j, head in enumerate(header):
        col = [row[j] for row in cells]
        words = head.split() + [w for c in col for w in c.split()]
        # +1 pt: a Paragraph exactly as wide as its word still wraps it (float rounding in reportlab)
        need_min.append(max([_text_width(w, bold=True) for w in words] or [0]) + 2 * PAD + 1.0)
        cap = 0.45 * total  # long notes wrap rather than starve every other column
        cells_line.append(max(need_min[-1], min(max([_text_width(c) for c in col] or [0]) + 2 * PAD, cap)))
        head_line.append(max(cells_line[-1], min(_text_width(head, bold=True) + 2 * PAD, cap)))
    # Cells on one line first, then headers on one line; headers wrap between words.
    for lo, hi in ((need_min, cells_line), (cells_line, head_line)):
        if sum(hi) <= total:
            continue
        if sum(lo) >= total:  # cannot fit without breaking words: shrink evenly
            return [w * total / sum(lo) for w in lo]
        spare = total - sum(lo)
        lack = [h - m for h, m in zip(hi, lo, strict=True)]
        return [m + spare * lk / sum(lack) for m, lk in zip(lo, lack, strict=True)]
    return [w * total / sum(head_line) for w in head_line]


def table(df: pd.DataFrame, widths: list[float] | None = None, digits: int = 4,
          bold_cells: set[tuple[int, int]] | None = None, max_rows: int | None = None) -> Table:
    """A DataFrame as a zebra-striped table that wraps long cells (between words only: column
    widths come from :func:`column_widths` unless given) and repeats its header on new pages.
    Give it display strings (``analysis.display.display_frame``) for the report's formats."""
    bold_cells = bold_cells or set()
    if max_rows is not None and len(df) > max_rows:
        df = df.head(max_rows)
    head = [str(c) for c in df.columns]
    text = [[fmt(v, digits) for v in row] for row in df.itertuples(index=False)]
    header = [Paragraph(f"<b>{esc(c)}</b>", STYLES["cell"]) for c in head]
    rows = [header]
    for i, row in enumerate(text):
        rows.append([Paragraph(esc(v), STYLES["cellb" if (i, j) in bold_cells else "cell"])
                     for j, v in enumerate(row)])
    if widths is None:
        widths = column_widths(head, text)
    t = Table(rows, colWidths=widths, repeatRows=1)
    t.setStyle(TableStyle([
        ("LINEABOVE", (0, 0), (-1, 0), 0.8, colors.black),
        ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
        ("LINEBELOW", (0, -1), (-1, -1), 0.8, colors.black),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#f2f4f7")]),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
        ("LEFTPADDING", (0, 0), (-1, -1), PAD),
        ("RIGHTPADDING", (0, 0), (-1, -1), PAD),
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
