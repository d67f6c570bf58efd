"""Data set names -> their readers, options, official categories and how to recognise them.

`read_dataset("visa", root)` is what the CLI (`decodiff data shard`) and the harness call;
`detect_layout(root)` is what `decodiff data inspect` uses when no --dataset is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decodiff.datasets.folder import folder_categories, read_folder
from decodiff.datasets.imageio import DataError
from decodiff.datasets.mvtec import read_mvtec
from decodiff.datasets.realiad import CATEGORIES as REALIAD_CATEGORIES
from decodiff.datasets.realiad import read_realiad
from decodiff.datasets.records import OnBad, Sample
from decodiff.datasets.visa import CATEGORIES as VISA_CATEGORIES
from decodiff.datasets.visa import converted_root, is_raw, read_visa

MVTEC_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)
MPDD_CATEGORIES = ("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    read: Callable[..., Iterator[Sample]]  # read(root, *, dataset, categories, on_bad, **options)
    options: tuple[str, ...] = ()  # reader keywords the command line may set
    categories: tuple[str, ...] = ()  # the official list (empty for user data)
    has_masks: bool = True  # anomalous images must have masks unless masks_optional


def _mpdd(root: Path, **kw: Any) -> Iterator[Sample]:
    """MPDD: the MVTec-AD layout with masks named <stem>_mask.png or <stem>.png."""
    return read_mvtec(root, mask_suffixes=("_mask", ""), **kw)


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec("mvtec", "MVTec-AD", read_mvtec, categories=MVTEC_CATEGORIES),
        DatasetSpec(
            "visa",
            "VisA (raw with split_csv/1cls.csv, or converted)",
            read_visa,
            options=("split_csv",),
            categories=VISA_CATEGORIES,
        ),
        DatasetSpec("mpdd", "MPDD", _mpdd, categories=MPDD_CATEGORIES),
        DatasetSpec(
            "realiad", "Real-IAD", read_realiad, options=("resolution", "json_dir"), categories=REALIAD_CATEGORIES
        ),
        DatasetSpec(
            "folder",
            "your own normal/anomalous[/masks] folders",
            read_folder,
            options=("normal", "anomalous", "masks", "normal_test", "test_fraction"),
            has_masks=False,
        ),
        DatasetSpec("demo", "the embedded demo set (MVTec-AD layout)", read_mvtec),
    )
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DataError(f"dataset {name!r}: unknown; known: {dataset_names()}")
    return DATASETS[name]


def read_dataset(
    name: str,
    root: Path | str,
    categories: Sequence[str] | None = None,
    *,
    on_bad: OnBad | None = None,
    masks_optional: bool = False,
    **options: Any,
) -> Iterator[Sample]:
    """The samples of data set `name` at `root` (options that are None are left at their defaults)."""
    s = spec(name)
    given = {k: v for k, v in options.items() if v is not None}
    wrong = [k for k in given if k not in s.options]
    if wrong:
        flags = ", ".join("--" + k.replace("_", "-") for k in wrong)
        raise DataError(
            f"{flags}: not an option of the {name} reader (its options: "
            f"{', '.join('--' + o.replace('_', '-') for o in s.options) or 'none'})"
        )
    kw: dict[str, Any] = {
        "dataset": name,
        "categories": list(categories) if categories else None,
        "on_bad": on_bad,
        **given,
    }
    if masks_optional:
        kw["require_masks"] = False
    return s.read(Path(root), **kw)


def detect_layout(root: Path | str) -> str | None:
    """The data set name whose layout `root` has, or None. MVTec-like layouts are told apart by
    their categories (VisA's and MPDD's names), the rest by their marker files."""
    root = Path(root)
    if not root.is_dir():
        return None
    if (root / "demo.json").is_file():
        return "demo"
    if (
        any((root / f"realiad_{r}").is_dir() for r in ("256", "512", "1024", "raw"))
        or (root / "realiad_jsons").is_dir()
    ):
        return "realiad"
    if is_raw(root):
        return "visa"
    subdirs = {
        p.name
        for p in converted_root(root).iterdir()
        if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir())
    }
    if subdirs:
        if subdirs <= set(VISA_CATEGORIES):
            return "visa"
        if subdirs <= set(MPDD_CATEGORIES):
            return "mpdd"
        return "mvtec"
    try:
        folder_categories(root)
        return "folder"
    except DataError:
        return None
