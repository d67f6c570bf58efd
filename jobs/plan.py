"""Capacity planning: wall-clock and GPU-hours of a run or a sweep on an allocation, from the
runs' FLOPs (workload.py) and a device profile (throughput.py), as a table and as JSON.

Model of time
- A phase takes FLOPs / (effective TFLOP/s per process x processes x scaling efficiency);
  training spreads over every training process, the other phases run on one.
- A run adds a fixed start-up overhead (processes, data loading, MLflow).
- A sweep trains each distinct training group once and evaluates every trial after its group's
  training; groups are placed on the free GPU slots longest first (what Ray Tune does with
  enough trials), and the wall-clock is the last slot to finish.
- GPU-hours are what the allocation holds: wall-clock x GPUs allocated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from decodiff.jobs.throughput import DeviceProfile, profile_to_json
from decodiff.jobs.walltime import format_duration, format_time, parse_time
from decodiff.jobs.workload import Workload

STARTUP_SECONDS = 120.0  # per run: processes, imports, data loading, tracking (an estimate)
INTRA_NODE_EFFICIENCY = 0.92  # data-parallel scaling per extra GPU on one node (an estimate)
INTER_NODE_EFFICIENCY = 0.85  # ... across nodes


@dataclass
class Allocation:
    nodes: int = 1
    gpus_per_node: int = 1  # 0: CPU nodes (one process per node)
    trial_gpus: float = 1  # sweeps: GPUs per trial
    trial_processes: int = 1  # sweeps: training processes per trial
    max_concurrent: int | None = None

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def processes(self) -> int:
        return self.nodes * max(1, self.gpus_per_node)

    def describe(self) -> str:
        unit = f"{self.gpus_per_node} GPU(s)" if self.gpus_per_node else "CPU only"
        return f"{self.nodes} node(s) x {unit}"


@dataclass
class RunEstimate:
    label: str
    workload: Workload
    phase_seconds: dict[str, float]
    seconds: float  # wall-clock of this run on its processes
    processes: int
    shared_training: bool = False  # a sweep trial whose training another trial pays for

    def to_json(self) -> dict[str, Any]:
        w = self.workload
        return {
            "label": self.label,
            "dataset": w.data.dataset,
            "categories": len(w.data.categories),
            "train_images": w.data.train,
            "test_images": w.data.test,
            "data_source": w.data.source,
            "model": w.model,
            "image_size": w.image_size,
            "latent_size": w.latent_size,
            "train_steps": w.train_steps,
            "batch_size": w.batch_size,
            "processes": self.processes,
            "shared_training": self.shared_training,
            "phases": [
                {
                    "name": p.name,
                    "tflop": round(p.gflops / 1e3, 3),
                    "seconds": round(self.phase_seconds[p.name], 1),
                    "detail": p.detail,
                }
                for p in w.phases
            ],
            "seconds": round(self.seconds, 1),
        }


@dataclass
class PlanResult:
    title: str
    allocation: Allocation
    profile: DeviceProfile
    runs: list[RunEstimate]
    wall_seconds: float
    gpu_hours: float
    concurrent: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        a = self.allocation
        return {
            "title": self.title,
            "nodes": a.nodes,
            "gpus_per_node": a.gpus_per_node,
            "concurrent": self.concurrent,
            "device": profile_to_json(self.profile),
            "runs": [r.to_json() for r in self.runs],
            "wall_seconds": round(self.wall_seconds, 1),
            "wall_clock": format_time(self.wall_seconds),
            "gpu_hours": round(self.gpu_hours, 2),
            "estimate": not self.profile.measured,
            "notes": self.notes,
        }


def _efficiency(processes: int, nodes: int) -> float:
    if processes <= 1:
        return 1.0
    return INTER_NODE_EFFICIENCY if nodes > 1 else INTRA_NODE_EFFICIENCY


def phase_seconds(
    w: Workload, profile: DeviceProfile, processes: int, nodes: int = 1, skip_training: bool = False
) -> dict[str, float]:
    out = {}
    for p in w.phases:
        if skip_training and p.name != "evaluate":
            out[p.name] = 0.0
            continue
        rate = profile.rate(p.kind, p.precision) * 1e3  # GFLOP/s per process
        n = processes if p.distributed else 1
        out[p.name] = p.gflops / (rate * n * _efficiency(n, nodes))
    return out


def plan_run(w: Workload, profile: DeviceProfile, alloc: Allocation) -> PlanResult:
    """One run (train or bench) on the whole allocation."""
    secs = phase_seconds(w, profile, alloc.processes, alloc.nodes)
    total = sum(secs.values()) + STARTUP_SECONDS
    est = RunEstimate(w.label, w, secs, total, alloc.processes)
    gpus = alloc.gpus or alloc.nodes
    return PlanResult(w.label, alloc, profile, [est], total, total * gpus / 3600, 1, _notes(profile, alloc))


def plan_sweep(title: str, trials: list[Workload], profile: DeviceProfile, alloc: Allocation) -> PlanResult:
    """Trials on an allocation: one training per group, every trial evaluated, groups packed
    onto the concurrent slots longest first."""
    procs = max(1, alloc.trial_processes)
    slots = max(1, int(alloc.gpus // alloc.trial_gpus)) if alloc.trial_gpus > 0 and alloc.gpus else alloc.nodes
    if alloc.max_concurrent:
        slots = min(slots, alloc.max_concurrent)
    runs: list[RunEstimate] = []
    groups: dict[str, float] = {}
    seen: set[str] = set()
    for w in trials:
        shared = w.group in seen
        seen.add(w.group)
        secs = phase_seconds(w, profile, procs, 1, skip_training=shared)
        total = sum(secs.values()) + (0.0 if shared else STARTUP_SECONDS)
        runs.append(RunEstimate(w.label, w, secs, total, procs, shared))
        groups[w.group] = groups.get(w.group, 0.0) + total
    finish = [0.0] * slots
    for g in sorted(groups.values(), reverse=True):
        i = finish.index(min(finish))
        finish[i] += g
    wall = max(finish) if finish else 0.0
    gpus = alloc.gpus or alloc.nodes
    notes = _notes(profile, alloc)
    notes.append(
        f"{len(trials)} trials, {len(groups)} trainings; up to {slots} trials at once "
        f"({alloc.trial_gpus:g} GPU(s) per trial)"
    )
    return PlanResult(title, alloc, profile, runs, wall, wall * gpus / 3600, slots, notes)


def _notes(profile: DeviceProfile, alloc: Allocation) -> list[str]:
    notes = [profile.source] + list(profile.notes)
    if alloc.processes > 1:
        notes.append(
            f"data-parallel efficiency {INTRA_NODE_EFFICIENCY:.0%} on one node, {INTER_NODE_EFFICIENCY:.0%} "
            f"across nodes; {STARTUP_SECONDS:.0f} s start-up per run (estimates)"
        )
    return notes


def format_table(plan: PlanResult) -> str:
    """The plan as a fixed-width table, one row per run/trial, then the totals."""
    head = ["run", "dataset", "images (train/test)", "model", "steps", "train", "evaluate", "wall-clock"]
    rows = []
    for r in plan.runs:
        w = r.workload
        train = sum(v for k, v in r.phase_seconds.items() if k != "evaluate")
        rows.append(
            [
                r.label,
                w.data.dataset,
                f"{w.data.train}/{w.data.test}",
                f"{w.model} @{w.latent_size}",
                f"{w.train_steps}",
                "shared" if r.shared_training else format_duration(train),
                format_duration(r.phase_seconds.get("evaluate", 0.0)),
                format_duration(r.seconds),
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(wd) for c, wd in zip(cells, widths)).rstrip()  # noqa: E731
    out = [
        f"plan: {plan.title} on {plan.allocation.describe()} - {plan.profile.title}"
        + ("" if plan.profile.measured else " (ESTIMATE)"),
        line(head),
        line(["-" * wd for wd in widths]),
    ]
    out += [line(r) for r in rows]
    out.append(
        f"total: wall-clock {format_duration(plan.wall_seconds)} ({format_time(plan.wall_seconds)}), "
        f"{plan.gpu_hours:.1f} GPU-hours allocated"
        if plan.allocation.gpus
        else f"total: wall-clock {format_duration(plan.wall_seconds)} ({format_time(plan.wall_seconds)}), "
        f"{plan.gpu_hours:.1f} node-hours (CPU)"
    )
    out += [f"  note: {n}" for n in plan.notes]
    return "\n".join(out)


def time_limit_warning(plan: PlanResult, limit: str | None) -> str | None:
    """A warning when the time limit is shorter than the plan's wall-clock (with a 20% margin)."""
    if limit is None:
        return None
    secs = parse_time(limit)
    need = plan.wall_seconds
    if secs < need * 1.2:
        kind = "estimate" if not plan.profile.measured else "measured-throughput estimate"
        short = "shorter than" if secs < need else "within 20% of"
        return (
            f"--time {limit} ({format_duration(secs)}) is {short} the {kind} of {format_duration(need)} "
            f"({format_time(need * 1.2)} with a 20% margin); the job will be stopped by the time limit, "
            f"checkpointed and requeued" + ("" if plan.profile.measured else "; --throughput FILE makes this precise")
        )
    return None
