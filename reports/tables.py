"""Per-category tables in the paper's layout, from the long table of metric records.

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


def defect_table(samples: list[dict[str, Any]]) -> pd.DataFrame:
    """Image AUROC per defect type: each defect's images against the category's normal ones."""
    from sklearn.metrics import roc_auc_score

    rows = []
    df = pd.DataFrame(samples)
    if df.empty:
        return pd.DataFrame(columns=["category", "defect", "images", "image AUROC"])
    for cat, g in df.groupby("category", sort=True):
        normal = g[g["label"] == 0]
        for defect, d in g[g["label"] == 1].groupby("defect", sort=True):
            value = float("nan")
            if len(normal):
                y = [0] * len(normal) + [1] * len(d)
                value = roc_auc_score(y, list(normal["score"]) + list(d["score"]))
            rows.append({"category": cat, "defect": defect, "images": len(d), "image AUROC": value})
    return pd.DataFrame(rows)


def fmt(value: float, digits: int = 1) -> str:
    """Percent with one decimal as in the paper; '—' marks a value that is not available."""
    return "—" if value is None or pd.isna(value) else f"{100 * value:.{digits}f}"


def to_markdown(table: pd.DataFrame, digits: int = 1, index_name: str = "Category") -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join([index_name] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in table.iterrows():
        name = f"**{idx}**" if idx in AGGREGATES else str(idx)
        lines.append("| " + " | ".join([name] + [fmt(row[c], digits) for c in cols]) + " |")
    return "\n".join(lines)
