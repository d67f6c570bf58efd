"""Where a `decodiff bench` run's time went, from its run folder's timings.json (harness/timings.py):
the phases in seconds and the rates (training steps/s and samples/s, evaluation images/s); for
a run with `run.time_budget`, each phase's planned seconds beside its actual ones (the evidence
for the planner's factors in harness/training/budget.py). Used by fresh_clone_bench.sh; on its own:

    python benchmarks/run_phases.py runs/demo-bench-20261201-130624-de35   # one JSON line
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def run_phases(
    run_dir: str | Path, wall: float | None = None, before: dict[str, float] | None = None
) -> dict[str, Any]:
    """Phases of the run folder, after `before` (e.g. the set-up); with `wall` (the command's wall
    seconds) the part no phase covers is reported as "other" (interpreter start-up, imports...)."""
    path = Path(run_dir) / "timings.json"
    if not path.is_file():
        raise SystemExit(f"run_phases: {path} not found (a run folder of `decodiff bench` from this version?)")
    t = json.loads(path.read_text())
    phases = {**(before or {}), **{k: round(v["seconds"], 1) for k, v in t["phases"].items()}}
    if wall is not None:
        phases["other"] = round(wall - sum(v for k, v in phases.items() if k not in (before or {})), 1)
    out = {
        "run_dir": str(Path(run_dir).resolve()),
        "phases": phases,
        "rates": t.get("rates", {}),
        "cpu_seconds": {k: v["cpu_seconds"] for k, v in t["phases"].items()},
        "model_reused": t.get("model_reused"),
    }
    if t.get("budget"):
        out["budget"] = plan_vs_actual(t["budget"], t["phases"])
    return out


def plan_vs_actual(plan: dict[str, Any], phases: dict[str, dict[str, float]]) -> dict[str, Any]:
    """Each planned phase: estimated and actual seconds and actual / estimated (above 1: the plan was short)."""
    rows = {}
    for name, est in plan.get("estimated_seconds", {}).items():
        actual = phases.get(name, {}).get("seconds")
        if actual is None:
            continue
        rows[name] = {"estimated": est, "actual": actual, "ratio": round(actual / est, 2) if est else None}
    return {"minutes": plan.get("budget_minutes"), "steps": plan.get("steps"), "phases": rows}


def run_dir_of_output(stdout_file: str | Path) -> Path | None:
    """The run folder of a `decodiff bench` whose stdout (the report's path) was kept in a file."""
    for line in reversed(Path(stdout_file).read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.endswith("report.md"):
            return Path(line).parent
    return None


def phases_of_output(stdout_file: str | Path, wall: float, before: dict[str, float] | None = None) -> dict[str, Any]:
    run_dir = run_dir_of_output(stdout_file)
    if run_dir is None:
        return {"phases": {**(before or {}), "unknown": wall}, "rates": {}}
    return run_phases(run_dir, wall, before)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/run_phases.py RUN_DIR")
    print(json.dumps(run_phases(sys.argv[1])))
