"""`decodiff plan CONFIG_OR_GRID`: GPU-hours and wall-clock of a run or a sweep before it is
submitted, from FLOPs per phase and measured (or estimated) device throughput."""
from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from decodiff.harness.commands.common import print_json

CONFIG_SECTIONS = {"extends", "run", "data", "vae", "model", "process", "train", "infer", "metrics", "tracking"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="estimate GPU-hours and wall-clock of a run or a sweep on an allocation",
                       description="Count each phase's FLOPs (VAE fit, latent cache, training, evaluation) for a config "
                                   "or every trial of a sweep, with data-set sizes from shard manifests or the published "
                                   "sizes, and turn them into time with a measured throughput file (--throughput, from "
                                   "benchmarks/train_speed.py) or the GPU's data-sheet peak x an assumed utilisation "
                                   "(labelled ESTIMATE).")
    p.add_argument("target", metavar="CONFIG_OR_GRID", help="config preset/YAML, or a sweep file/preset (configs/sweeps/)")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides (every trial of a sweep)")
    p.add_argument("--gpu", metavar="NAME", help="GPU model: h200, h100, a100, l40s, a6000, a10, l4, v100, rtx4090, "
                                                 "rtx3090, t4, cpu (default a100)")
    p.add_argument("--throughput", type=Path, metavar="FILE", help="measured throughput JSON (benchmarks/train_speed.py)")
    p.add_argument("--nodes", "-N", type=int, default=1, help="nodes (default 1)")
    p.add_argument("--gpus-per-node", "-G", type=int, default=1, help="GPUs per node (default 1; 0: CPU nodes)")
    p.add_argument("--time", "-t", help="a time limit to check the plan against")
    p.add_argument("--shards", action="append", default=[], metavar="NAME=DIR", help="sweep: shard folder of data set NAME")
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object on stdout")
    p.set_defaults(func=run)


def is_sweep(target: str) -> bool:
    """A sweep preset name, or a YAML file whose top level is not config sections."""
    from decodiff.harness.config import preset_names
    from decodiff.harness.sweep.spec import sweep_preset_names

    path = Path(target)
    if path.suffix in (".yaml", ".yml") or "/" in target:
        if not path.is_file():
            return False  # build_config names the missing file
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            return False
        return isinstance(data, dict) and bool(data) and not set(data) <= CONFIG_SECTIONS
    return target in sweep_preset_names() and target not in preset_names()


def sweep_workloads(plan) -> list:
    """One workload per trial, grouped by the training the trials share."""
    from decodiff.jobs.workload import workload

    return [workload(t.config.to_dict(), t.label, t.group) for t in plan.trials]


def sweep_allocation(plan, nodes: int, gpus_per_node: int):
    from decodiff.jobs.plan import Allocation

    r = plan.spec.resources
    return Allocation(nodes=nodes, gpus_per_node=gpus_per_node, trial_gpus=r.gpus if gpus_per_node else 0,
                      trial_processes=r.training_processes if gpus_per_node else 1,
                      max_concurrent=plan.spec.max_concurrent)


def run(args: argparse.Namespace) -> int:
    from decodiff.harness.cli import UsageError
    from decodiff.harness.commands.submit import _shards, device_profile
    from decodiff.jobs.errors import JobError
    from decodiff.jobs.plan import Allocation, format_table, plan_run, plan_sweep, time_limit_warning
    from decodiff.jobs.workload import workload

    if args.nodes < 1 or args.gpus_per_node < 0:
        raise UsageError("--nodes must be >= 1 and --gpus-per-node >= 0")
    try:
        if is_sweep(args.target):
            from decodiff.harness.sweep.spec import plan_sweep as expand

            sweep = expand(args.target, args.overrides, _shards(args.shards))
            allow_tf32 = all(t.config.train.allow_tf32 for t in sweep.trials)
            profile = device_profile(args.gpu, args.throughput, args.gpus_per_node, allow_tf32)
            result = plan_sweep(f"sweep {sweep.name}", sweep_workloads(sweep), profile,
                                sweep_allocation(sweep, args.nodes, args.gpus_per_node))
        else:
            from decodiff.harness.config import build_config

            if args.shards:
                raise UsageError("--shards is for sweeps; give a config's shards as data.shards=DIR")
            cfg = build_config(args.target, args.overrides)
            profile = device_profile(args.gpu, args.throughput, args.gpus_per_node, cfg.train.allow_tf32)
            result = plan_run(workload(cfg.to_dict(), cfg.run.name),
                              profile, Allocation(nodes=args.nodes, gpus_per_node=args.gpus_per_node))
        warning = time_limit_warning(result, args.time)
    except JobError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        out = result.to_json()
        out["time_limit_warning"] = warning
        print_json(out)
    else:
        print(format_table(result))
        if warning:
            print(f"WARNING: {warning}")
    return 0
