"""`decodiff train`: train (or reuse) the model for a config."""
from __future__ import annotations

import argparse

from decodiff.harness.commands.common import add_config_args, add_json_arg, config_from, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train DeCo-Diff for a config (reuses a finished identical training)",
                       description="Prepare the data and VAE, then train the UNet; prints the checkpoint folder.")
    add_config_args(p, default="demo")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    from decodiff.harness.data import prepare_data
    from decodiff.harness.model_cache import trained_model
    from decodiff.harness.vae_fit import get_vae

    data = prepare_data(cfg)
    vae = get_vae(cfg, data)
    _, classes, info, reused = trained_model(cfg, data, vae)
    if args.json:
        print_json({"checkpoint": info["checkpoint"], "classes": classes, "reused": reused, "info": info})
    else:
        print(info["checkpoint"])
    return 0
