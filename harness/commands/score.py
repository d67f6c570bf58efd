"""`decodiff score`: score anomaly maps produced by any method with the same metrics, tables and
MLflow run as a DeCo-Diff run."""

from __future__ import annotations

import argparse
from pathlib import Path

from decodiff.harness.commands.common import add_json_arg, print_result

HELP = "score another method's anomaly maps against a test split"
DESCRIPTION = """Match maps to the ground truth by sample key (image path relative to the data set root, without
extension) and write the per-category report and an MLflow run. Maps: one .npz with `keys` and `maps`
(optionally `scores`), or a folder with <key>.npy/.npz per image. The truth is used as stored (no
resize or crop) unless overrides say otherwise, e.g. data.resize=288 data.crop=256."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--maps", required=True, type=Path, help=".npz of maps or a folder of per-image maps")
    p.add_argument("--truth", required=True, help="shard set (folder with manifest.json) or a native data set folder")
    p.add_argument("--dataset", default="mvtec", help="layout of a native --truth folder (default mvtec)")
    p.add_argument("--out", required=True, type=Path, help="output folder for the report and tables")
    p.add_argument("--resize", action="store_true", help="resize maps bilinearly to the mask size where they differ")
    p.add_argument("--config", "-c", default=None, metavar="PRESET", help="preset for metrics/tracking settings")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="config overrides, e.g. metrics.aupro_protocol=deco-diff-code",
    )
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from decodiff.harness.score_run import score_run  # the library: deferred (--help)

    res = score_run(
        args.maps,
        args.truth,
        args.out,
        dataset=args.dataset,
        resize=args.resize,
        config=args.config,
        overrides=args.overrides,
    )
    # the log names the report as given; the printed path is absolute
    return print_result(args, res.report, res.records, res.summary, shown=args.out / res.report.name)
