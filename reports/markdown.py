"""The run report: per-category image and pixel tables, image AUROC per defect type, and the
provenance that makes every number traceable."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from decodiff.reports.tables import category_table, defect_table, fmt, long_table, to_markdown


def write_report(
    out: Path,
    records: list[dict[str, Any]],
    samples: list[dict[str, Any]] | None,
    *,
    title: str,
    provenance: dict[str, Any],
    notes: list[str] | None = None,
) -> Path:
    """Write report.md and the tables as CSV into `out`; return the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    df = long_table(records)
    df.to_csv(out / "metrics.csv", index=False)
    image = category_table(df, "image")
    pixel = category_table(df, "pixel")
    image.to_csv(out / "image_table.csv")
    pixel.to_csv(out / "pixel_table.csv")
    lines = [f"# {title}", ""]
    for k, v in provenance.items():
        lines.append(f"- **{k}**: {v}")
    lines += ["", "## Image level (per category)", "", to_markdown(image), ""]
    lines += ["## Pixel level (per category)", "", to_markdown(pixel), ""]
    undefined = df[df["value"].isna()] if "value" in df else pd.DataFrame()
    if not undefined.empty and "reason" in undefined:
        lines += ["Values shown as — are not available:", ""]
        for _, r in undefined.iterrows():
            lines.append(f"- {r['category']} {r['level']} {r['metric']}: {r.get('reason') or 'undefined'}")
        lines.append("")
    if samples:
        defects = defect_table(samples)
        defects.to_csv(out / "defect_table.csv", index=False)
        lines += ["## Image AUROC per defect type", "", "| Category | Defect | Images | Image AUROC |", "|---|---|---|---|"]
        for _, r in defects.iterrows():
            lines.append(f"| {r['category']} | {r['defect']} | {r['images']} | {fmt(r['image AUROC'])} |")
        lines.append("")
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    lines += ["All values in percent. Mean = unweighted mean over categories (undefined values skipped).", ""]
    path = out / "report.md"
    tmp = out / ".report.md.tmp"
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path
