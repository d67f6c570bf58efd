"""Per-category tables of one run as data frames (the run folder's image_table.csv and
pixel_table.csv), from the long table of metric records; rendering lives in document.py.

The long table has one row per (dataset, category, level, metric) with its value (None
where undefined, with a reason). Image table: AUROC / AUPRC / F1max; pixel table: AUROC /
AUPRC / F1max / AUPRO; categories in order, then the mean row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

IMAGE_METRICS = ("auroc", "auprc", "f1max")
PIXEL_METRICS = ("auroc", "auprc", "f1max", "aupro")
LABELS = {"auroc": "AUROC", "auprc": "AUPRC", "f1max": "F1max", "aupro": "AUPRO"}
AGGREGATES = ("mean", "pooled")


def long_table(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    df = pd.DataFrame(list(records))
    for col in ("dataset", "category", "level", "metric", "value"):
        if col not in df:
            df[col] = None
    return df


def category_table(df: pd.DataFrame, level: str, aggregates: tuple[str, ...] = ("mean",)) -> pd.DataFrame:
    """Rows: categories then aggregates; columns: the level's metrics; values in [0, 1] or NaN."""
    metrics = IMAGE_METRICS if level == "image" else PIXEL_METRICS
    sub = df[(df["level"] == level) & (df["metric"].isin(metrics))]
    if sub.empty:
        return pd.DataFrame(columns=[LABELS[m] for m in metrics])
    wide = sub.pivot_table(index="category", columns="metric", values="value", aggfunc="first", dropna=False)
    wide = wide.reindex(columns=list(metrics))
    cats = [c for c in dict.fromkeys(sub["category"]) if c not in AGGREGATES]
    order = sorted(cats) + [a for a in aggregates if a in wide.index]
    wide = wide.reindex(order)
    wide.columns = [LABELS[m] for m in metrics]
    wide.index.name = "category"
    return wide.astype(float)


def fmt(value: float, digits: int = 1) -> str:
    """Percent with one decimal as in the paper; '—' marks a value that is not available."""
    return "—" if value is None or pd.isna(value) else f"{100 * value:.{digits}f}"
