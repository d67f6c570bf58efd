"""`decodiff bench`: the main job end to end."""

from __future__ import annotations

import argparse

from decodiff.harness.commands.common import add_config_args, add_json_arg, config_from, print_result

HELP = "run the whole benchmark: data, VAE, training, evaluation, report, MLflow"
DESCRIPTION = """Run the main job: shard the data, get the VAE, train DeCo-Diff (or reuse the model trained with the
same settings), evaluate, and write the report and an MLflow run."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p, default="demo")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from(args)  # validated before anything is written
    from decodiff.harness.runs import check_folders
    from decodiff.harness.tracking import check_tracking

    check_folders(cfg)  # bench() checks these too; here they come before the seconds of torch imports below
    check_tracking(cfg)
    from decodiff.harness.bench import bench

    result = bench(cfg)
    if result is None:  # not the main process of several: the main one reports
        return 0
    return print_result(args, result.report, result.records, result.summary, run_id=result.run_id, tracked=True)
