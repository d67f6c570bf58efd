"""A sweep's results: the combined long table of all trials (one record per trial, split, metric
and category), the comparison report with validation and test side by side, and MLflow (one
parent run per sweep, one child run per trial)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from decodiff.datasets.files import write_atomic, write_json_atomic
from decodiff.harness.config import Config
from decodiff.harness.provenance import code_version
from decodiff.harness.sweep.spec import SweepPlan, TrialPlan
from decodiff.harness.sweep.trial import mean_value, objective_value
from decodiff.harness.tracking import log_run, tracking_uri
from decodiff.reports.tables import fmt

# MLflow is imported where the sweep's runs are logged (0.8 s): a sweep without tracking goes without it.

HEADLINE = ("image_auroc", "image_auprc", "image_f1max", "pixel_auroc", "pixel_auprc", "pixel_f1max", "pixel_aupro")
SHORT = {
    "image_auroc": "I-AUROC",
    "image_auprc": "I-AUPRC",
    "image_f1max": "I-F1",
    "pixel_auroc": "P-AUROC",
    "pixel_auprc": "P-AUPRC",
    "pixel_f1max": "P-F1",
    "pixel_aupro": "AUPRO",
}


def trial_records(trial: TrialPlan, result: dict[str, Any]) -> list[dict[str, Any]]:
    """The trial's records in the results contract, tagged with trial, overrides and split."""
    out = []
    for split, key in (("test", "records"), ("validation", "validation_records")):
        for r in result.get(key) or []:
            out.append({**r, "trial": trial.id, "overrides": trial.overrides, "split": split})
    return out


def combined_table(records: list[dict[str, Any]], axes: list[str]) -> pd.DataFrame:
    rows = []
    for r in records:
        row = {k: v for k, v in r.items() if k != "overrides"}
        for a in axes:
            v = r["overrides"].get(a)
            row[a] = json.dumps(v) if isinstance(v, (list, dict)) else v
        row["overrides"] = json.dumps(r["overrides"], sort_keys=True)
        rows.append(row)
    cols = ["trial", "split", "dataset", "category", "level", "metric", "value", "reason"] + axes + ["overrides"]
    df = pd.DataFrame(rows)
    for c in cols:
        if c not in df:
            df[c] = None
    return df[cols + [c for c in df.columns if c not in cols]]


def best_trial(plan: SweepPlan, results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    obj = plan.spec.objective
    split = plan.objective_split()
    scored = [(objective_value(results[t.id], obj.metric, split), t) for t in plan.trials if t.id in results]
    scored = [(v, t) for v, t in scored if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not scored:
        return None
    value, t = (max if obj.mode == "max" else min)(scored, key=lambda p: p[0])
    return {
        "trial": t.id,
        "label": t.label,
        "overrides": t.overrides,
        "metric": obj.metric,
        "split": split,
        "value": value,
        "test_value": mean_value(results[t.id].get("records"), obj.metric),
    }


def write_sweep_report(
    folder: Path,
    plan: SweepPlan,
    results: dict[str, dict[str, Any]],
    failed: dict[str, str],
    best: dict[str, Any] | None,
    provenance: dict[str, str],
) -> Path:
    """report.md: one row per trial with the mean metrics, validation beside test."""
    validating = plan.spec.validation is not None
    lines = [f"# DeCo-Diff sweep: {plan.name}", ""]
    if plan.spec.description:
        lines += [plan.spec.description.strip(), ""]
    for k, v in provenance.items():
        lines.append(f"- **{k}**: {v}")
    lines.append("")
    obj = plan.spec.objective
    split = plan.objective_split()
    lines += ["## Selection", ""]
    if best:
        lines.append(
            f"Best trial by mean {obj.metric} on the {split} set ({obj.mode}): **{best['trial']}** "
            f"({best['label']}): {fmt(best['value'])}"
            + (f"; its test value {fmt(best['test_value'])}" if split == "validation" else "")
            + "."
        )
    else:
        lines.append("No finished trial has the objective's value yet.")
    if split == "test":
        lines.append("")
        lines.append(
            "Selected on the test set, as the paper does: the chosen setting's test numbers are optimistic. "
            "Add `validation:` to the sweep file to select on held-out training images with synthetic defects."
        )
    lines += ["", "## Trials (mean over categories)", ""]
    axes = plan.axes
    metric_cols = []
    for m in HEADLINE:
        if validating:
            metric_cols += [f"{SHORT[m]} val", f"{SHORT[m]} test"]
        else:
            metric_cols.append(SHORT[m])
    header = ["trial", "dataset"] + [a for a in axes if a != "data.dataset"] + metric_cols + ["report"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for t in plan.trials:
        r = results.get(t.id)
        cells = [t.id + (" **(best)**" if best and best["trial"] == t.id else ""), t.dataset]
        cells += [_cell(t.overrides.get(a)) for a in axes if a != "data.dataset"]
        for m in HEADLINE:
            if validating:
                cells.append(fmt(mean_value(r.get("validation_records"), m)) if r else "—")
            cells.append(fmt(mean_value(r.get("records"), m)) if r else "—")
        if r:
            rel = _relative(Path(r["report"]), folder)
            cells.append(f"[report]({rel})")
        else:
            cells.append(f"failed: {failed[t.id]}" if t.id in failed else "not run")
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    lines.append("")
    if failed:
        lines += ["## Failed trials", ""]
        for tid, err in failed.items():
            lines.append(f"- {tid}: {err} (logs in trials/{tid}/)")
        lines.append("")
    lines += [
        "All values in percent; — where a trial has not finished or a value is undefined. "
        "The per-category values of every trial are in metrics.csv (one row per trial, split, "
        "category and metric) and in each trial's report; comparison/report.html compares the settings "
        "with bootstrap intervals (and the paper's numbers, for its data sets).",
        "",
    ]
    path = folder / "report.md"
    write_atomic(path, "\n".join(lines))
    return path


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    return json.dumps(v) if isinstance(v, (list, dict)) else str(v)


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)


# ---- MLflow -----------------------------------------------------------------------------------------
def start_parent_run(cfg: Config, plan: SweepPlan, folder: Path, existing: str | None) -> str:
    """The sweep's parent run (created once; a resumed sweep marks the same run as running again)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(cfg))
    if existing:
        try:
            client.update_run(existing, status="RUNNING")
            return existing
        except Exception:  # the store was replaced: start a new parent
            pass
    tags = {
        "kind": "sweep",
        "sweep": plan.name,
        "sweep_file": plan.source,
        "code_version": code_version(),
        "trials": str(len(plan.trials)),
        "sweep_folder": str(folder.resolve()),
    }
    rid = log_run(cfg, [], run_name=f"sweep-{plan.name}", tags=tags, artifacts=[])
    client.update_run(rid, status="RUNNING")
    return rid


def log_child_run(cfg: Config, parent: str, plan: SweepPlan, trial: TrialPlan, result: dict[str, Any]) -> str:
    run_dir = Path(result["run_dir"])
    tags = {
        "kind": "sweep-trial",
        "sweep": plan.name,
        "trial": trial.id,
        "dataset": trial.dataset,
        "overrides": json.dumps(trial.overrides, sort_keys=True)[:4000],
        "code_version": code_version(),
        "model_checkpoint": str(result.get("train", {}).get("checkpoint", ""))[:250],
    }
    extra = {"eval_images_per_second": float(result.get("eval_images_per_second") or 0.0)}
    for r in result.get("validation_records") or []:
        if r.get("value") is not None:
            extra[f"validation/{r['dataset']}/{r['category']}/{r['level']}_{r['metric']}"] = float(r["value"])
    arts = [
        run_dir / n
        for n in (
            "config.yaml",
            "provenance.json",
            "report.md",
            "metrics.csv",
            "image_table.csv",
            "pixel_table.csv",
            "defect_table.csv",
            "validation_metrics.csv",
        )
    ]
    return log_run(
        trial.config.model_copy(update={"tracking": cfg.tracking}),
        result.get("records") or [],
        run_name=f"{plan.name}/{trial.id}",
        tags=tags,
        artifacts=arts,
        extra_metrics=extra,
        parent_run_id=parent,
        artifact_folders={n: run_dir / n for n in ("report_data", "figures", "tables") if (run_dir / n).is_dir()},
    )


def finish_parent_run(cfg: Config, parent: str, folder: Path, best: dict[str, Any] | None, status: str) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(cfg))
    for name in ("report.md", "metrics.csv", "results.json", "sweep.json"):
        if (folder / name).is_file():
            client.log_artifact(parent, str(folder / name))
    if (folder / "comparison").is_dir():
        client.log_artifacts(parent, str(folder / "comparison"), artifact_path="comparison")
    if best:
        client.set_tag(parent, "best_trial", best["trial"])
        client.log_metric(parent, f"best_{best['split']}_{best['metric']}", float(best["value"]))
        if best.get("test_value") is not None:
            client.log_metric(parent, f"best_test_{best['metric']}", float(best["test_value"]))
    client.set_terminated(parent, status)


def write_results(folder: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(folder / "results.json", summary)
