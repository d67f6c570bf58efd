"""Rows of a comparison: one run, several seeds of one setting (mean ± std), a published method
(copied from the paper), or a run that was asked for but is missing (a row of gaps)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from decodiff.reports import published
from decodiff.reports.document import Kind, Value
from decodiff.reports.rundata import AGGREGATES, RunData

Key = tuple[str, str, str]  # (category, level, metric)
COPIED = "†"
INCONSISTENT = "‡"

# Config keys that do not change what a run measures: runs that differ only in these (and the
# seed) are repetitions of one setting.
NOT_SETTINGS = (
    "run.seed",
    "run.name",
    "run.out_dir",
    "run.cache_dir",
    "run.device",
    "run.threads",
    "tracking.",
    "data.shards",
    "data.root",
    "data.num_workers",
    "data.shuffle_buffer",
    "infer.batch_size",
    "infer.save_maps",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.log_every",
    "train.reuse",
    "metrics.bootstrap",
)


@dataclass
class Entry:
    label: str
    kind: Kind
    dataset: str
    values: dict[Key, Value] = field(default_factory=dict)
    reasons: dict[Key, str] = field(default_factory=dict)  # why a value is missing
    runs: list[RunData] = field(default_factory=list)
    note: str = ""  # e.g. why the whole entry is missing

    def value(self, key: Key) -> Value:
        return self.values.get(key, Value(None))

    def categories(self) -> list[str]:
        return sorted({k[0] for k in self.values if k[0] not in AGGREGATES})

    @property
    def seeds(self) -> int:
        return len(self.runs)


def entry_from_runs(label: str, runs: list[RunData]) -> Entry:
    """One setting: a single run keeps its bootstrap intervals; several runs (seeds) give mean and
    std (ddof 1) of every value defined in at least one of them."""
    dataset = runs[0].dataset
    e = Entry(label, "measured", dataset, runs=list(runs))
    keys: dict[Key, None] = {}
    for run in runs:
        for r in run.records:
            keys[(r["category"], r["level"], r["metric"])] = None
    for key in keys:
        vals = [run.value(*key) for run in runs]
        defined = [v for v in vals if v is not None]
        if not defined:
            reasons = sorted(
                {
                    r.get("reason", "not available")
                    for run in runs
                    for r in run.records
                    if (r["category"], r["level"], r["metric"]) == key and r["value"] is None
                }
            )
            e.values[key] = Value(None)
            e.reasons[key] = "; ".join(reasons) or "not available"
            continue
        if len(runs) == 1:
            ci = runs[0].interval(*key)
            e.values[key] = Value(defined[0], low=ci[0] if ci else None, high=ci[1] if ci else None)
        else:
            std = float(np.std(defined, ddof=1)) if len(defined) > 1 else None
            e.values[key] = Value(float(np.mean(defined)), std=std, n=len(defined))
    return e


def entry_from_published(dataset: str, method: str) -> Entry:
    """A method's numbers as the paper prints them, marked as copied; a number the paper itself
    contradicts (known_inconsistencies.csv) carries a second mark."""
    label = f"{published.method_label(method)}{COPIED}"
    e = Entry(label, "published", dataset)
    flagged = _flagged(dataset, method)
    for r in published.records(dataset, method):
        key = (r["category"], r["level"], r["metric"])
        mark = INCONSISTENT if (r["category"] == "mean" and (r["level"], r["metric"]) in flagged) else ""
        e.values[key] = Value(r["value"], mark=mark)
    return e


def _flagged(dataset: str, method: str) -> set[tuple[str, str]]:
    known = published.known_inconsistencies()
    rows = known[
        (known["dataset"] == dataset) & (known["method"] == method) & known["check"].isin(["average", "summary"])
    ]
    out = set()
    for cells in rows["cells"]:
        for cell in str(cells).split(";"):
            level, metric = cell.split("_", 1)
            out.add((level, metric))
    return out


def inconsistency_notes(dataset: str, methods: list[str]) -> list[str]:
    known = published.known_inconsistencies()
    rows = known[
        (known["dataset"] == dataset) & known["method"].isin(methods) & known["check"].isin(["average", "summary"])
    ]
    return [f"{INCONSISTENT} {r['name']} ({r['table']}): {r['note']}." for _, r in rows.iterrows()]


def missing_entry(label: str, dataset: str, reason: str) -> Entry:
    return Entry(f"{label} (missing)", "missing", dataset, note=reason)


# ---- grouping repeated runs ------------------------------------------------------------------------
def setting_of(run: RunData) -> dict[str, str]:
    """The run's config without the keys that do not change what it measures (seed, paths...)."""
    return {
        k: v
        for k, v in run.params.items()
        if not any(k == n or (n.endswith(".") and k.startswith(n)) for n in NOT_SETTINGS)
    }


def group_by_setting(runs: list[RunData]) -> list[tuple[str, list[RunData]]]:
    """Runs of the same setting and dataset (differing only in seed and paths) grouped, labelled
    by the keys in which the groups differ (or by run name when they differ in none)."""
    groups: dict[str, list[RunData]] = {}
    settings: dict[str, dict[str, str]] = {}
    for run in runs:
        s = setting_of(run)
        key = json.dumps([run.dataset, s], sort_keys=True)
        groups.setdefault(key, []).append(run)
        settings[key] = s
    varying = sorted({k for s in settings.values() for k in s if len({t.get(k) for t in settings.values()}) > 1})
    out = []
    for key, members in groups.items():
        s = settings[key]
        label = ", ".join(f"{k}={s.get(k)}" for k in varying if k not in ("data.dataset",)) if varying else ""
        if not label:
            label = members[0].name if len(members) == 1 else _common_prefix([m.name for m in members])
        if len(members) > 1:
            seeds = sorted({m.params.get("run.seed", "?") for m in members})
            label += f" ({len(members)} runs, seeds {', '.join(seeds)})"
        out.append((label, sorted(members, key=lambda m: m.name)))
    return out


def _common_prefix(names: list[str]) -> str:
    prefix = names[0]
    for n in names[1:]:
        while not n.startswith(prefix):
            prefix = prefix[:-1]
    return prefix.rstrip("-_") or names[0]


def overlaps(a: Value, b: Value) -> bool | None:
    """Whether two values are within each other's uncertainty: bootstrap intervals overlap, or
    (seed groups) the difference is below the sum of the stds. None when neither is known."""
    if a.mean is None or b.mean is None:
        return None
    if a.low is not None and b.low is not None:
        return a.low <= b.high and b.low <= a.high
    if a.std is not None and b.std is not None:
        return abs(a.mean - b.mean) < a.std + b.std
    return None
