"""The report as one document rendered twice (issue 22 §2): the PDF and a self-contained HTML page
with the same content; and the report items of §3 (reference levels, binary f1's class,
truncation, minus signs, wall times, no page left to one small table)."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest
from pypdf import PdfReader
from sklearn.metrics import f1_score, matthews_corrcoef
from test_report import pdf_text, synthetic_grid_store

from study import document as d
from study.report import build_document, write_report
from study.spec import expand
from study.store import Store


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    p = synthetic_grid_store(tmp, tasks={"mrpc": "f1", "cola": "mcc"}, models=("l2", "l4"))
    with Store(p.store_path) as store:  # what real runs record beside their results (study/train.py)
        store.conn.execute("""UPDATE runs SET env = json_set(env, '$.labels', json('["no paraphrase", "paraphrase"]'),
                              '$.truncation', json('{"train": {"examples": 3, "of": 40}, "eval": {"examples": 0, "of": 200}}'))""")
    document = build_document(p)
    pdf = write_report(p, tmp / "report.pdf")
    html = write_report(p, tmp / "report.html", "html")
    return p, document, pdf, html


def _squash(text: str) -> str:
    return re.sub(r"\s+", "", text).replace("\u2206", "Δ")


def test_html_and_pdf_show_the_same_document(grid):
    p, document, pdf, html = grid
    page = html.read_text()
    pdf_all = _squash(pdf_text(pdf))
    html_text = _squash(re.sub(r"<[^>]+>", " ", page.split("<script>")[0]).replace("&amp;", "&")
                        .replace("&lt;", "<").replace("&gt;", ">"))
    tables = [b for b in document.blocks if isinstance(b, d.Table)]
    figures = [b for b in document.blocks if isinstance(b, d.Figure)]
    headings = [b for b in document.blocks if isinstance(b, d.Heading)]
    assert len(tables) > 10 and len(figures) >= 5 and len(headings) > 10
    for h in headings:
        assert _squash(h.text) in pdf_all and _squash(h.text) in html_text, h.text
    for t in tables:
        head, rows = t.cells()
        for cell in head + [c for row in rows for c in row]:
            assert _squash(cell) in pdf_all, cell
            assert _squash(cell) in html_text, cell
    # every figure, byte for byte, embedded in the page; as many images in the PDF
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [f.png for f in figures]
    assert sum(len(pg.images) for pg in PdfReader(pdf).pages) == len(figures)
    assert page.count('<table class="sortable">') == len(tables)


def test_the_html_page_is_self_contained(grid):
    page = grid[3].read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert "<link" not in page and "<script src" not in page and "@import" not in page
    assert "@media print" in page and "break-before: page" in page


def test_results_table_shows_majority_and_chance_levels_beside_each_cell(grid):
    p, document, _, _ = grid
    results = next(b for b in document.blocks if isinstance(b, d.Table) and "Majority" in b.frame.columns)
    with Store(p.store_path) as store:
        preds = store.load_predictions(expand(p))
    assert sorted(results.frame["Metric"]) == ["f1 (class 1: 'paraphrase')"] * 2 + ["mcc"] * 2
    for row in results.frame.itertuples(index=False):
        cell = preds[(preds.task == row.Task) & (preds.model == row.Model)]
        y = cell[cell.run_id == cell.run_id.iloc[0]]["label"].to_numpy()
        always = np.full_like(y, np.bincount(y).argmax())
        majority = f1_score(y, always, zero_division=0) if row.Task == "mrpc" else matthews_corrcoef(y, always)
        assert row.Majority == f"{majority * 100:.2f}".replace("-", "−")
        assert row.Task == "cola" or 0 < float(row.Chance) < 100  # (its value: analysis.pilot's tests)


def test_the_report_shows_what_max_length_cut(grid):
    text = pdf_text(grid[2])
    assert "max_length 24 cuts, cola/l2: train 3 of 40 examples (7.5 %); eval 0 of 200 examples (0.0 %)" in text


def test_report_wording_and_layout(grid):
    p, document, pdf, _ = grid
    text = pdf_text(pdf)
    assert not re.search(r"(?<![\w.\-])-\d+\.\d", text), "a hyphen-minus number"  # "−" everywhere
    assert re.search(r"−\d+\.\d", text)
    assert "built-in" in text and "built-in / hub" not in text
    assert "Claims a win: |Δ| ≥ 0.5 pts" in text and "≥ 0.5 pts in either direction" in text
    appendix = next(b for b in reversed(document.blocks) if isinstance(b, d.Table))
    assert set(appendix.frame["Wall time (s)"]) == {"1.0"}
    # no page holds only one small table: every page but the last carries a figure or a page's worth of text
    pages = PdfReader(pdf).pages
    thin = [i + 1 for i, pg in enumerate(pages[:-1]) if not pg.images and len(pg.extract_text()) < 1200]
    assert not thin, thin
