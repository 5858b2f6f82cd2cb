"""The PDF renderer of a report :class:`~study.document.Document`, on reportlab: real
(searchable) text, readable tables, sharp figures.

What goes into the report is ``study/report.py``'s; how it looks on paper is this module's; the
HTML page is ``study/htmlreport.py``'s.
"""

from __future__ import annotations

import io
from pathlib import Path

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.pdfbase.pdfmetrics import stringWidth
from reportlab.platypus import (
    CondPageBreak,
    Image,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from study import document as d
from study.document import esc

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


def table(block: d.Table) -> Table:
    """A zebra-striped table that wraps long cells (between words only: column widths come from
    :func:`column_widths` unless given) and repeats its header on new pages."""
    head, text = block.cells()
    header = [Paragraph(f"<b>{esc(c)}</b>", STYLES["cell"]) for c in head]
    rows = [header]
    for i, row in enumerate(text):
        rows.append([Paragraph(esc(v), STYLES["cellb" if (i, j) in block.bold else "cell"])
                     for j, v in enumerate(row)])
    widths = [w * TEXT_W for w in block.widths] if block.widths else column_widths(head, text)
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


def figure(block: d.Figure) -> Image:
    """The figure's PNG scaled to its share of the text width (tall ones shrink to fit a page)."""
    img = Image(io.BytesIO(block.png))
    width = block.width * TEXT_W
    scale = width / img.imageWidth
    img.drawWidth, img.drawHeight = width, img.imageHeight * scale
    if img.drawHeight > PAGE_H - 4 * MARGIN:
        shrink = (PAGE_H - 4 * MARGIN) / img.drawHeight
        img.drawWidth, img.drawHeight = img.drawWidth * shrink, img.drawHeight * shrink
    return img


HEADING_STYLES = {0: "title", 1: "h1", 2: "h2"}
# A page break is taken only when less than this is left on the page: a section that would start
# in the lower third moves on, while a short one never leaves a page to a single small table.
NEW_PAGE_BELOW = 0.36 * (PAGE_H - 2 * MARGIN)


def flowables(doc: d.Document) -> list:
    out = []
    after_heading = False
    for block in doc.blocks:
        if isinstance(block, d.Heading):
            out.append(Paragraph(_markup(block.text), STYLES[HEADING_STYLES[block.level]]))
        elif isinstance(block, d.Paragraph):
            style = STYLES[block.style]
            if after_heading:  # a section's lead-in stays with its table or figure, as its heading does
                style = ParagraphStyle(f"{style.name}-lead", parent=style, keepWithNext=1)
            out.append(Paragraph(_markup(block.text), style))
        elif isinstance(block, d.Table):
            out.append(table(block))
        elif isinstance(block, d.Figure):
            out.append(figure(block))
        elif isinstance(block, d.PageBreak):
            out.append(CondPageBreak(NEW_PAGE_BELOW))
        elif isinstance(block, d.Spacer):
            out.append(Spacer(1, 0.25 * cm))
        else:
            raise TypeError(f"no PDF rendering for {type(block).__name__}")
        after_heading = isinstance(block, d.Heading) or (after_heading and isinstance(block, d.Paragraph))
    return out


def _markup(text: str) -> str:
    """The document's inline markup in reportlab's: <code> is a fixed-width font."""
    return text.replace("<code>", "<font face='Courier'>").replace("</code>", "</font>")


def render(doc: d.Document, path: Path) -> Path:
    """Write ``doc`` as a PDF, atomically (temporary file, then rename), with numbered pages."""
    return build(path, flowables(doc), doc.title)


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
