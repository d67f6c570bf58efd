"""`decodiff predict`: score new images with a trained checkpoint (harness/evaluation/predict.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from decodiff.harness.commands.common import add_json_arg, print_json


def _quantile(text: str) -> float:
    q = float(text)
    if not 0 < q <= 1:
        raise argparse.ArgumentTypeError(f"expected a quantile in (0, 1], got {text}")
    return q


HELP = "anomaly maps, scores and a normal/anomalous decision for new images"
DESCRIPTION = """Score images (files or folders, streamed in batches) with a trained checkpoint: OUT/scores.csv (score
and decision per image), OUT/maps/*.npy (float32 anomaly maps), OUT/overlays/*.png and
OUT/predict.json (threshold and how it was chosen, skipped files, conversions). The threshold is
chosen without test labels: --threshold, else a quantile of the scores of --normal images, else of the
checkpoint's training images."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder (from `decodiff train`)")
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="IMAGES_OR_FOLDER",
        help="image files and/or folders, then any config overrides (key.sub=value, e.g. "
        "infer.batch_size=64 run.cache_dir=DIR)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--category", help="the category the images belong to (needed when the model knows several)")
    p.add_argument("--threshold", type=float, help="decision threshold on the image score (else chosen, see above)")
    p.add_argument(
        "--normal",
        type=Path,
        nargs="+",
        default=[],
        metavar="DIR",
        help="held-out normal images for the threshold (a quantile of their scores)",
    )
    p.add_argument("--quantile", type=_quantile, default=0.99, help="quantile of normal scores (default 0.99)")
    p.add_argument(
        "--config",
        "-c",
        default=None,
        metavar="PRESET",
        help="the config the checkpoint was trained with (default: the one it records)",
    )
    p.add_argument("--no-maps", action="store_true", help="skip the .npy maps")
    p.add_argument("--no-overlays", action="store_true", help="skip the PNG overlays")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from decodiff.harness.evaluation.predict import choose_threshold, load_scorer, predict
    from decodiff.harness.progress import log

    # the positional words: images and folders, and key=value overrides (a file whose name has "=" is an input)
    overrides = [str(p) for p in args.inputs if "=" in str(p) and not p.exists()]
    inputs = [p for p in args.inputs if str(p) not in overrides]
    scorer = load_scorer(args.checkpoint, overrides, args.config, args.category)
    threshold = choose_threshold(scorer, threshold=args.threshold, normal=args.normal, quantile=args.quantile)
    log(f"threshold {threshold.value:.6g}: {threshold.how}")
    res = predict(scorer, inputs, args.out, threshold, save_maps=not args.no_maps, save_overlays=not args.no_overlays)
    for note in res.notes:
        log(note)
    for s in res.skipped:
        log(f"skipped {s['path']}: {s['reason']}")
    log(
        f"{res.scored} image(s) scored: {res.anomalous} anomalous, {res.scored - res.anomalous} normal at threshold "
        f"{threshold.value:.6g} ({res.out / 'scores.csv'})"
    )
    if args.json:
        print_json(res.summary)
    else:
        print(res.out / "scores.csv")
    return 0
