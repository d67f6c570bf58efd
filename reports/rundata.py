"""Everything a report shows about one run, as plain data, and its on-disk form: the folder
`report_data/` that a run writes next to its results and logs to MLflow as artifacts. A report
made from this data is the same whether the data came from the run folder or from a tracking
server (the harness reads both; this module never touches MLflow).

report_data/
  run.json          name, run id, title, dataset, provenance, notes, bootstrap settings
  samples.csv       per test image: key, category, defect, label, image score
  baselines.json    records of the simple methods scored in the same run (each with "method")
  uncertainty.json  bootstrap intervals per (category, level, metric) and the pixel ROC/PR curves
  qualitative.npz   best / typical / worst images per category (input, reconstruction, mask, map)
                    and correction trajectories
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from decodiff.datasets.files import write_atomic

LEVELS = ("image", "pixel")
METRIC_ORDER = {"auroc": 0, "auprc": 1, "f1max": 2, "aupro": 3}
AGGREGATES = ("mean", "pooled")
RECORD_KEYS = ("dataset", "category", "level", "metric", "value", "reason")
FOLDER = "report_data"


def _clean_value(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def normalise_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results contract's fields only, in one canonical order (categories A-Z, then mean and
    pooled; image before pixel; AUROC, AUPRC, F1max, AUPRO): the same list whatever stored it."""
    out = []
    for r in records:
        rec = {
            "dataset": str(r["dataset"]),
            "category": str(r["category"]),
            "level": str(r["level"]),
            "metric": str(r["metric"]),
            "value": _clean_value(r.get("value")),
        }
        if rec["value"] is None:
            reason = r.get("reason")
            rec["reason"] = str(reason) if reason is not None and reason == reason else "not available"
        out.append(rec)

    def key(r: dict[str, Any]) -> tuple:
        cat = r["category"]
        return (
            r["dataset"],
            LEVELS.index(r["level"]) if r["level"] in LEVELS else 9,
            (AGGREGATES.index(cat) + 1) if cat in AGGREGATES else 0,
            cat,
            METRIC_ORDER.get(r["metric"], 9),
            r["metric"],
        )

    return sorted(out, key=key)


@dataclass
class RunData:
    name: str  # the run folder's name (also the MLflow run name)
    title: str
    dataset: str
    records: list[dict[str, Any]]
    run_id: str | None = None
    provenance: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)  # flattened config ("infer.gamma_p": "0.4")
    samples: list[dict[str, Any]] | None = None
    bootstrap: dict[str, Any] | None = None  # resamples, seed, interval, method
    intervals: list[dict[str, Any]] | None = None  # dataset, category, level, metric, low, high, std
    pixel_curves: dict[str, dict[str, list[float]]] | None = None  # category -> fpr, tpr, recall, precision
    qualitative: dict[str, np.ndarray] | None = None
    baselines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # method -> its records

    def __post_init__(self) -> None:
        self.records = normalise_records(self.records)

    def value(self, category: str, level: str, metric: str) -> float | None:
        for r in self.records:
            if r["category"] == category and r["level"] == level and r["metric"] == metric:
                return r["value"]
        return None

    def interval(self, category: str, level: str, metric: str) -> tuple[float, float] | None:
        for r in self.intervals or []:
            if r["category"] == category and r["level"] == level and r["metric"] == metric:
                if r.get("low") is None or r.get("high") is None:
                    return None
                return float(r["low"]), float(r["high"])
        return None

    def categories(self) -> list[str]:
        return sorted({r["category"] for r in self.records if r["category"] not in AGGREGATES})

    def has_pixel_metrics(self) -> bool:
        return any(r["level"] == "pixel" and r["value"] is not None for r in self.records)


# ---- the report_data folder ---------------------------------------------------------------------
def save_run_json(folder: Path, run: RunData) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": run.name,
        "run_id": run.run_id,
        "title": run.title,
        "dataset": run.dataset,
        "provenance": [list(p) for p in run.provenance],
        "notes": list(run.notes),
    }
    write_atomic(folder / "run.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")


def save_baselines(folder: Path, records: list[dict[str, Any]]) -> None:
    """The baselines' records (each with "method"); nothing when there are none."""
    if records:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / "baselines.json", json.dumps(records, sort_keys=True) + "\n")


def baselines_by_method(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        out.setdefault(str(r["method"]), []).append(r)
    return {m: normalise_records(rs) for m, rs in out.items()}


def save_samples(folder: Path, samples: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cols = ["key", "category", "defect", "label", "score"]
    df = pd.DataFrame(samples, columns=cols)
    write_atomic(folder / "samples.csv", df.to_csv(index=False, float_format="%.9g"))


def save_uncertainty(
    folder: Path,
    bootstrap: dict[str, Any],
    intervals: list[dict[str, Any]],
    pixel_curves: dict[str, dict[str, list[float]]],
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"bootstrap": bootstrap, "intervals": intervals, "pixel_curves": pixel_curves}
    write_atomic(folder / "uncertainty.json", json.dumps(doc, sort_keys=True) + "\n")


def save_qualitative(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_atomic(folder / "qualitative.npz", buf.getvalue())


def load_run_data(
    folder: Path, records: list[dict[str, Any]], params: dict[str, str] | None = None, run_id: str | None = None
) -> RunData:
    """A RunData from a report_data folder plus the run's records (which the caller reads from
    summary.json or from the tracking server's metrics)."""
    folder = Path(folder)
    meta_path = folder / "run.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{folder}: no run.json (not a report_data folder)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    run = RunData(
        name=meta["name"],
        title=meta["title"],
        dataset=meta["dataset"],
        records=records,
        run_id=run_id or meta.get("run_id"),
        provenance=[tuple(p) for p in meta.get("provenance", [])],
        notes=list(meta.get("notes", [])),
        params=dict(params or {}),
    )
    if (folder / "samples.csv").is_file():
        df = pd.read_csv(
            folder / "samples.csv", dtype={"key": str, "category": str, "defect": str}, keep_default_na=False
        )
        run.samples = [
            {"key": r.key, "category": r.category, "defect": r.defect, "label": int(r.label), "score": float(r.score)}
            for r in df.itertuples(index=False)
        ]
    if (folder / "uncertainty.json").is_file():
        doc = json.loads((folder / "uncertainty.json").read_text(encoding="utf-8"))
        run.bootstrap = doc.get("bootstrap")
        run.intervals = doc.get("intervals")
        run.pixel_curves = doc.get("pixel_curves")
    if (folder / "baselines.json").is_file():
        run.baselines = baselines_by_method(json.loads((folder / "baselines.json").read_text(encoding="utf-8")))
    if (folder / "qualitative.npz").is_file():
        with np.load(folder / "qualitative.npz", allow_pickle=False) as z:
            run.qualitative = {k: z[k] for k in z.files}
    return run
