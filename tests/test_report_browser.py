"""The HTML report in a real headless browser (issue 22 §2): Chromium from the system's package
manager (Debian: ``apt-get install chromium``), driven by Playwright (``pip install
'maskstudy[browser]'``; no browser download: the system's Chromium is used). Skips with the reason
when either is missing. Slow: ``pytest -m slow tests/test_report_browser.py``."""

from __future__ import annotations

import shutil

import pytest
from test_report import synthetic_grid_store

from study.report import write_report

pytestmark = pytest.mark.slow

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome")) if p), None)


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    p = synthetic_grid_store(tmp, tasks={"mrpc": "f1", "cola": "mcc"}, models=("l2", "l4"))
    return write_report(p, tmp / "report.html", "html")


def test_a_real_browser_renders_the_page_and_sorts_a_table(page_file):
    if CHROMIUM is None:
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed "
                                   "(pip install 'maskstudy[browser]')")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        errors, requests = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_file.as_uri())
        page.wait_for_load_state("load")
        assert errors == []
        assert all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing from the network
        # every figure decoded and laid out
        figures = page.eval_on_selector_all(
            "figure img", "imgs => imgs.map(i => [i.complete, i.naturalWidth, i.getBoundingClientRect().width])")
        assert len(figures) >= 5 and all(ok and w > 100 and shown > 100 for ok, w, shown in figures), figures
        # sort the comparisons table by its estimate column (Δ, with minus signs), both ways
        table = page.locator("table.sortable").filter(has_text="MDE (pts)").first
        header = table.locator("thead th", has_text="Δ (pts)").first
        col = header.evaluate("th => Array.prototype.indexOf.call(th.parentNode.children, th)")

        def column() -> list[float]:
            cells = table.locator(f"tbody tr td:nth-child({col + 1})").all_inner_texts()
            return [float(c.replace("\u2212", "-")) for c in cells]

        before = column()
        assert before != sorted(before)  # (the table's own order is by cell, not by Δ)
        header.click()
        assert column() == sorted(before) and header.get_attribute("aria-sort") == "ascending"
        header.click()
        assert column() == sorted(before, reverse=True) and header.get_attribute("aria-sort") == "descending"
        # it prints: the print style sheet lays it out on A4 pages
        pdf = page.pdf(format="A4")
        assert pdf[:4] == b"%PDF" and pdf.count(b"/Type /Page") > 3
        assert errors == []
        browser.close()
