"""`decodiff data demo|shard|inspect`: make the demo set; shard a native layout into WebDataset
tars; say what a shard set or a data set folder holds and what is wrong with it."""

from __future__ import annotations

import argparse
from pathlib import Path

from decodiff.datasets.registry import DATASETS
from decodiff.harness.commands.common import add_actions

READER_OPTIONS = ("split_csv", "resolution", "json_dir", "normal", "anomalous", "masks", "normal_test", "test_fraction")


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a whole number >= 1")
    return v


def _add_reader_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("layout options (only for the data sets named)")
    g.add_argument("--split-csv", type=Path, help="visa: the split file (default <root>/split_csv/1cls.csv)")
    g.add_argument(
        "--resolution",
        choices=["256", "512", "1024", "raw"],
        help="realiad: which realiad_<N> image folder (default 256 if present, else the smallest)",
    )
    g.add_argument("--json-dir", help="realiad: folder of <category>.json (default realiad_jsons/)")
    g.add_argument("--normal", help="folder: normal-image folder name (default normal|good|ok)")
    g.add_argument("--anomalous", help="folder: anomalous-image folder name (default anomalous|abnormal|bad|defect|ng)")
    g.add_argument("--masks", help="folder: mask folder name (default masks|mask|ground_truth; none: no masks)")
    g.add_argument("--normal-test", help="folder: folder of normal test images (default: a share of the normal ones)")
    g.add_argument(
        "--test-fraction", type=float, help="folder: share of normal images held out for testing (default 0.2)"
    )


def _reader_options(args: argparse.Namespace) -> dict:
    return {k: getattr(args, k) for k in READER_OPTIONS if getattr(args, k, None) is not None}


HELP = "data sets: generate the demo set, shard native layouts, inspect"
DESCRIPTION = "Data set tools."


def add_arguments(p: argparse.ArgumentParser) -> None:
    dsub = add_actions(p, "data_command")

    d = dsub.add_parser(
        "demo",
        help="generate the embedded demo data set (MVTec-AD layout)",
        description="Generate the demo data set deterministically from scikit-image's bundled images.",
    )
    d.add_argument("--out", required=True, type=Path, help="folder to write (reused if it already holds the same set)")
    d.add_argument("--size", type=int, default=128, help="image size in pixels (default 128)")
    d.add_argument("--n-train", type=int, default=80, help="normal training images per category (default 80)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=run_demo)

    names = ", ".join(f"{n} ({s.title})" for n, s in DATASETS.items())
    s = dsub.add_parser(
        "shard",
        help="write WebDataset shards and a manifest.json from a native layout",
        description="Read a data set in its native layout and write size-bounded WebDataset shards (one split and "
        "category per shard) plus manifest.json with counts, image sizes, sha256 per shard and the "
        "arguments. Parallel over --workers processes; an interrupted run continues where it stopped "
        f"when run again with the same arguments. Data sets: {names}.",
    )
    s.add_argument("--dataset", required=True, choices=list(DATASETS), help="native layout of --root")
    s.add_argument("--root", required=True, type=Path, help="data set folder")
    s.add_argument("--out", required=True, type=Path, help="output folder for shards + manifest.json")
    s.add_argument("--categories", nargs="+", help="only these categories")
    s.add_argument("--resize", type=_positive, help="resize images (and masks) to NxN at shard time")
    s.add_argument("--crop", type=_positive, help="then center-crop to MxM")
    s.add_argument("--max-mb", type=_positive, default=256, help="shard size bound in MB (default 256)")
    s.add_argument("--max-count", type=_positive, default=2000, help="samples per shard at most (default 2000)")
    s.add_argument("--workers", type=_positive, default=1, help="processes writing shards in parallel (default 1)")
    s.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out unreadable samples with a warning (listed under 'skipped' in the manifest) instead of stopping",
    )
    s.add_argument(
        "--masks-optional",
        action="store_true",
        help="keep anomalous images that have no mask (their pixel metrics are not available)",
    )
    s.add_argument("--verify", action="store_true", help="re-read every shard and check its sha256 at the end")
    _add_reader_args(s)
    s.set_defaults(func=run_shard)

    i = dsub.add_parser(
        "inspect",
        help="what a shard set or data set folder holds and what is wrong with it",
        description="Count samples per split, category, label and defect type, tally image sizes and list problems "
        "of a shard set (folder with manifest.json, or a URL) or a native data set folder. Exit code 1 "
        "when there are errors.",
    )
    i.add_argument("location", metavar="DIR", help="shard set folder/URL or data set folder")
    i.add_argument("--dataset", choices=list(DATASETS), help="layout of a native folder (default: recognised)")
    i.add_argument("--verify", action="store_true", help="shard sets: check every shard's sha256")
    i.add_argument("--deep", action="store_true", help="decode every image and mask (slow)")
    i.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    _add_reader_args(i)
    i.set_defaults(func=run_inspect)


def run_demo(args: argparse.Namespace) -> int:
    from decodiff.datasets.demo import generate_demo
    from decodiff.harness.progress import log

    info = generate_demo(args.out, size=args.size, n_train=args.n_train, seed=args.seed)
    log(f"demo data set in {info.root}")
    print(info.root)
    return 0


def run_shard(args: argparse.Namespace) -> int:
    from decodiff.datasets.shards import shard_dataset
    from decodiff.harness.progress import Progress, log

    with Progress("shard", unit="img") as p:
        manifest = shard_dataset(
            args.dataset,
            args.root,
            args.out,
            categories=args.categories,
            options=_reader_options(args),
            masks_optional=args.masks_optional,
            skip_bad=args.skip_bad,
            workers=args.workers,
            resize=args.resize,
            crop=args.crop,
            max_bytes=args.max_mb << 20,
            max_count=args.max_count,
            verify=args.verify,
            progress=lambda n, total: (setattr(p, "total", total), p.update(n - p.n)),
            log=log,
        )
    n = sum(s.count for s in manifest.shards)
    log(
        f"{len(manifest.shards)} shards, {n} samples in {args.out}"
        + (f"; {len(manifest.skipped)} skipped (listed in manifest.json)" if manifest.skipped else "")
    )
    print(args.out)
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from decodiff.datasets.inspect import format_inspection, inspect_location
    from decodiff.harness.commands.common import print_json
    from decodiff.harness.progress import Progress

    with Progress("inspect", unit="item", stream=None) as p:
        ins = inspect_location(
            args.location,
            dataset=args.dataset,
            options=_reader_options(args),
            verify=args.verify,
            deep=args.deep,
            progress=lambda n, total: (setattr(p, "total", total), p.update(n - p.n)),
        )
    if args.json:
        print_json(ins.to_json())
    else:
        print(format_inspection(ins))
    return 0 if ins.ok else 1
