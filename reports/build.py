"""Reports from plain data: a run's report (its tables with bootstrap intervals, per-defect AUROC,
curves, qualitative grids, correction trajectories), and comparison reports of runs, seed groups,
sweep trials and the paper's published methods, in the paper's layouts:

- summary (main Tables 1, 2 and appendix Table 7): rows are runs and methods; image AUROC /
  AUPRC / F1max and pixel AUROC / AUPRC / F1max / AUPRO of the mean over categories;
- per category (appendix Tables 3-6): rows are categories and the mean, columns runs and methods,
  each cell "AUROC / AUPRC / F1max" (image) or "... / AUPRO" (pixel).
Best values are bold, second underlined; copied numbers are marked † and rows of gaps show
what is missing and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from decodiff.reports import published
from decodiff.reports.document import Bullets, Figure, Report, Row, Section, Table, Text, Value
from decodiff.reports.entries import (
    COPIED,
    Entry,
    entry_from_published,
    entry_from_runs,
    group_by_setting,
    inconsistency_notes,
    missing_entry,
    overlaps,
)
from decodiff.reports.figures import (
    ROLES,
    qualitative_figure,
    roc_pr_figure,
    roc_pr_points,
    sweep_figure,
    trajectory_figure,
)
from decodiff.reports.rundata import AGGREGATES, RunData

IMAGE_METRICS = ("auroc", "auprc", "f1max")
PIXEL_METRICS = ("auroc", "auprc", "f1max", "aupro")
LEVEL_METRICS = {"image": IMAGE_METRICS, "pixel": PIXEL_METRICS}
LABELS = {"auroc": "AUROC", "auprc": "AUPRC", "f1max": "F1max", "aupro": "AUPRO"}
SUMMARY_COLUMNS = [("image", m) for m in IMAGE_METRICS] + [("pixel", m) for m in PIXEL_METRICS]
SUMMARY_GROUPS = [("Image-level", 3), ("Pixel-level", 4)]
LEGEND = (
    f"{COPIED} copied from the paper (main Tables 1, 2, appendix Tables 3-7); every other number was "
    "measured here. Bold: best, underlined: second best per column (ranked on the printed value); "
    "— : not available."
)


BASELINE_NOTE = (
    "Baselines (rows marked baseline), scored in the same run on the same test images with the same "
    "VAE: vae-recon = the VAE's own reconstruction error |Decoder(Encoder(x)) - x|; latent-nn = the "
    "distance of each test latent 3x3 patch to its nearest normal training patch of the category "
    "(PatchCore's idea on the VAE's latents), image score the map's maximum; their maps take the run's "
    "blurs but the default clipping levels (0.4 / 0.2), whatever DeCo-Diff's. No bootstrap intervals "
    "for them. A method that does not clear them adds nothing on this data."
)


def dataset_title(dataset: str) -> str:
    return published.DATASETS.get(dataset, dataset)


# ---- tables ---------------------------------------------------------------------------------------
def summary_table(entries: list[Entry], dataset: str, name: str, caption: str, intervals: bool = True) -> Table:
    rows = []
    for e in entries:
        cells = [[e.value(("mean", level, metric))] for level, metric in SUMMARY_COLUMNS]
        rows.append(Row(e.label, cells, kind=e.kind))
    return Table(
        name,
        caption,
        "Method / run",
        [LABELS[m] for _, m in SUMMARY_COLUMNS],
        rows,
        groups=SUMMARY_GROUPS,
        rank="column",
        intervals=intervals,
    )


def category_order(dataset: str, entries: list[Entry]) -> list[str]:
    """The paper's order where it has the dataset (objects then textures...), else A-Z; the
    categories any entry has."""
    present = {c for e in entries for c in e.categories()}
    paper = list(published.category_groups(dataset))
    return [c for c in paper if c in present] + sorted(present - set(paper))


def category_comparison(entries: list[Entry], dataset: str, level: str, name: str, caption: str) -> Table:
    """Appendix Tables 3-6: categories down, runs and methods across, "a / b / c" per cell."""
    metrics = LEVEL_METRICS[level]
    rows = []
    for cat in category_order(dataset, entries) + ["mean"]:
        cells = [[e.value((cat, level, m)) for m in metrics] for e in entries]
        label = "Average" if cat == "mean" else cat
        rows.append(Row(label, cells, aggregate=cat == "mean"))
    return Table(
        name, caption, "Category", [e.label for e in entries], rows, subcolumns=[LABELS[m] for m in metrics], rank="row"
    )


def run_category_table(entry: Entry, dataset: str, level: str, name: str, caption: str) -> Table:
    """One run's per-category table: metrics across, each with its bootstrap 95% interval."""
    metrics = LEVEL_METRICS[level]
    rows = []
    cats = category_order(dataset, [entry])
    for cat in cats + [a for a in AGGREGATES if any(k[0] == a for k in entry.values)]:
        cells = [[entry.value((cat, level, m))] for m in metrics]
        rows.append(Row(cat, cells, aggregate=cat in AGGREGATES))
    return Table(name, caption, "Category", [LABELS[m] for m in metrics], rows, rank=None, intervals=True)


def defect_rows(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Image AUROC per defect type: each defect's images against the category's normal ones."""
    out = []
    cats = sorted({s["category"] for s in samples})
    for cat in cats:
        normal = np.array([s["score"] for s in samples if s["category"] == cat and s["label"] == 0])
        defects = sorted({s["defect"] for s in samples if s["category"] == cat and s["label"] == 1})
        for d in defects:
            anom = np.array(
                [s["score"] for s in samples if s["category"] == cat and s["label"] == 1 and s["defect"] == d]
            )
            value = None
            if normal.size:
                diff = anom[:, None] - normal[None, :]
                value = float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)
            out.append({"category": cat, "defect": d, "images": int(anom.size), "value": value})
    return out


def defect_table(samples: list[dict[str, Any]]) -> Table:
    rows = [
        Row(f"{r['category']} / {r['defect']}", [[Value(r["value"])], [Value(float(r["images"]), count=True)]])
        for r in defect_rows(samples)
    ]
    return Table(
        "defect_types",
        "Image AUROC per defect type (each defect's images against the category's normal images)",
        "Category / defect",
        ["Image AUROC", "Images"],
        rows,
        rank=None,
    )


# ---- figures ----------------------------------------------------------------------------------------
def image_curves(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for cat in sorted({s["category"] for s in samples}):
        pts = roc_pr_points(
            np.array([s["score"] for s in samples if s["category"] == cat]),
            np.array([s["label"] for s in samples if s["category"] == cat]),
        )
        if pts is not None:
            out[cat] = pts
    return out


def qualitative_items(q: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for i in range(len(q.get("keys", []))):
        item = {
            "key": str(q["keys"][i]),
            "role": str(q["roles"][i]),
            "score": float(q["scores"][i]),
            "input": q["inputs"][i],
            "reconstruction": q["recons"][i],
            "mask": q["masks"][i],
            "map": q["maps"][i],
            "has_mask": bool(q["has_masks"][i]) if "has_masks" in q else True,
            "score_of": str(q["score_of"]) if "score_of" in q else "map",
        }
        by_cat.setdefault(str(q["categories"][i]), []).append(item)
    for items in by_cat.values():
        items.sort(key=lambda it: ROLES.index(it["role"]) if it["role"] in ROLES else 9)
    return by_cat


def trajectory_entries(q: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    out = []
    for i in range(len(q.get("traj_keys", []))):
        key = str(q["traj_keys"][i])
        j = [str(k) for k in q["keys"]].index(key)
        e = {
            "category": str(q["categories"][j]),
            "key": key,
            "input": q["inputs"][j],
            "frames": list(q["traj_frames"][i]),
            "map": q["maps"][j],
        }
        if "traj_timesteps" in q:
            e["timesteps"] = [int(t) for t in q["traj_timesteps"]]
        out.append(e)
    return out


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in text).strip("-").lower() or "x"


def run_figures(run: RunData) -> tuple[list[Figure], list[str]]:
    """The run's figures, and a note for each that could not be drawn (and why)."""
    figs, notes = [], []
    if run.samples:
        curves = image_curves(run.samples)
        if curves:
            figs.append(
                Figure(
                    "roc_pr_image",
                    "Image-level ROC and precision-recall curves per category",
                    roc_pr_figure(curves, f"{run.name}: image level"),
                )
            )
    else:
        notes.append("Image-level curves: the run has no per-image scores (report_data/samples.csv).")
    if run.pixel_curves:
        figs.append(
            Figure(
                "roc_pr_pixel",
                "Pixel-level ROC and precision-recall curves per category (thresholds on the bootstrap's score grid)",
                roc_pr_figure(run.pixel_curves, f"{run.name}: pixel level"),
            )
        )
    elif run.has_pixel_metrics():
        notes.append("Pixel-level curves: the run has no pixel statistics (report_data/uncertainty.json).")
    if run.qualitative is not None and len(run.qualitative.get("keys", [])):
        for cat, items in sorted(qualitative_items(run.qualitative).items()):
            if any(it["has_mask"] for it in items):
                caption = (
                    f"{cat}: input, reconstruction, ground truth and predicted map for the best, typical and "
                    "worst localised anomalous test images"
                )
            else:
                caption = (
                    f"{cat}: input, reconstruction and predicted map of the anomalous test images with the "
                    "highest, median and lowest image score (no masks in this category: no ground-truth row, "
                    "and localisation cannot be ranked)"
                )
                notes.append(
                    f"{cat}: no ground-truth masks, so the examples are ranked by image score and shown "
                    "without a mask row; its pixel metrics are not available."
                )
            figs.append(Figure(f"qualitative_{_slug(cat)}", caption, qualitative_figure(cat, items)))
        traj = trajectory_entries(run.qualitative)
        if traj:
            figs.append(
                Figure(
                    "correction_trajectory",
                    "Correction trajectory: the predicted normal image after each "
                    "reverse step, one anomalous image per category",
                    trajectory_figure(traj),
                )
            )
    else:
        notes.append(
            "Qualitative grids and trajectories: not recorded for this run (report_data/qualitative.npz); "
            "`decodiff bench` records them."
        )
    return figs, notes


# ---- notes --------------------------------------------------------------------------------------
def gap_notes(entries: list[Entry]) -> list[str]:
    notes = []
    for e in entries:
        if e.kind == "missing":
            notes.append(f"{e.label}: {e.note}")
            continue
        if e.kind != "measured":
            continue
        pixel_missing = [k for k in e.reasons if k[1] == "pixel"]
        if pixel_missing and all(e.values.get(k, Value(None)).mean is None for k in e.values if k[1] == "pixel"):
            reasons = sorted({e.reasons[k] for k in pixel_missing})
            notes.append(f"{e.label}: no pixel metrics ({'; '.join(reasons)}).")
            others = {k: v for k, v in e.reasons.items() if k[1] != "pixel"}
        else:
            others = e.reasons
        for (cat, level, metric), why in sorted(others.items()):
            notes.append(f"{e.label}: {cat} {level} {LABELS.get(metric, metric)} not available ({why}).")
    return notes


def interval_notes(entries: list[Entry]) -> list[str]:
    """Pairs of measured rows whose mean-over-categories values lie within each other's
    uncertainty: their difference is not resolved by this test set (or these seeds)."""
    measured = [e for e in entries if e.kind == "measured"]
    notes = []
    for level, metric in SUMMARY_COLUMNS:
        for i, a in enumerate(measured):
            for b in measured[i + 1 :]:
                va, vb = a.value(("mean", level, metric)), b.value(("mean", level, metric))
                if overlaps(va, vb):
                    how = (
                        "95% bootstrap intervals overlap"
                        if va.low is not None and vb.low is not None
                        else "difference below the sum of their seed stds"
                    )
                    notes.append(
                        f"{level} {LABELS[metric]}: {a.label} ({100 * va.mean:.1f}) and {b.label} "
                        f"({100 * vb.mean:.1f}) differ by {100 * abs(va.mean - vb.mean):.1f} points; {how}, "
                        "so the difference is not resolved."
                    )
    return notes


def bootstrap_text(runs: list[RunData]) -> str | None:
    infos = [r.bootstrap for r in runs if r.bootstrap]
    if not infos:
        return None
    b = infos[0]
    return (
        f"Intervals: {b.get('interval', '95% percentile')} bootstrap over test images, {b.get('resamples')} resamples "
        f"(seed {b.get('seed')}), images resampled within each category and within its normal and anomalous "
        f"images; the mean row resamples every category at once. {b.get('note', '')}"
    ).strip()


# ---- reports --------------------------------------------------------------------------------------
def published_entries(dataset: str) -> list[Entry]:
    return [entry_from_published(dataset, m) for m in published.methods_for(dataset)]


def _published_note(requested: str | None, run_dataset: str) -> list[str]:
    if requested is None:
        return []
    if published.has_published(requested):
        src = published.SUMMARY_TABLES[requested][1]
        note = f"Published numbers: {dataset_title(requested)} ({src}"
        if (requested, "image") in published.CATEGORY_TABLES:
            note += (
                f"; per category: {published.CATEGORY_TABLES[(requested, 'image')][1]} and "
                f"{published.CATEGORY_TABLES[(requested, 'pixel')][1]}"
            )
        note += ")."
        if requested != run_dataset:
            note += (
                f" Measured on '{run_dataset}', compared with the paper's '{requested}' numbers as asked "
                "(--published-dataset): different data, so read the comparison as a sanity check only."
            )
        return [note]
    return [
        f"The paper publishes no numbers for dataset '{requested}' (it has {', '.join(published.DATASETS)}); "
        "the tables show the measured runs only."
    ]


def run_recipe(run: RunData) -> str | None:
    """The run's recipe from its config (a run made before recipes existed: custom)."""
    if not run.params:
        return None
    return run.params.get("recipe", "custom")


def protocol_notes(runs: list[RunData], methods: list[str]) -> list[str]:
    """Where a run's recipe, AUPRO protocol or image labels differ from those behind the published
    columns beside it (reports/published/column_protocols.csv), and the recipe's departures."""
    notes: list[str] = []
    for run in runs:
        recipe = run_recipe(run)
        for method in methods:
            notes += published.protocol_differences(
                method,
                recipe,
                run.params.get("metrics.aupro_protocol"),
                run.params.get("metrics.image_label", "metadata"),
                who=f"Run {run.name}",
            )
        line = dict(run.provenance).get("recipe", "")
        if recipe and recipe != "custom" and "departs in" in line:
            notes.append(f"Run {run.name} departs from recipe '{recipe}': {line.split('departs in', 1)[1].strip()}.")
    unknown = [
        m
        for m in methods
        if published.column_protocols().get(m) and published.column_protocols()[m].aupro_protocol == "unknown"
    ]
    if unknown:
        notes.append(
            f"The columns of {', '.join(unknown)} are copied from the paper's tables; how their AUPRO and "
            f"image labels were computed is not stated there."
        )
    return notes


def build_run_report(run: RunData, published_dataset: str | None = None) -> Report:
    """The report of one run; with `published_dataset`, the paper's methods on that dataset beside it."""
    entry = entry_from_runs(run.name, [run])
    meta = list(run.provenance)
    if run.run_id:
        meta.append(("MLflow run", run.run_id))
    sections: list[Section] = []
    base = [entry_from_runs(f"{m} (baseline)", [RunData(m, m, run.dataset, recs)]) for m, recs in run.baselines.items()]
    summary_rows = [entry] + base
    pub: list[Entry] = []
    if published_dataset and published.has_published(published_dataset):
        pub = published_entries(published_dataset)
    ds = published_dataset if pub else run.dataset
    summ = Section(
        "Summary: mean over categories",
        [
            summary_table(
                summary_rows + pub,
                ds,
                "summary",
                f"{dataset_title(run.dataset)}: mean over categories "
                "(the layout of the paper's Tables 1, 2 and 7), with 95% bootstrap intervals",
            )
        ],
    )
    summ.blocks += [Text(n) for n in _published_note(published_dataset, run.dataset)]
    if pub:
        summ.blocks.append(Text(LEGEND))
        summ.blocks += [Text(n) for n in protocol_notes([run], published.methods_for(published_dataset))]
    if base:
        summ.blocks.append(Text(BASELINE_NOTE))
    sections.append(summ)
    if base:
        sections.append(
            Section(
                "Beside simple baselines (per category)",
                [
                    category_comparison(
                        [entry] + base,
                        run.dataset,
                        level,
                        f"{level}_categories_baselines",
                        f"{'Image' if level == 'image' else 'Pixel'} level: this run and the baselines "
                        "on the same test images; each cell: " + " / ".join(LABELS[m] for m in LEVEL_METRICS[level]),
                    )
                    for level in ("image", "pixel")
                ],
            )
        )
    for level in ("image", "pixel"):
        title = "Image level (per category)" if level == "image" else "Pixel level (per category)"
        sec = Section(
            title,
            [
                run_category_table(
                    entry, run.dataset, level, f"{level}_categories", f"{title}: values with 95% bootstrap intervals"
                )
            ],
        )
        cat_pub = [e for e in pub if any(k[0] not in AGGREGATES and k[1] == level for k in e.values)]
        if cat_pub:
            sec.blocks.append(
                category_comparison(
                    [entry] + cat_pub,
                    ds,
                    level,
                    f"{level}_categories_published",
                    f"{title} beside the paper's {published.CATEGORY_TABLES[(ds, level)][1]}; "
                    "each cell: " + " / ".join(LABELS[m] for m in LEVEL_METRICS[level]),
                )
            )
        sections.append(sec)
    if run.samples:
        sections.append(Section("Image AUROC per defect type", [defect_table(run.samples)]))
    unc = bootstrap_text([run])
    figs, fig_notes = run_figures(run)
    if figs:
        sections.append(Section("Figures", list(figs)))
    notes = gap_notes([entry]) + list(run.notes) + fig_notes
    if pub:
        notes += inconsistency_notes(ds, published.methods_for(ds))
    if unc:
        notes.insert(0, unc)
    else:
        notes.insert(0, "No bootstrap intervals: the run recorded no per-image statistics.")
    notes.append(
        "All values in percent. Mean = unweighted mean over categories (undefined values skipped); "
        "pooled = all test images of all categories together."
    )
    sections.append(Section("Notes", [Bullets(notes)]))
    return Report(run.title, meta, sections)


@dataclass
class SweepTrial:
    trial: str
    overrides: dict[str, Any]
    status: str  # finished / failed / not run
    run: RunData | None = None
    error: str | None = None


@dataclass
class SweepData:
    name: str
    folder: str
    axes: list[str]
    trials: list[SweepTrial]
    description: str = ""


def build_comparison_report(
    title: str,
    meta: list[tuple[str, str]],
    runs: list[RunData],
    missing: list[tuple[str, str, str]] | None = None,
    compare_published: bool = False,
    published_dataset: str | None = None,
    sweep: SweepData | None = None,
) -> Report:
    """Runs grouped into settings (seeds averaged), per dataset: the summary table, the per-category
    tables, the paper's methods beside them when asked, notes on unresolved differences and gaps.
    `missing`: (label, dataset, reason) of runs that were asked for but could not be read."""
    missing = list(missing or [])
    sections: list[Section] = []
    datasets_known = list(dict.fromkeys([r.dataset for r in runs] + [m[1] for m in missing if m[1] != "unknown"]))
    datasets = datasets_known or (["unknown"] if missing else [])
    if sweep is not None:
        groups = _sweep_groups(sweep)
    else:
        groups = group_by_setting(runs)
    all_entries: list[Entry] = []
    if not datasets:
        sections.append(Section("Results", [Text("No runs to report.")]))
    for ds in datasets:
        entries = [entry_from_runs(label, members) for label, members in groups if members[0].dataset == ds]
        # gaps whose dataset is unknown sit with the first dataset's runs
        entries += [
            missing_entry(label, d, why)
            for label, d, why in missing
            if d == ds or (ds == datasets[0] and d not in datasets)
        ]
        all_entries += entries
        pub_ds = (published_dataset or ds) if compare_published else None
        pub = published_entries(pub_ds) if pub_ds and published.has_published(pub_ds) else []
        table_ds = pub_ds if pub else ds
        sec = Section(
            f"{dataset_title(ds)}: mean over categories",
            [
                summary_table(
                    entries + pub,
                    table_ds,
                    f"summary_{ds}",
                    f"{dataset_title(ds)}: mean over categories "
                    "(mean ± std over seeds where a setting has several runs; 95% bootstrap interval for a single run)",
                )
            ],
        )
        sec.blocks += [Text(n) for n in _published_note(pub_ds, ds)]
        if pub:
            sec.blocks.append(Text(LEGEND))
            ds_runs = [r for e in entries if e.kind != "missing" for r in e.runs]
            sec.blocks += [Text(n) for n in protocol_notes(ds_runs, published.methods_for(pub_ds))]
        notes = interval_notes(entries)
        if notes:
            sec.blocks.append(Bullets(notes))
        sections.append(sec)
        measured = [e for e in entries if e.kind != "missing"] + [e for e in entries if e.kind == "missing"]
        for level in ("image", "pixel"):
            cat_pub = [e for e in pub if any(k[0] not in AGGREGATES and k[1] == level for k in e.values)]
            cols = measured + cat_pub
            if not any(e.categories() for e in cols):
                continue
            sections.append(
                Section(
                    f"{dataset_title(ds)}: {level} level per category",
                    [
                        category_comparison(
                            cols,
                            table_ds,
                            level,
                            f"{level}_categories_{ds}",
                            f"{dataset_title(ds)}, {level} level per category; each cell: "
                            + " / ".join(LABELS[m] for m in LEVEL_METRICS[level]),
                        )
                    ],
                )
            )
        if sweep is not None:
            sections += _sweep_sections(sweep, ds, compare_published)
        if pub:
            sections[-1].blocks.append(Bullets(inconsistency_notes(table_ds, published.methods_for(table_ds))))
    runs_list = []
    for e in all_entries:
        if e.kind == "missing":
            runs_list.append(f"{e.label}: {e.note}")
        else:
            names = "; ".join(
                f"{r.name}"
                + (f" (MLflow {r.run_id})" if r.run_id else "")
                + (f", seed {r.params.get('run.seed')}" if r.params.get("run.seed") else "")
                for r in e.runs
            )
            runs_list.append(f"{e.label}: {names}")
    sections.append(Section("Runs", [Bullets(runs_list or ["none"])]))
    notes = gap_notes(all_entries)
    unc = bootstrap_text(runs)
    if unc:
        notes.insert(0, unc)
    notes.append("All values in percent. Mean = unweighted mean over categories (undefined values skipped).")
    sections.append(Section("Notes", [Bullets(notes)]))
    return Report(title, meta, sections)


# ---- sweeps ---------------------------------------------------------------------------------------
def _trial_label(overrides: dict[str, Any], axes: list[str]) -> str:
    parts = [f"{k}={_short(overrides.get(k))}" for k in axes if k not in ("run.seed", "data.dataset")]
    return ", ".join(parts) or "base"


def _short(v: Any) -> str:
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _setting(overrides: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in overrides.items() if k != "run.seed"}, sort_keys=True)


def _sweep_groups(sweep: SweepData) -> list[tuple[str, list[RunData]]]:
    groups: dict[str, list[RunData]] = {}
    labels: dict[str, str] = {}
    for t in sweep.trials:
        if t.run is None:
            continue
        key = _setting(t.overrides) + t.run.dataset
        groups.setdefault(key, []).append(t.run)
        labels[key] = _trial_label(t.overrides, sweep.axes)
    out = []
    for key, members in groups.items():
        label = labels[key]
        if len(members) > 1:
            label += f" ({len(members)} seeds)"
        out.append((label, members))
    return out


def sweep_missing(sweep: SweepData, default_dataset: str) -> list[tuple[str, str, str]]:
    out = []
    for t in sweep.trials:
        if t.run is None:
            ds = str(t.overrides.get("data.dataset", default_dataset))
            out.append(
                (
                    f"{t.trial} [{_trial_label(t.overrides, sweep.axes)}]",
                    ds,
                    f"trial {t.status}" + (f": {t.error}" if t.error else ""),
                )
            )
    return out


def _sweep_sections(sweep: SweepData, dataset: str, compare_published: bool) -> list[Section]:
    trials = [t for t in sweep.trials if t.run is not None and t.run.dataset == dataset]
    keys = [a for a in sweep.axes if a not in ("run.seed", "data.dataset")]
    sec = Section(f"{dataset_title(dataset)}: metrics against the swept settings")
    metrics = [f"{level} {LABELS[m]}" for level, m in SUMMARY_COLUMNS]
    for key in keys:
        others = [k for k in keys if k != key]
        series: dict[str, list[list[tuple[Any, float | None, float | None]]]] = {}
        for label, group in _by(trials, others).items():
            pts_by_x: dict[str, tuple[Any, list[RunData]]] = {}
            for t in group:
                x = t.overrides.get(key)
                pts_by_x.setdefault(_short(x), (x if not isinstance(x, (list, dict)) else _short(x), []))[1].append(
                    t.run
                )
            per_metric = []
            for level, metric in SUMMARY_COLUMNS:
                pts = []
                for x, members in pts_by_x.values():
                    vals = [v for v in (r.value("mean", level, metric) for r in members) if v is not None]
                    mean = float(np.mean(vals)) if vals else None
                    std = float(np.std(vals, ddof=1)) if len(vals) > 1 else None
                    pts.append((x, mean, std))
                per_metric.append(pts)
            series[label or "all trials"] = per_metric
        if series:
            sec.blocks.append(
                Figure(
                    f"sweep_{_slug(dataset)}_{_slug(key)}",
                    f"Mean over categories against {key} (error bars: std over seeds)",
                    sweep_figure(key, series, metrics, f"{sweep.name}: {key}"),
                )
            )
    out = [sec] if sec.blocks else []
    if compare_published:
        rows = []
        for t in trials:
            for ab in published.matching_ablations(t.overrides):
                ours = [Value(t.run.value("mean", level, m)) for level, m in SUMMARY_COLUMNS]
                paper = [Value(ab.values[f"{level}_{m}"]) for level, m in SUMMARY_COLUMNS]
                rows.append(Row(f"{t.trial}: {_trial_label(t.overrides, sweep.axes)}", [[v] for v in ours]))
                rows.append(Row(f"paper {ab.table}: {ab.label}{COPIED}", [[v] for v in paper], kind="published"))
        if rows:
            notes = [
                n
                for t in trials
                if published.matching_ablations(t.overrides)
                for n in published.protocol_differences(
                    published.PAPER,
                    run_recipe(t.run),
                    t.run.params.get("metrics.aupro_protocol"),
                    t.run.params.get("metrics.image_label", "metadata"),
                    who=f"Trial {t.trial}",
                )
            ]
            table = Table(
                f"ablations_{_slug(dataset)}",
                "Trials beside the paper's ablation row with the same setting (each trial, then the published row)",
                "Trial / paper row",
                [LABELS[m] for _, m in SUMMARY_COLUMNS],
                rows,
                groups=SUMMARY_GROUPS,
                rank=None,
            )
            out.append(
                Section(
                    f"{dataset_title(dataset)}: the paper's ablations",
                    [table, Text(LEGEND)] + ([Bullets(notes)] if notes else []),
                )
            )
    return out


def _by(trials: list[SweepTrial], keys: list[str]) -> dict[str, list[SweepTrial]]:
    out: dict[str, list[SweepTrial]] = {}
    for t in trials:
        label = ", ".join(f"{k}={_short(t.overrides.get(k))}" for k in keys)
        out.setdefault(label, []).append(t)
    return out
