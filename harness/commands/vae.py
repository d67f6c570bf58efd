"""`decodiff vae train`: train the small AutoencoderKL for a config and save it as a folder."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from decodiff.harness.commands.common import add_actions, add_config_args
from decodiff.harness.errors import UsageError

HELP = "VAE tools"
DESCRIPTION = "VAE tools."


def add_arguments(p: argparse.ArgumentParser) -> None:
    vsub = add_actions(p, "vae_command")
    t = vsub.add_parser(
        "train",
        help="train a small AutoencoderKL on a config's training images",
        description="Train the small VAE the config describes (vae.small, vae.steps, ...) on the "
        "training images and save it with save_pretrained into --out; `vae.pretrained=OUT` "
        "then uses it. This is how models/weights/demo-vae was made.",
    )
    t.add_argument("--out", required=True, type=Path, help="folder to write")
    add_config_args(t, default="demo")
    t.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data
    from decodiff.harness.training.vae_fit import fit_small_vae

    cfg = build_config(args.config, list(args.overrides) + ["vae.pretrained=null"])
    out = args.out
    # checked before the training: only an earlier VAE (or nothing) is ever replaced
    if out.exists() and not (out.is_dir() and ((out / "decodiff.json").is_file() or not any(out.iterdir()))):
        raise UsageError(
            f"--out {out}: exists and is not a VAE folder written by `decodiff vae train` "
            f"(no decodiff.json); choose a new folder"
        )
    parent = out.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out}: cannot write into {parent}")
    data = prepare_data(cfg)
    fit_small_vae(cfg, data, out)  # written as OUT.tmp, then renamed over an earlier VAE
    print(out)
    return 0
