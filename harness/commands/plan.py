"""`decodiff plan CONFIG_OR_GRID`: GPU-hours and wall-clock of a run or a sweep before it is
submitted, from FLOPs per phase and measured (or estimated) device throughput."""

from __future__ import annotations

import argparse
from pathlib import Path

from decodiff.harness.commands.common import print_json

HELP = "estimate GPU-hours and wall-clock of a run or a sweep on an allocation"
DESCRIPTION = """Count each phase's FLOPs (VAE fit, latent cache, training, evaluation) for a config or every trial of
a sweep, with data-set sizes from shard manifests or the published sizes, and turn them into time with
a measured throughput file (--throughput, from benchmarks/train_speed.py) or the GPU's data-sheet peak
x an assumed utilisation (labelled ESTIMATE)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target", metavar="CONFIG_OR_GRID", help="config preset/YAML, or a sweep file/preset (configs/sweeps/)"
    )
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides (every trial of a sweep)")
    p.add_argument(
        "--gpu",
        metavar="NAME",
        help="GPU model: h200, h100, a100, l40s, a6000, a10, l4, v100, rtx4090, rtx3090, t4, cpu (default a100)",
    )
    p.add_argument(
        "--throughput", type=Path, metavar="FILE", help="measured throughput JSON (benchmarks/train_speed.py)"
    )
    # defaults left to plan() itself, which the help restates
    p.add_argument("--nodes", "-N", type=int, default=argparse.SUPPRESS, help="nodes (default 1)")
    p.add_argument(
        "--gpus-per-node", "-G", type=int, default=argparse.SUPPRESS, help="GPUs per node (default 1; 0: CPU nodes)"
    )
    p.add_argument("--time", "-t", help="a time limit to check the plan against")
    p.add_argument(
        "--shards", action="append", default=[], metavar="NAME=DIR", help="sweep: shard folder of data set NAME"
    )
    p.add_argument("--json", action="store_true", help="print the plan as one JSON object on stdout")
    p.set_defaults(func=run)


PLAN_OPTIONS = ("gpu", "throughput", "nodes", "gpus_per_node", "time", "shards")


def run(args: argparse.Namespace) -> int:
    from decodiff.harness.planning import plan  # the library: deferred (--help)
    from decodiff.jobs.plan import format_table

    # the options are plan()'s keywords under the same names
    result = plan(args.target, args.overrides, **{k: getattr(args, k) for k in PLAN_OPTIONS if hasattr(args, k)})
    if args.json:
        print_json(result.to_json())
    else:
        print(format_table(result.result))
        if result.time_limit_warning:
            print(f"WARNING: {result.time_limit_warning}")
    return 0
