"""PDF layout rules a reader notices: a section heading never sits alone at a page foot."""

from __future__ import annotations

import io

import pytest

from study import document as d

pypdf = pytest.importorskip("pypdf")


def tall_png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 5))
    ax.plot([0, 1], [0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=60)
    plt.close(fig)
    return buf.getvalue()


def pages_with(path, text: str) -> list[int]:
    reader = pypdf.PdfReader(str(path))
    return [i for i, page in enumerate(reader.pages) if text in page.extract_text()]


def test_a_heading_and_its_lead_in_move_with_their_figure(tmp_path):
    from study import pdf

    filler = [d.Paragraph(f"Filler line {i} of the page above the section.") for i in range(25)]
    doc = d.Document("Layout", [*filler, d.Heading("5. Per-seed detail", 1),
                                d.Paragraph("Each line joins the two maskers' scores for one seed."),
                                d.Figure(tall_png(), width=0.9, alt="per-seed pairs"),
                                d.Paragraph("After the figure.")])
    path = pdf.render(doc, tmp_path / "layout.pdf")
    (heading_page,) = pages_with(path, "Per-seed detail")
    (lead_page,) = pages_with(path, "Each line joins")
    (after_page,) = pages_with(path, "After the figure")
    assert pages_with(path, "Filler line 24") == [0]
    # the figure does not fit under the filler: heading and lead-in go with it to page 2
    assert heading_page == lead_page == 1 and after_page >= 1
