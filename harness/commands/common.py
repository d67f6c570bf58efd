"""Arguments shared by the commands that take a config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from decodiff.harness.config import Config, build_config
from decodiff.harness.progress import log


def add_config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=default,
        metavar="PRESET",
        help=f"preset name (configs/*.yaml) or YAML file{f' (default: {default})' if default else ''}",
    )
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.lr=3e-4")


def add_actions(p: argparse.ArgumentParser, dest: str, metavar: str = "ACTION") -> argparse._SubParsersAction:
    """A command made of actions (`decodiff data demo|shard|...`): one of them must be given."""
    actions = p.add_subparsers(dest=dest, metavar=metavar)
    actions.required = True
    return actions


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def config_from(args: argparse.Namespace) -> Config:
    return build_config(args.config, args.overrides)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def print_result(
    args: argparse.Namespace,
    report: Any,
    records: list[dict[str, Any]],
    summary: dict[str, Any],
    run_id: str | None = None,
    shown: Any = None,
    tracked: bool = False,
) -> int:
    """The end of every command that scores: where the report is, the mean line, then stdout (JSON or path);
    `shown` is the report path as the log line gives it, where that differs from the printed one; `tracked`:
    the command names its MLflow run (None when tracking is off)."""
    log(f"report: {report if shown is None else shown}")
    if tracked:
        log(f"MLflow run: {run_id}")
    log(f"mean: {headline(records)}")
    if args.json:
        print_json(summary)
    else:
        print(report)
    return 0


def headline(records: list[dict[str, Any]]) -> str:
    pick = {(r["level"], r["metric"]): r["value"] for r in records if r.get("category") == "mean"}
    parts = []
    for level, metric in (("image", "auroc"), ("pixel", "auroc"), ("pixel", "auprc"), ("pixel", "aupro")):
        v = pick.get((level, metric))
        parts.append(f"{level} {metric.upper()} {'n/a' if v is None else f'{100 * v:.1f}'}")
    return ", ".join(parts)
