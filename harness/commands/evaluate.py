"""`decodiff evaluate`: evaluate a trained checkpoint on the test split."""

from __future__ import annotations

import argparse
from pathlib import Path

from decodiff.harness.commands.common import add_config_args, add_json_arg, config_from, print_result

HELP = "evaluate a checkpoint: maps, metrics, report, MLflow run"
DESCRIPTION = """Run deviation correction on the test split with a trained checkpoint and write the per-category report
and an MLflow run."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder (from `decodiff train`)")
    add_config_args(p, default="demo")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    from decodiff.harness.checkpoint_run import evaluate_checkpoint  # torch and the models: deferred (--help)

    res = evaluate_checkpoint(cfg, args.checkpoint)
    if res is None:  # not the main process of several: the main one reports
        return 0
    return print_result(args, res.report, res.records, res.summary)
