"""Writing a report folder: report.md, report.html (self-contained), tables/<name>.csv and
.tex, tables.tex (all tables), figures/<name>.png; and a run's plain tables. Every file is
written under a temporary name and renamed, so a killed run leaves no half-written file."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from decodiff.datasets.files import write_atomic
from decodiff.reports.build import build_run_report, defect_rows
from decodiff.reports.document import Report, Table
from decodiff.reports.html import render_html
from decodiff.reports.latex import render_latex, table_latex
from decodiff.reports.markdown import render_markdown
from decodiff.reports.rundata import RunData
from decodiff.reports.tables import category_table, long_table


def table_frame(table: Table) -> pd.DataFrame:
    """The table's numbers for machines: percent, full precision, one column per value, with the
    seed std and interval bounds where there are any, and whether a row was measured or copied."""
    names = table.value_names()
    rows = []
    for row in table.rows:
        rec: dict[str, object] = {table.index_name: row.label, "source": row.kind}
        flat = [v for cell in row.cells for v in (cell if cell else [None])]
        for name, v in zip(names, flat):
            if v is not None and v.count:
                rec[name] = v.mean
                continue
            rec[name] = None if v is None or v.mean is None else round(100.0 * v.mean, 6)
            if v is not None and v.std is not None and v.n > 1:
                rec[f"{name} std"] = round(100.0 * v.std, 6)
                rec[f"{name} seeds"] = v.n
            if v is not None and v.low is not None:
                rec[f"{name} low"] = round(100.0 * v.low, 6)
                rec[f"{name} high"] = round(100.0 * v.high, 6)
        rows.append(rec)
    return pd.DataFrame(rows)


def write_run_tables(
    out: Path,
    records: list[dict],
    samples: list[dict] | None,
    baseline_records: list[dict] | None = None,
    method: str = "deco-diff",
) -> None:
    """The run folder's plain tables (fractions, as the metrics give them): metrics.csv (the long
    table), image_table.csv and pixel_table.csv (categories x metrics), defect_table.csv, and
    baselines.csv (the long table of every method of the run, with a `method` column)."""
    df = long_table(records)
    write_atomic(out / "metrics.csv", df.to_csv(index=False))
    for level in ("image", "pixel"):
        write_atomic(out / f"{level}_table.csv", category_table(df, level).to_csv())
    if baseline_records:
        own = [{"method": method, **r} for r in records]
        both = long_table(
            own + [{"method": r["method"], **{k: v for k, v in r.items() if k != "method"}} for r in baseline_records]
        )
        write_atomic(out / "baselines.csv", both.to_csv(index=False))
    if samples:
        rows = pd.DataFrame(defect_rows(samples)).rename(columns={"value": "image AUROC"})
        write_atomic(out / "defect_table.csv", rows.to_csv(index=False))


def write_report_files(report: Report, out: Path) -> Path:
    """Write every format of `report` into `out`; returns report.md's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for table in report.tables():
        write_atomic(out / "tables" / f"{table.name}.csv", table_frame(table).to_csv(index=False))
        write_atomic(out / "tables" / f"{table.name}.tex", table_latex(table) + "\n")
    write_atomic(out / "tables.tex", render_latex(report))
    for fig in report.figures():
        write_atomic(out / "figures" / f"{fig.name}.png", fig.png)
    write_atomic(out / "report.html", render_html(report))
    path = out / "report.md"
    write_atomic(path, render_markdown(report))
    return path


def write_report(
    out: Path | str,
    records: list[dict],
    samples: list[dict] | None,
    *,
    title: str,
    provenance: dict,
    notes: list[str] | None = None,
) -> Path:
    """A run report from records and per-image samples alone (no intervals or figures beyond the
    image curves): for `decodiff score` and other callers without a run's report data."""
    out = Path(out)
    kept = [{k: s[k] for k in ("key", "category", "defect", "label", "score")} for s in samples or []]
    run = RunData(
        name=out.name,
        title=title,
        dataset=str(records[0]["dataset"]) if records else "unknown",
        records=records,
        provenance=[(k, str(v)) for k, v in provenance.items()],
        notes=list(notes or []),
        samples=kept or None,
    )
    write_run_tables(out, records, samples)
    return write_report_files(build_run_report(run), out)
