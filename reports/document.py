"""A report as plain data: sections of text, tables and figures, rendered alike to Markdown,
HTML, LaTeX and CSV (markdown.py, html.py, latex.py, write.py).

A table cell holds one or more values (the paper's "AUROC / AUPRC / F1max" cells); each value
may carry a standard deviation across seeds, a bootstrap interval, and a footnote mark. Best and
second best are ranked per column (runs and methods as rows, Tables 1, 2, 7) or per row
(categories as rows, methods as columns, appendix Tables 3-6) on the displayed numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from decodiff.reports.highlight import ranks

Kind = Literal["measured", "published", "missing"]
MISSING = "—"


@dataclass(frozen=True)
class Value:
    mean: float | None  # a fraction in [0, 1]; None: not available
    std: float | None = None  # across seeds (n > 1)
    n: int = 1  # seeds (runs) the mean is over
    low: float | None = None  # bootstrap 95% interval
    high: float | None = None
    mark: str = ""  # footnote mark shown after the number
    count: bool = False  # a count (printed as an integer), not a fraction


@dataclass
class Row:
    label: str
    cells: list[list[Value]]  # one list per column; several values print as "a / b / c"
    kind: Kind = "measured"
    aggregate: bool = False  # the mean row (printed bold)


@dataclass
class Table:
    name: str  # file stem for tables/<name>.csv|.tex
    caption: str
    index_name: str
    columns: list[str]
    rows: list[Row]
    subcolumns: list[str] | None = None  # names of the values inside one cell
    groups: list[tuple[str, int]] | None = None  # header groups over columns: (label, span)
    rank: Literal["column", "row"] | None = "column"
    intervals: bool = False  # print "value [low, high]"
    notes: list[str] = field(default_factory=list)

    def headers(self) -> list[str]:
        """One name per printed column (a group's name joined in: "Image AUROC")."""
        header = list(self.columns)
        if self.subcolumns and len(header) == 1:  # several columns: the caption names the cell's values
            header = [" / ".join(self.subcolumns)]
        if self.groups:
            names, i = [], 0
            for label, n in self.groups:
                names += [f"{label.split('-')[0]} {h}" for h in header[i : i + n]]
                i += n
            header = names + header[i:]
        return header

    def value_names(self) -> list[str]:
        """One name per value (cells with several values give one name each): CSV columns."""
        names = []
        for c in self.headers() if not self.subcolumns else self.columns:
            if self.subcolumns:
                names += [f"{c} {s}" if len(self.columns) > 1 else s for s in self.subcolumns]
            else:
                names.append(c)
        return names

    def marks(self) -> list[list[list[int | None]]]:
        """Rank (1 best, 2 second, None) of every value, rows x columns x values."""
        out = [[[None] * len(c) for c in r.cells] for r in self.rows]
        if self.rank == "column":
            for c in range(len(self.columns)):
                k_max = max((len(r.cells[c]) for r in self.rows), default=0)
                for k in range(k_max):
                    vals = [r.cells[c][k].mean if k < len(r.cells[c]) else None for r in self.rows]
                    for i, rk in enumerate(ranks(vals)):
                        if k < len(out[i][c]):
                            out[i][c][k] = rk
        elif self.rank == "row":
            for i, r in enumerate(self.rows):
                k_max = max((len(c) for c in r.cells), default=0)
                for k in range(k_max):
                    vals = [c[k].mean if k < len(c) else None for c in r.cells]
                    for c, rk in enumerate(ranks(vals)):
                        if k < len(out[i][c]):
                            out[i][c][k] = rk
        return out


@dataclass
class Figure:
    name: str  # figures/<name>.png
    caption: str
    png: bytes


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


Block = Table | Figure | Text | Bullets


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    meta: list[tuple[str, str]]  # provenance: shown as a list under the title
    sections: list[Section]

    def tables(self) -> list[Table]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Table)]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def percent(value: float | None, digits: int = 1) -> str:
    """Percent with one decimal as in the paper; '—' marks a value that is not available."""
    if value is None or value != value:
        return MISSING
    return f"{100.0 * value:.{digits}f}"


def value_text(v: Value, intervals: bool = False) -> tuple[str, str]:
    """(the number, what follows it: ± std over seeds, [low, high] interval, footnote mark)."""
    main = str(int(v.mean)) if v.count and v.mean is not None else percent(v.mean)
    extra = ""
    if v.mean is not None and v.std is not None and v.n > 1:
        extra += f" ± {100.0 * v.std:.1f}"
    if intervals and v.mean is not None and v.low is not None and v.high is not None:
        extra += f" [{percent(v.low)}, {percent(v.high)}]"
    return main, extra + v.mark
