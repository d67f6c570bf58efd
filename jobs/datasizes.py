"""How many images a run trains and evaluates on: from a shard manifest when there is one,
else from the published sizes of the benchmark data sets.

Published sizes (standard unsupervised splits; training images are all normal):
- MVTec-AD (Bergmann et al., CVPR 2019): 15 categories, 3,629 train / 1,725 test, per category below.
- VisA (Zou et al., ECCV 2022), the "1cls" split: 12 categories, 8,659 train / 2,162 test.
- MPDD (Jezek et al., 2021): 6 categories, 888 train / 458 test.
- Real-IAD (Wang et al., CVPR 2024), the single-view split used by multi-class benchmarks:
  30 categories, 36,465 train / 114,585 test (of 151,050 images).
Where per-category counts are not listed, a category subset gets its share of the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from decodiff.datasets.manifest import MANIFEST, Manifest
from decodiff.datasets.registry import DATASETS

MVTEC = {  # category: (train, test)
    "bottle": (209, 83),
    "cable": (224, 150),
    "capsule": (219, 132),
    "carpet": (280, 117),
    "grid": (264, 78),
    "hazelnut": (391, 110),
    "leather": (245, 124),
    "metal_nut": (220, 115),
    "pill": (267, 167),
    "screw": (320, 160),
    "tile": (230, 117),
    "toothbrush": (60, 42),
    "transistor": (213, 100),
    "wood": (247, 79),
    "zipper": (240, 151),
}
PUBLISHED = {
    "mvtec": (3629, 1725),
    "visa": (8659, 2162),
    "mpdd": (888, 458),
    "realiad": (36465, 114585),
}  # (train, test)


@dataclass
class DataSize:
    dataset: str
    categories: list[str]
    train: int
    test: int
    source: str  # "manifest PATH", "published sizes", "demo settings"
    image_size: int | None = None  # the stored images' side where known (square images only)


def published_categories(dataset: str) -> list[str] | None:
    """The official category list of a benchmark data set (from the data set registry)."""
    spec = DATASETS.get(dataset)
    return list(spec.categories) if spec is not None and spec.categories else None


def published_size(dataset: str, categories: list[str] | None = None) -> DataSize | None:
    all_cats = published_categories(dataset)
    if dataset not in PUBLISHED or not all_cats:
        return None
    train, test = PUBLISHED[dataset]
    cats = list(categories) if categories else list(all_cats)
    if dataset == "mvtec" and all(c in MVTEC for c in cats):
        return DataSize(
            dataset, cats, sum(MVTEC[c][0] for c in cats), sum(MVTEC[c][1] for c in cats), "published sizes"
        )
    share = len(cats) / len(all_cats)
    note = "published sizes" if share == 1 else f"published sizes, {len(cats)}/{len(all_cats)} categories pro rata"
    return DataSize(dataset, cats, round(train * share), round(test * share), note)


def manifest_size(
    location: str | Path, categories: list[str] | None = None, manifest: Manifest | None = None
) -> DataSize | None:
    """Counts from a shard manifest: `manifest` when the caller has read it already, else the local
    file at `location` (None when there is none)."""
    folder = Path(location)
    if manifest is None:
        if not (folder / MANIFEST).is_file():
            return None
        manifest = Manifest.load(folder)
    cats = list(categories) if categories else sorted(manifest.categories)
    side = manifest.image_size
    return DataSize(
        manifest.dataset,
        cats,
        manifest.count("train", cats),
        manifest.count("test", cats),
        f"manifest {folder / MANIFEST}",
        side[0] if side and side[0] == side[1] else None,
    )


def demo_size(demo: dict, categories: list[str] | None = None) -> DataSize:
    """The embedded demo set's counts from its settings (data.demo.*), without generating it."""
    from decodiff.datasets.demo import CATEGORIES, DEMO_CATEGORIES  # scikit-image: 0.4 s, only for the demo

    cats = list(categories or demo.get("categories") or DEMO_CATEGORIES)
    test = sum(
        demo["n_test_good"] + demo["n_test_per_defect"] * len(CATEGORIES[c].defects) for c in cats if c in CATEGORIES
    )
    return DataSize("demo", cats, demo["n_train"] * len(cats), test, "demo settings", demo["size"])


def data_size(data: dict, manifest: Manifest | None = None) -> DataSize | None:
    """The sizes for a config's `data` section (a resolved config's, as a dict): its shards'
    manifest (`manifest`, when already read), the demo settings, or the published sizes of its data
    set; None for a folder data set without shards. The one count plans and sweep estimates use."""
    cats = data["categories"]
    if data["shards"] or manifest is not None:
        found = manifest_size(data["shards"] or "", cats, manifest)
        if found:
            return found
    if data["dataset"] == "demo":
        return demo_size(data["demo"], cats)
    return published_size(data["dataset"], cats)


def image_side(data: dict, size: DataSize) -> int:
    """The side of the images the model sees: the crop, else the resize, else the data's own size
    (256 where it is not known)."""
    return int(data["crop"] or data["resize"] or size.image_size or 256)
