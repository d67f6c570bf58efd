"""What a run or a sweep will cost on an allocation, before it is submitted: the harness side of
`jobs/plan.py`. Configs and sweep files are resolved here and handed to the cost model in jobs/
as plain dicts (jobs never imports the harness), so every default comes from the config model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from decodiff.harness.config import Config, build_config, preset_names
from decodiff.harness.errors import UsageError
from decodiff.harness.sweep.spec import SweepPlan, sweep_preset_names
from decodiff.harness.sweep.spec import plan_sweep as expand_sweep
from decodiff.jobs.errors import JobError
from decodiff.jobs.plan import Allocation, PlanResult, plan_run, plan_sweep, time_limit_warning
from decodiff.jobs.throughput import DeviceProfile, builtin_profile, load_throughput, measured_profile
from decodiff.jobs.workload import Workload, measurement_gflops, workload

CONFIG_KEYS = {"extends", *Config.model_fields}  # a YAML file with only these at the top is a config, not a sweep


@dataclass
class Plan:
    """A plan and its check against a time limit (None: no limit given, or it is long enough)."""

    result: PlanResult
    time_limit_warning: str | None

    def to_json(self) -> dict[str, Any]:
        return {**self.result.to_json(), "time_limit_warning": self.time_limit_warning}


def plan(
    target: str,
    overrides: Sequence[str] = (),
    *,
    gpu: str | None = None,
    throughput: str | Path | None = None,
    nodes: int = 1,
    gpus_per_node: int = 1,
    time: str | None = None,
    shards: Sequence[str] = (),
) -> Plan:
    """GPU-hours and wall-clock of a config (preset or YAML, with overrides) or of every trial of a
    sweep (`shards`: NAME=DIR items for its data sets) on `nodes` x `gpus_per_node` (0: CPU nodes),
    priced by a measured `throughput` file or the built-in estimate for `gpu`; `time`: a SLURM
    time limit to check the plan against."""
    if nodes < 1 or gpus_per_node < 0:
        raise UsageError("--nodes must be >= 1 and --gpus-per-node >= 0")
    throughput = Path(throughput) if throughput is not None else None
    try:
        if is_sweep(target):
            sweep = expand_sweep(target, list(overrides), parse_shards(shards))
            allow_tf32 = all(t.config.train.allow_tf32 for t in sweep.trials)
            profile = device_profile(gpu, throughput, gpus_per_node, allow_tf32)
            result = plan_sweep(
                f"sweep {sweep.name}", sweep_workloads(sweep), profile, sweep_allocation(sweep, nodes, gpus_per_node)
            )
        else:
            if shards:
                raise UsageError("--shards is for sweeps; give a config's shards as data.shards=DIR")
            cfg = build_config(target, list(overrides))
            profile = device_profile(gpu, throughput, gpus_per_node, cfg.train.allow_tf32)
            result = plan_run(
                run_workload(cfg, cfg.run.name), profile, Allocation(nodes=nodes, gpus_per_node=gpus_per_node)
            )
        return Plan(result, time_limit_warning(result, time))
    except JobError as exc:
        raise UsageError(str(exc)) from None


def is_sweep(target: str) -> bool:
    """A sweep preset name, or a YAML file whose top level is not config sections."""
    path = Path(target)
    if path.suffix in (".yaml", ".yml") or "/" in target:
        if not path.is_file():
            return False  # build_config names the missing file
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            return False
        return isinstance(data, dict) and bool(data) and not set(data) <= CONFIG_KEYS
    return target in sweep_preset_names() and target not in preset_names()


def parse_shards(items: Sequence[str]) -> dict[str, str]:
    """`--shards NAME=DIR` items as {name: absolute folder (or URL)}."""
    out = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise UsageError(f"--shards {item!r}: expected NAME=DIR")
        out[name] = str(Path(folder).resolve()) if "://" not in folder else folder
    return out


def run_workload(cfg: Config, label: str = "", group: str = "") -> Workload:
    """The FLOPs per phase of one run of `cfg` (jobs/workload.py, fed the resolved config)."""
    return workload(cfg.to_dict(), label, group)


def sweep_workloads(sweep: SweepPlan) -> list[Workload]:
    """One workload per trial, grouped by the training the trials share."""
    return [run_workload(t.config, t.label, t.group) for t in sweep.trials]


def sweep_allocation(sweep: SweepPlan, nodes: int, gpus_per_node: int) -> Allocation:
    """The allocation as the sweep's trials see it: GPUs and processes per trial, trials at once."""
    r = sweep.spec.resources
    return Allocation(
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        trial_gpus=r.gpus if gpus_per_node else 0,
        trial_processes=r.training_processes if gpus_per_node else 1,
        max_concurrent=sweep.spec.max_concurrent,
    )


def device_profile(
    gpu: str | None, throughput: Path | None, gpus_per_node: int, allow_tf32: bool = True
) -> DeviceProfile:
    """The measured profile when a throughput file is given, else the built-in estimate."""
    if throughput is not None:
        return measured_profile(
            load_throughput(throughput),
            lambda m: measurement_gflops(m.model, m.latent_size, m.latent_channels, m.num_classes)[0],
            lambda m: measurement_gflops(m.model, m.latent_size, m.latent_channels, m.num_classes, m.reverse_steps)[1],
            allow_tf32,
        )
    return builtin_profile(gpu or ("a100" if gpus_per_node > 0 else "cpu"), allow_tf32)
