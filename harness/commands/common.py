"""Arguments shared by the commands that take a config."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from decodiff.harness.config import Config, build_config


def add_config_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument(
        "--config",
        "-c",
        default=default,
        metavar="PRESET",
        help=f"preset name (configs/*.yaml) or YAML file{f' (default: {default})' if default else ''}",
    )
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. train.lr=3e-4")


def add_json_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")


def config_from(args: argparse.Namespace) -> Config:
    return build_config(args.config, args.overrides)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def headline(records: list[dict[str, Any]]) -> str:
    pick = {(r["level"], r["metric"]): r["value"] for r in records if r.get("category") == "mean"}
    parts = []
    for level, metric in (("image", "auroc"), ("pixel", "auroc"), ("pixel", "auprc"), ("pixel", "aupro")):
        v = pick.get((level, metric))
        parts.append(f"{level} {metric.upper()} {'n/a' if v is None else f'{100 * v:.1f}'}")
    return ", ".join(parts)
