"""The HTML renderer of a report :class:`~study.document.Document`: one self-contained page.

Everything is inside the file — styles, the figures (PNG as ``data:`` URIs) and a few lines of
script that sort a table by the column whose header is clicked (numbers by value: ``−``, ``%``,
``< 0.001``, ``[a, b]`` intervals by their first number) — so it opens offline, from an e-mail or
a CI artefact, with no CDN. A print style sheet lays it out on A4 like the PDF: page breaks
where the PDF takes them, table headers repeated, rows and figures never split.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from study import document as d
from study.document import esc

CSS = """
:root { --ink: #1d2430; --muted: #555; --rule: #222; --zebra: #f2f4f7; }
body { font: 15px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--ink);
       max-width: 60rem; margin: 2rem auto; padding: 0 1.2rem; }
h1 { font-size: 1.7rem; margin-bottom: .3rem; }
h2 { font-size: 1.3rem; margin-top: 2rem; border-bottom: 1px solid #ccd; padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
p.small { font-size: .85rem; color: var(--muted); }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .9em; }
nav.toc { font-size: .9rem; margin: 1rem 0 1.5rem; }
nav.toc a { margin-right: 1rem; white-space: nowrap; }
.table-wrap { overflow-x: auto; margin: .4rem 0 1rem; }
table { border-collapse: collapse; font-size: .8rem; border-top: 1.5px solid var(--rule);
        border-bottom: 1.5px solid var(--rule); }
th, td { padding: .15rem .45rem; text-align: left; vertical-align: top; }
thead th { border-bottom: 1px solid var(--rule); cursor: pointer; user-select: none; white-space: normal; }
thead th::after { content: " \\2195"; color: #999; font-weight: normal; }
thead th[aria-sort="ascending"]::after { content: " \\2191"; color: var(--ink); }
thead th[aria-sort="descending"]::after { content: " \\2193"; color: var(--ink); }
tbody tr:nth-child(even) { background: var(--zebra); }
figure { margin: .8rem 0 1.2rem; }
figure img { max-width: 100%; height: auto; display: block; }
.page-break { height: 0; }
@page { size: A4; margin: 1.8cm; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 10pt; }
  nav.toc, thead th::after { display: none; }
  .page-break { break-before: page; }
  h2, h3 { break-after: avoid; }
  table { font-size: 7.5pt; }
  thead { display: table-header-group; }
  tr, figure, img { break-inside: avoid; }
  .table-wrap { overflow: visible; }
  a { color: inherit; text-decoration: none; }
}
"""

# Sorting: plain DOM, no library. A cell's sort key is its first number (with the minus sign
# U+2212 read as "-", "< 0.001" as just below 0.001), else its text; empty cells ("–") sort last.
SCRIPT = """
(function () {
  function key(text) {
    var t = text.trim().replace(/\\u2212/g, "-");
    if (t === "" || t === "\\u2013" || t === "-") return null;
    var m = t.match(/^(<\\s*)?\\[?\\s*([-+]?(\\d+\\.?\\d*|\\.\\d+)(e[-+]?\\d+)?)/i);
    if (m) return parseFloat(m[2]) - (m[1] ? 1e-9 : 0);
    return t.toLowerCase();
  }
  function compare(a, b) {
    if (a === null) return b === null ? 0 : 1;
    if (b === null) return -1;
    if (typeof a === typeof b) return a < b ? -1 : a > b ? 1 : 0;
    return typeof a === "number" ? -1 : 1;
  }
  function sortBy(th) {
    var table = th.closest("table"), body = table.tBodies[0];
    var col = Array.prototype.indexOf.call(th.parentNode.children, th);
    var dir = th.getAttribute("aria-sort") === "ascending" ? "descending" : "ascending";
    Array.prototype.forEach.call(th.parentNode.children, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir);
    var rows = Array.prototype.slice.call(body.rows).map(function (r, i) {
      return { row: r, i: i, k: key(r.cells[col] ? r.cells[col].textContent : "") };
    });
    rows.sort(function (x, y) {
      var c = compare(x.k, y.k);
      if (x.k !== null && y.k !== null && dir === "descending") c = -c;
      return c || x.i - y.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
  }
  document.querySelectorAll("table.sortable thead th").forEach(function (th) {
    th.tabIndex = 0;
    th.addEventListener("click", function () { sortBy(th); });
    th.addEventListener("keydown", function (e) {
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(th); }
    });
  });
})();
"""


def _table(block: d.Table) -> str:
    head, rows = block.cells()
    out = ['<div class="table-wrap"><table class="sortable"><thead><tr>']
    out += [f'<th scope="col">{esc(h)}</th>' for h in head]
    out.append("</tr></thead><tbody>")
    for i, row in enumerate(rows):
        cells = (f"<td><strong>{esc(v)}</strong></td>" if (i, j) in block.bold else f"<td>{esc(v)}</td>"
                 for j, v in enumerate(row))
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _figure(block: d.Figure) -> str:
    data = base64.b64encode(block.png).decode("ascii")
    return (f'<figure style="width: {100 * block.width:.0f}%"><img src="data:image/png;base64,{data}" '
            f'alt="{esc(block.alt or "figure").replace(chr(34), "&quot;")}"></figure>')


def render_html(doc: d.Document) -> str:
    body, toc, n = [], [], 0
    for block in doc.blocks:
        if isinstance(block, d.Heading):
            if block.level == 0:
                body.append(f"<h1>{block.text}</h1>")
                body.append("<!--toc-->")
                continue
            n += 1
            tag = "h2" if block.level == 1 else "h3"
            body.append(f'<{tag} id="s{n}">{block.text}</{tag}>')
            if block.level == 1:
                toc.append(f'<a href="#s{n}">{block.text}</a>')
        elif isinstance(block, d.Paragraph):
            body.append(f'<p class="{block.style}">{block.text}</p>')
        elif isinstance(block, d.Table):
            body.append(_table(block))
        elif isinstance(block, d.Figure):
            body.append(_figure(block))
        elif isinstance(block, d.PageBreak):
            body.append('<div class="page-break"></div>')
        elif isinstance(block, d.Spacer):
            continue
        else:
            raise TypeError(f"no HTML rendering for {type(block).__name__}")
    html = "\n".join(body).replace("<!--toc-->", f'<nav class="toc">{" ".join(toc)}</nav>', 1)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{esc(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{html}\n"
            f"<script>{SCRIPT}</script>\n</body>\n</html>\n")


def render(doc: d.Document, path: Path) -> Path:
    """Write ``doc`` as one self-contained HTML file, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(render_html(doc), encoding="utf-8")
    tmp.replace(path)
    return path
