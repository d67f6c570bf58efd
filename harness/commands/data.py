"""`decodiff data demo|shard`: make the demo set; shard a native layout into WebDataset tars."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="data sets: generate the demo set, shard native layouts",
                       description="Data set tools.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    d = dsub.add_parser("demo", help="generate the embedded demo data set (MVTec-AD layout)",
                        description="Generate the demo data set deterministically from scikit-image's bundled images.")
    d.add_argument("--out", required=True, type=Path, help="folder to write (reused if it already holds the same set)")
    d.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    d.add_argument("--n-train", type=int, default=80, help="normal training images per category (default 80)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=run_demo)

    s = dsub.add_parser("shard", help="write WebDataset shards and a manifest.json from a native layout",
                        description="Read a data set in its native layout and write size-bounded WebDataset shards "
                                    "(one split and category per shard) plus manifest.json with counts and sha256s.")
    s.add_argument("--dataset", required=True, choices=["demo", "mvtec", "mpdd"], help="native layout of --root")
    s.add_argument("--root", required=True, type=Path, help="data set folder")
    s.add_argument("--out", required=True, type=Path, help="output folder for shards + manifest.json")
    s.add_argument("--categories", nargs="+", help="only these categories")
    s.add_argument("--resize", type=int, help="resize images (and masks) to NxN at shard time")
    s.add_argument("--crop", type=int, help="then center-crop to MxM")
    s.add_argument("--max-mb", type=int, default=256, help="shard size bound in MB (default 256)")
    s.set_defaults(func=run_shard)


def run_demo(args: argparse.Namespace) -> int:
    from decodiff.datasets.demo import generate_demo
    from decodiff.harness.progress import log

    info = generate_demo(args.out, size=args.size, n_train=args.n_train, seed=args.seed)
    log(f"demo data set in {info.root}")
    print(info.root)
    return 0


def run_shard(args: argparse.Namespace) -> int:
    from decodiff.datasets.shards import write_shards
    from decodiff.harness.data import _reader
    from decodiff.harness.progress import Progress, log

    with Progress("shard", unit="img") as p:
        manifest = write_shards(_reader(args.dataset, args.root, args.categories), args.out, dataset=args.dataset,
                                max_bytes=args.max_mb << 20, resize=args.resize, crop=args.crop,
                                args={"root": str(args.root), "categories": args.categories},
                                progress=lambda n, _: p.update(1))
    log(f"{len(manifest.shards)} shards, {sum(s.count for s in manifest.shards)} samples in {args.out}")
    print(args.out)
    return 0
