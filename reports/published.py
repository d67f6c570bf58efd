"""The paper's published numbers as data (reports/published/*.csv, transcribed from the DeCo-Diff
paper's main Tables 1-4 and appendix Tables 1-7), read into the same long table our runs give.

Values are stored in percent as printed and returned as fractions in [0, 1], like our metrics.
A method's dataset summary (main Tables 1, 2; appendix Table 7) and its per-category values
(appendix Tables 3-6, whose "Average" rows become category "mean") are both available; the
known places where the paper disagrees with itself are listed in known_inconsistencies.csv
(tests/reports/test_published.py recomputes them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import pandas as pd

METRIC_COLUMNS = (
    "image_auroc",
    "image_auprc",
    "image_f1max",
    "pixel_auroc",
    "pixel_auprc",
    "pixel_f1max",
    "pixel_aupro",
)
METHODS = ("RD4AD", "UniAD", "SimpleNet", "DeSTSeg", "DiAD", "MoEAD", "GLAD", "MambaAD", "DeCo-Diff")
"""All compared methods, in the order of the paper's Tables 1 and 2."""
PAPER = "DeCo-Diff"
DATASETS = {"mvtec": "MVTec-AD", "visa": "VisA", "mpdd": "MPDD", "realiad": "Real-IAD"}
SUMMARY_TABLES = {
    "mvtec": ("table1_mvtec.csv", "Table 1"),
    "visa": ("table2_visa.csv", "Table 2"),
    "mpdd": ("appendix_table7_mpdd_realiad.csv", "appendix Table 7"),
    "realiad": ("appendix_table7_mpdd_realiad.csv", "appendix Table 7"),
}
CATEGORY_TABLES = {
    ("mvtec", "image"): ("appendix_table3_mvtec_image.csv", "appendix Table 3"),
    ("mvtec", "pixel"): ("appendix_table4_mvtec_pixel.csv", "appendix Table 4"),
    ("visa", "image"): ("appendix_table5_visa_image.csv", "appendix Table 5"),
    ("visa", "pixel"): ("appendix_table6_visa_pixel.csv", "appendix Table 6"),
}
ABLATION_TABLES = {
    "table3_strategy_steps.csv": "Table 3",
    "table4_discrepancy.csv": "Table 4",
    "appendix_table1_model_sizes.csv": "appendix Table 1",
    "appendix_table2_hyperparameters.csv": "appendix Table 2",
}
"""Ablations on MVTec-AD; each row's `overrides` names the config keys that reproduce it."""


def read_csv(name: str) -> pd.DataFrame:
    """One shipped CSV, as transcribed (percent)."""
    with resources.files("decodiff.reports").joinpath("published", name).open("r", encoding="utf-8") as fh:
        return pd.read_csv(fh, keep_default_na=True, dtype={"setting": str})


@lru_cache(maxsize=1)
def methods() -> pd.DataFrame:
    return read_csv("methods.csv").set_index("method")


def method_label(method: str) -> str:
    """`MambaAD (NeurIPS'24)`, as the paper's tables name them."""
    m = methods()
    return f"{method} ({m.loc[method, 'venue']})" if method in m.index else method


def _split(col: str) -> tuple[str, str]:
    level, metric = col.split("_", 1)
    return level, metric


@cache
def _summary_long(dataset: str) -> pd.DataFrame:
    name, source = SUMMARY_TABLES[dataset]
    df = read_csv(name)
    df = df[df["dataset"] == dataset]
    rows = []
    for _, r in df.iterrows():
        for col in METRIC_COLUMNS:
            level, metric = _split(col)
            rows.append(
                {
                    "dataset": dataset,
                    "method": r["method"],
                    "category": "mean",
                    "level": level,
                    "metric": metric,
                    "value": r[col] / 100.0,
                    "source": source,
                }
            )
    return pd.DataFrame(rows)


@cache
def _category_long(dataset: str, level: str) -> pd.DataFrame:
    name, source = CATEGORY_TABLES[(dataset, level)]
    df = read_csv(name)
    metrics = [c for c in df.columns if c not in ("category", "group", "method")]
    rows = []
    for _, r in df.iterrows():
        cat = "mean" if r["category"] == "average" else r["category"]
        for metric in metrics:
            rows.append(
                {
                    "dataset": dataset,
                    "method": r["method"],
                    "category": cat,
                    "level": level,
                    "metric": metric,
                    "value": r[metric] / 100.0,
                    "source": source,
                    "group": r["group"],
                }
            )
    return pd.DataFrame(rows)


def has_published(dataset: str) -> bool:
    return dataset in SUMMARY_TABLES


def summary(dataset: str) -> pd.DataFrame:
    """Long table (dataset, method, category='mean', level, metric, value, source) of a dataset's
    summary table; empty for a dataset the paper does not report."""
    if dataset not in SUMMARY_TABLES:
        return pd.DataFrame(columns=["dataset", "method", "category", "level", "metric", "value", "source"])
    return _summary_long(dataset).copy()


def per_category(dataset: str, level: str) -> pd.DataFrame:
    """Long table of appendix Tables 3-6 (MVTec-AD, VisA); empty elsewhere. The paper's
    'Average' row is category 'mean' (as printed, not recomputed)."""
    if (dataset, level) not in CATEGORY_TABLES:
        return pd.DataFrame(columns=["dataset", "method", "category", "level", "metric", "value", "source", "group"])
    return _category_long(dataset, level).copy()


def category_groups(dataset: str) -> dict[str, str]:
    """Category -> the paper's group (objects / textures; complex structure / multiple / single)."""
    df = per_category(dataset, "image")
    return {c: g for c, g in zip(df["category"], df["group"]) if c != "mean" and isinstance(g, str)}


def records(dataset: str, method: str) -> list[dict[str, Any]]:
    """One method's published numbers in the results contract (per category where the appendix
    has them, and the summary table's mean): what `--compare-published` places beside our runs."""
    out: list[dict[str, Any]] = []
    for level in ("image", "pixel"):
        cat = per_category(dataset, level)
        cat = cat[(cat["method"] == method) & (cat["category"] != "mean")]
        out += [
            {"dataset": dataset, "category": r["category"], "level": level, "metric": r["metric"], "value": r["value"]}
            for _, r in cat.iterrows()
        ]
    s = summary(dataset)
    s = s[s["method"] == method]
    out += [
        {"dataset": dataset, "category": "mean", "level": r["level"], "metric": r["metric"], "value": r["value"]}
        for _, r in s.iterrows()
    ]
    return out


def methods_for(dataset: str) -> list[str]:
    """The methods the paper reports on a dataset, in the order of its tables."""
    s = summary(dataset)
    present = set(s["method"])
    return [m for m in METHODS if m in present]


@dataclass(frozen=True)
class AblationRow:
    table: str  # "Table 3", "appendix Table 2", ...
    label: str  # the row as the paper names it
    overrides: dict[str, Any]  # config keys that reproduce the row ({}: not reproducible here)
    values: dict[str, float | None]  # "image_auroc" -> fraction (None: not legible in the paper)
    default: bool = False


@lru_cache(maxsize=1)
def ablations() -> tuple[AblationRow, ...]:
    """Every ablation row of Tables 3, 4 and appendix Tables 1, 2 (MVTec-AD, DeCo-Diff)."""
    rows: list[AblationRow] = []
    for name, table in ABLATION_TABLES.items():
        df = read_csv(name)
        for _, r in df.iterrows():
            if "strategy" in df:
                label = f"{r['strategy']}, {int(r['reverse_steps'])} steps"
            elif "discrepancy" in df:
                label = str(r["discrepancy"])
            elif "size" in df:
                label = f"UNet-{r['size']} ({int(r['params_millions'])}M)"
            else:
                label = f"{r['hyperparameter']} {r['setting']}"
            values = {c: (None if pd.isna(r[c]) else float(r[c]) / 100.0) for c in METRIC_COLUMNS}
            default = bool(r["default"]) if "default" in df else False
            rows.append(AblationRow(table, label, json.loads(r["overrides"]), values, default))
    return tuple(rows)


def matching_ablations(overrides: dict[str, Any]) -> list[AblationRow]:
    """The published ablation rows a trial reproduces: every key of the row set to the row's value
    in the trial's overrides (lists compared as lists, numbers as floats)."""

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return abs(float(a) - float(b)) < 1e-9
        return a == b

    return [
        row
        for row in ablations()
        if row.overrides and all(k in overrides and same(overrides[k], v) for k, v in row.overrides.items())
    ]


@dataclass(frozen=True)
class ColumnProtocol:
    """How a published column was produced: the recipe (README "Recipes"; "" for another method's
    numbers), the AUPRO protocol and the image-label rule ("unknown" where the paper does not say)."""

    method: str
    recipe: str
    aupro_protocol: str
    image_label: str
    note: str


@lru_cache(maxsize=1)
def column_protocols() -> dict[str, ColumnProtocol]:
    """Per method (published/column_protocols.csv): what lies behind its published column. The
    DeCo-Diff ablation rows (Tables 3, 4, appendix Tables 1, 2) share DeCo-Diff's, each departing
    from its recipe only in the row's own setting."""
    df = read_csv("column_protocols.csv").fillna("")
    return {
        r["method"]: ColumnProtocol(r["method"], r["recipe"], r["aupro_protocol"], r["image_label"], r["note"])
        for _, r in df.iterrows()
    }


def protocol_differences(
    method: str, recipe: str | None, aupro_protocol: str | None, image_label: str | None, who: str = "this run"
) -> list[str]:
    """Sentences saying where a run's recipe, AUPRO protocol or image-label rule differs from those
    behind `method`'s published column (empty when they agree or the column's are unknown)."""
    col = column_protocols().get(method)
    if col is None:
        return []
    out = []
    if col.recipe and recipe and recipe != col.recipe:
        out.append(
            f"{who} used recipe '{recipe}', while the published {method} column comes from recipe "
            f"'{col.recipe}' (README \"Recipes\"): the difference is not only the data or the method."
        )
    if col.aupro_protocol != "unknown" and aupro_protocol and aupro_protocol != col.aupro_protocol:
        out.append(
            f"{who} scored AUPRO with protocol '{aupro_protocol}', while the published {method} AUPRO "
            f"comes from '{col.aupro_protocol}' (metrics.aupro_protocol): the AUPRO values are not computed "
            f"the same way."
        )
    if col.image_label != "unknown" and image_label and image_label != col.image_label:
        out.append(
            f"{who} labels images by '{image_label}', while the published {method} image metrics use "
            f"'{col.image_label}' (metrics.image_label)."
        )
    return out


def known_inconsistencies() -> pd.DataFrame:
    """Where the paper's own numbers disagree (an average row against its categories, a main
    table against the appendix), by name; reports footnote these numbers."""
    return read_csv("known_inconsistencies.csv")
