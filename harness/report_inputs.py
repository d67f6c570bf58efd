"""What `decodiff report` reads: a run folder, an MLflow run (by id, from any tracking URI), every
run of an MLflow experiment, or a sweep folder; each becomes plain `RunData` for decodiff.reports.
Nothing here formats anything; what cannot be read becomes a (label, dataset, reason) gap."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from decodiff.datasets.imageio import DataError
from decodiff.harness.tracking import (
    TrackedRun,
    TrackingError,
    download_report_data,
    experiment_runs,
    flatten_config,
    read_run,
)
from decodiff.reports.build import SweepData, SweepTrial
from decodiff.reports.rundata import FOLDER, RunData, load_run_data

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Inputs:
    runs: list[RunData] = field(default_factory=list)
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # (label, dataset, reason)
    problems: list[str] = field(default_factory=list)  # one-line messages for stderr
    sweep: SweepData | None = None


def _dataset(records: list[dict[str, Any]], fallback: str = "unknown") -> str:
    return str(records[0]["dataset"]) if records else fallback


def run_from_dir(folder: Path) -> RunData:
    """A finished run folder (summary.json; report_data/ where the run wrote one)."""
    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise DataError(f"{folder}: not a finished run folder (no summary.json)")
    summary = json.loads(summary_path.read_text())
    records = summary.get("metrics") or []
    params: dict[str, str] = {}
    if (folder / "config.yaml").is_file():
        params = flatten_config(yaml.safe_load((folder / "config.yaml").read_text()) or {})
    if (folder / FOLDER / "run.json").is_file():
        return load_run_data(folder / FOLDER, records, params, run_id=summary.get("run_id"))
    prov = json.loads((folder / "provenance.json").read_text()) if (folder / "provenance.json").is_file() else {}
    return RunData(
        name=folder.name,
        title=folder.name,
        dataset=_dataset(records),
        records=records,
        run_id=summary.get("run_id"),
        params=params,
        provenance=[("code version", str(prov.get("code_version", "?")))],
        notes=[
            f"{folder.name} has no {FOLDER}/ (written before reports kept it): no bootstrap intervals, "
            "per-image scores or figures."
        ],
    )


def run_from_tracking(uri: str, run_id: str, workdir: Path) -> RunData:
    """A run from the tracking store alone: records from its metrics and reason tags, the rest
    from its report_data/ artifacts."""
    tracked = read_run(uri, run_id)
    return _from_tracked(uri, tracked, workdir)


def _from_tracked(uri: str, tracked: TrackedRun, workdir: Path) -> RunData:
    records = tracked.records()
    folder = download_report_data(uri, tracked.run_id, workdir / tracked.run_id)
    if folder is not None:
        return load_run_data(folder, records, tracked.params, run_id=tracked.run_id)
    return RunData(
        name=tracked.name,
        title=tracked.name,
        dataset=tracked.tags.get("dataset") or _dataset(records),
        records=records,
        run_id=tracked.run_id,
        params=tracked.params,
        provenance=[("code version", tracked.tags.get("code_version", "?"))],
        notes=[
            f"MLflow run {tracked.run_id} logged no {FOLDER}/ artifacts: no bootstrap intervals, "
            "per-image scores or figures."
        ],
    )


def resolve_runs(specs: list[str], uri: str, workdir: Path) -> Inputs:
    """Each --run: a run folder, or an MLflow run id in the tracking store at `uri`."""
    out = Inputs()
    for spec in specs:
        path = Path(spec)
        try:
            if path.is_dir():
                out.runs.append(run_from_dir(path))
            elif RUN_ID.match(spec):
                out.runs.append(run_from_tracking(uri, spec, workdir))
            else:
                raise DataError(f"{spec}: neither a run folder nor an MLflow run id (32 hex digits)")
        except (DataError, TrackingError) as exc:
            out.missing.append((spec, "unknown", str(exc)))
            out.problems.append(str(exc))
    return out


def resolve_experiment(name: str, uri: str, workdir: Path) -> Inputs:
    """Every run of the experiment that logged metrics under the stable names (sweep parents,
    which hold none, are skipped; their trials are included)."""
    out = Inputs()
    try:
        tracked = experiment_runs(uri, name)
    except TrackingError as exc:
        out.problems.append(str(exc))
        out.missing.append((f"experiment {name}", "unknown", str(exc)))
        return out
    with_metrics = [t for t in tracked if t.records()]
    for t in tracked:
        if not t.records() and t.tags.get("kind") != "sweep":
            why = f"MLflow run {t.run_id} ({t.name}) has no metrics (status {t.status})"
            out.missing.append((t.name, t.tags.get("dataset", "unknown"), why))
            out.problems.append(why)
    for t in with_metrics:
        out.runs.append(_from_tracked(uri, t, workdir))
    if not tracked:
        out.problems.append(f"MLflow experiment {name!r} at {uri} has no runs")
    return out


def resolve_sweep(folder: Path) -> Inputs:
    """A sweep folder: every trial, finished ones as runs, the others as gaps with their status."""
    folder = Path(folder)
    state_path, results_path = folder / "sweep.json", folder / "results.json"
    if not state_path.is_file() and not results_path.is_file():
        raise DataError(f"{folder}: not a sweep folder (no sweep.json or results.json)")
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    by_id = {t["trial"]: t for t in results.get("trials", [])}
    planned = state.get("trials") or results.get("trials") or []
    trials, out = [], Inputs()
    for t in planned:
        r = by_id.get(t["trial"], {})
        status = r.get("status", "not run")
        run, error = None, r.get("error")
        run_dir = r.get("run_dir")
        if run_dir:
            try:
                run = run_from_dir(Path(run_dir))
                status = "finished"
            except DataError as exc:
                run, error, status = None, str(exc), "unreadable"
        trials.append(SweepTrial(t["trial"], dict(t.get("overrides") or {}), status, run, error))
        if run is not None:
            out.runs.append(run)
        else:
            out.problems.append(f"trial {t['trial']}: {status}" + (f" ({error})" if error else ""))
    axes = list(dict.fromkeys(k for t in trials for k in t.overrides))
    name = state.get("name") or Path(results.get("sweep", folder)).name
    desc = ((state.get("spec") or {}).get("description") or "").strip()
    out.sweep = SweepData(name, str(folder), axes, trials, desc)
    return out


def scratch_dir() -> tempfile.TemporaryDirectory:
    """Where artifacts downloaded from a tracking server wait while the report is built."""
    return tempfile.TemporaryDirectory(prefix="decodiff-report-")
