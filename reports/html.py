"""One self-contained HTML file per report: tables and figures inline (PNG as data: URLs), no
external resources, so the file can be mailed or attached as it is."""

from __future__ import annotations

import base64
import html

from decodiff.reports.document import Bullets, Figure, Report, Table, Text, value_text
from decodiff.reports.highlight import BEST, SECOND

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #1d1d1f; background: #ffffff; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #d0d7de; padding-bottom: .2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .86em; }
th, td { border: 1px solid #d0d7de; padding: .25em .55em; text-align: center; white-space: nowrap; }
th { background: #f3f5f7; }
td.label { text-align: left; }
tr.published td { color: #57606a; }
tr.missing td { color: #a40e26; background: #fff5f5; }
tr.aggregate td { font-weight: 600; background: #fafbfc; }
caption { caption-side: top; text-align: left; font-style: italic; padding: .3em 0; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #e5e7eb; }
figcaption { font-style: italic; font-size: .9em; color: #444; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; font-size: .9em; }
dl.meta dt { font-weight: 600; } dl.meta dd { margin: 0; word-break: break-all; }
p.note { font-size: .85em; color: #444; }
"""


def _cell(table: Table, values, marks) -> str:
    parts = []
    for v, rk in zip(values, marks):
        main, extra = value_text(v, table.intervals)
        main = html.escape(main)
        if rk == BEST:
            main = f"<b>{main}</b>"
        elif rk == SECOND:
            main = f"<u>{main}</u>"
        parts.append(main + html.escape(extra))
    return " / ".join(parts) if parts else "—"


def table_html(table: Table) -> str:
    out = [f'<table id="{html.escape(table.name)}">']
    if table.caption:
        out.append(f"<caption>{html.escape(table.caption)}</caption>")
    header = list(table.columns)
    if table.subcolumns and len(header) == 1:
        header = [" / ".join(table.subcolumns)]
    out.append("<thead>")
    if table.groups:
        out.append(
            "<tr><th></th>"
            + "".join(f'<th colspan="{n}">{html.escape(label)}</th>' for label, n in table.groups)
            + "</tr>"
        )
    out.append(
        "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in [table.index_name] + header) + "</tr></thead><tbody>"
    )
    for row, rmarks in zip(table.rows, table.marks()):
        cls = " ".join(c for c in (row.kind, "aggregate" if row.aggregate else "") if c)
        cells = "".join(f"<td>{_cell(table, v, m)}</td>" for v, m in zip(row.cells, rmarks))
        out.append(f'<tr class="{cls}"><td class="label">{html.escape(row.label)}</td>{cells}</tr>')
    out.append("</tbody></table>")
    for note in table.notes:
        out.append(f'<p class="note">{html.escape(note)}</p>')
    return "\n".join(out)


def figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    return (
        f'<figure id="fig-{html.escape(fig.name)}"><img alt="{html.escape(fig.caption)}" '
        f'src="data:image/png;base64,{data}"><figcaption>{html.escape(fig.caption)}</figcaption></figure>'
    )


def render_html(report: Report) -> str:
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(report.title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1>",
    ]
    if report.meta:
        out.append(
            '<dl class="meta">'
            + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in report.meta)
            + "</dl>"
        )
    for section in report.sections:
        out.append(f"<h2>{html.escape(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                out.append(table_html(block))
            elif isinstance(block, Figure):
                out.append(figure_html(block))
            elif isinstance(block, Text):
                out.append(f"<p>{html.escape(block.text)}</p>")
            elif isinstance(block, Bullets):
                out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block.items) + "</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
