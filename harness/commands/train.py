"""`decodiff train`: train (or reuse, or continue) the model for a config; prints the checkpoint.

One process, or many under `accelerate launch` (see harness/training/distributed.py):
    decodiff train --config demo model.size=XS
    accelerate launch --multi_gpu --num_processes 8 -m decodiff.harness.cli train --config demo \\
        --out /scratch/run1 --resume
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from pathlib import Path

from decodiff.harness.commands.common import add_config_args, add_json_arg, config_from, print_json
from decodiff.harness.errors import UsageError

HELP = "train DeCo-Diff for a config (reuses a finished identical training)"
DESCRIPTION = """Prepare the data and VAE, then train the UNet; prints the checkpoint folder. Without --out, the model
goes to the cache, keyed by everything that changes its weights: a finished identical training is
reused and an interrupted one continues. SIGTERM/SIGUSR1 save a checkpoint and exit with code 75."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p, default="demo")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="training folder (final model in OUT/checkpoint, resumable states in OUT/train_state)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in --out (the config must be the one it was written "
        "with); starts from scratch when there is none yet, so a requeued job can always pass it",
    )
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    if args.out is not None and args.out.exists() and not args.out.is_dir():  # before the torch imports below
        raise UsageError(f"--out {args.out}: is a file, expected a training folder")
    from decodiff.harness.runs import check_folders

    check_folders(cfg)
    from decodiff.harness.training.distributed import make_accelerator
    from decodiff.harness.training.loop import TRAIN_LOCK, training_folder_lock

    acc = make_accelerator(cfg)
    made = args.out is not None and acc.is_main_process and not args.out.exists()
    try:
        with ExitStack() as stack:
            if args.out is not None and acc.is_main_process:  # before any work: a second run into --out is refused
                stack.enter_context(training_folder_lock(args.out))
            return _run(args, cfg, acc)
    finally:  # a run that failed before writing anything leaves no folder holding only its lock file
        if made and args.out.is_dir() and [p.name for p in args.out.iterdir()] == [TRAIN_LOCK]:
            (args.out / TRAIN_LOCK).unlink()
            args.out.rmdir()


def _run(args: argparse.Namespace, cfg, acc) -> int:
    from decodiff.harness.data import prepare_data
    from decodiff.harness.progress import log
    from decodiff.harness.training.checkpoint import CheckpointError, latest_state
    from decodiff.harness.training.distributed import builders_first
    from decodiff.harness.training.init_weights import source_files
    from decodiff.harness.training.loop import train
    from decodiff.harness.training.model_cache import trained_model
    from decodiff.harness.training.vae_fit import get_vae

    if cfg.model.init_from:  # a missing initialisation fails now, not after the VAE
        source_files(cfg.model.init_from)
    if args.out is not None and not args.resume and (state := latest_state(args.out)) is not None:
        raise CheckpointError(
            f"{args.out} already holds a training checkpoint ({state.name}); pass --resume to "
            f"continue it, or choose another --out"
        )
    with builders_first(acc):  # the main process makes shards and the VAE; the others then find them
        data = prepare_data(cfg)
        vae = get_vae(cfg, data)
    if args.out is None:
        _, classes, info, reused = trained_model(cfg, data, vae, accelerator=acc)
        checkpoint, resumed_from = info["checkpoint"], info.get("resumed_from")
    else:
        if args.resume and latest_state(args.out) is None and acc.is_main_process:
            log(f"train: no checkpoint in {args.out} yet; starting from scratch")
        result = train(cfg, data, vae, args.out, accelerator=acc, resume=args.resume)
        checkpoint, classes, reused, resumed_from = str(result.checkpoint), data.categories, False, result.resumed_from
        info = {
            "steps": result.steps,
            "epochs": result.epochs,
            "seconds": round(result.seconds, 1),
            "final_loss": result.final_loss,
            "samples_per_second": round(result.samples_per_second, 2),
            "weights_sha256": result.weights_sha256,
        }
    if not acc.is_main_process:
        return 0
    if args.json:
        print_json(
            {"checkpoint": checkpoint, "classes": classes, "reused": reused, "resumed_from": resumed_from, "info": info}
        )
    else:
        print(checkpoint)
    return 0
