"""Markdown rendering of a report: tables with the best value in bold and the second underlined
(`<ins>`, which GitHub and most renderers show underlined), figures as links to figures/*.png."""

from __future__ import annotations

from decodiff.reports.document import Bullets, Figure, Report, Table, Text, value_text
from decodiff.reports.highlight import BEST, SECOND


def _cell(table: Table, values, marks) -> str:
    parts = []
    for v, rk in zip(values, marks):
        main, extra = value_text(v, table.intervals)
        if rk == BEST:
            main = f"**{main}**"
        elif rk == SECOND:
            main = f"<ins>{main}</ins>"
        parts.append(main + extra)
    return " / ".join(parts) if parts else "—"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(table: Table) -> str:
    header = table.headers()
    lines = [f"*{_escape(table.caption)}*", ""] if table.caption else []
    lines.append("| " + " | ".join(_escape(h) for h in [table.index_name] + header) + " |")
    lines.append("|" + "---|" * (len(header) + 1))
    marks = table.marks()
    for row, rmarks in zip(table.rows, marks):
        label = _escape(row.label)
        if row.aggregate:
            label = f"**{label}**"
        cells = [_cell(table, vals, m) for vals, m in zip(row.cells, rmarks)]
        lines.append("| " + " | ".join([label] + cells) + " |")
    for note in table.notes:
        lines += ["", _escape(note)]
    return "\n".join(lines)


def render_markdown(report: Report, figure_dir: str = "figures") -> str:
    lines = [f"# {report.title}", ""]
    for k, v in report.meta:
        lines.append(f"- **{k}**: {v}")
    if report.meta:
        lines.append("")
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines += [table_markdown(block), ""]
            elif isinstance(block, Figure):
                lines += [f"![{block.caption}]({figure_dir}/{block.name}.png)", "", f"*{block.caption}*", ""]
            elif isinstance(block, Text):
                lines += [block.text, ""]
            elif isinstance(block, Bullets):
                lines += [f"- {item}" for item in block.items] + [""]
    return "\n".join(lines)
