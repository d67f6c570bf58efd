"""`decodiff vae train` / `train-generic`: train the small AutoencoderKL for a config, or the generic one on
broad bundled imagery, and save it as a folder."""

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
    g = vsub.add_parser(
        "train-generic",
        help="train the generic small AutoencoderKL on scikit-image's bundled pictures",
        description="Train the f8-small AutoencoderKL on random multi-scale crops (flips, turns) of "
        "scikit-image's bundled photographs and textures, leaving out the demo's four sources and "
        "scikit-learn's two sample photographs (on which the held-out PSNR is logged), and save it into "
        "--out; `vae.init_from=OUT` fine-tunes it on a run's images. This is how "
        "models/weights/generic-vae was made.",
    )
    g.add_argument("--out", required=True, type=Path, help="folder to write")
    g.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    g.add_argument("--batch-size", type=int, default=16, help="crops per step (default 16)")
    g.add_argument("--crop", type=int, default=64, help="crop side in pixels (default 64)")
    g.add_argument("--lr", type=float, default=1e-3, help="peak learning rate, one-cycle (default 1e-3)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--eval-every", type=int, default=500, help="log the held-out PSNR every N steps")
    g.set_defaults(func=run_train_generic)


def _check_out(out: Path) -> None:
    """Checked before the training: only an earlier VAE (or nothing) is ever replaced."""
    if out.exists() and not (out.is_dir() and ((out / "decodiff.json").is_file() or not any(out.iterdir()))):
        raise UsageError(
            f"--out {out}: exists and is not a VAE folder written by `decodiff vae train` "
            f"(no decodiff.json); choose a new folder"
        )
    parent = out.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"--out {out}: cannot write into {parent}")


def run_train(args: argparse.Namespace) -> int:
    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data
    from decodiff.harness.training.vae_fit import fit_small_vae

    cfg = build_config(args.config, list(args.overrides) + ["vae.pretrained=null"])
    out = args.out
    _check_out(out)
    data = prepare_data(cfg)
    fit_small_vae(cfg, data, out)  # written as OUT.tmp, then renamed over an earlier VAE
    print(out)
    return 0


def run_train_generic(args: argparse.Namespace) -> int:
    from decodiff.harness.training.vae_generic import fit_generic_vae

    for name in ("steps", "batch_size", "crop", "eval_every"):
        if getattr(args, name) < 1 or (name == "crop" and args.crop < 8):
            raise UsageError(
                f"--{name.replace('_', '-')} {getattr(args, name)}: expected a whole number >= "
                f"{8 if name == 'crop' else 1}"
            )
    if args.lr <= 0:
        raise UsageError(f"--lr {args.lr}: expected a positive number")
    _check_out(args.out)
    fit_generic_vae(
        args.out,
        args.steps,
        batch_size=args.batch_size,
        crop=args.crop,
        lr=args.lr,
        seed=args.seed,
        eval_every=args.eval_every,
    )
    print(args.out)
    return 0
