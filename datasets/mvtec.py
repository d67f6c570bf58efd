"""Reader of the MVTec-AD folder layout (also MPDD's, the converted VisA layout and the demo set's).

<root>/<cat>/train/good/*.png, <root>/<cat>/test/<defect>/*.png (good included),
<root>/<cat>/ground_truth/<defect>/<stem>_mask.png (MPDD also <stem>.png; converted VisA
<stem>.png). Grey-scale images (MVTec-AD's grid, screw, zipper) are served as 3 channels
by `Sample.image`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from decodiff.datasets.imageio import DataError
from decodiff.datasets.records import MASKS_HINT, NORMAL, OnBad, Sample, bad_sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".JPG", ".JPEG", ".PNG", ".BMP")


def images_in(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files are ignored)."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def list_categories(root: Path) -> list[str]:
    """Category folders: those that hold a train/ or test/ folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (expected the MVTec-AD layout <root>/<category>/train/good)")
    cats = sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))
    if not cats:
        raise DataError(f"{root}: no category folders with train/ or test/ inside (expected the MVTec-AD layout)")
    return cats


def select_categories(where: Path | str, available: Sequence[str], wanted: Sequence[str] | None) -> list[str]:
    """The requested categories, or all; an unknown name is an error that lists the known ones."""
    if not wanted:
        return list(available)
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise DataError(f"{where}: unknown categories {unknown}; available: {list(available)}")
    return list(wanted)


def find_mask(gt_dir: Path, image: Path, suffixes: Sequence[str]) -> Path | None:
    """`<gt_dir>/<stem><suffix>.png` (or with the image's own extension) for the first suffix found."""
    for suffix in suffixes:
        for ext in dict.fromkeys((".png", image.suffix)):
            cand = gt_dir / f"{image.stem}{suffix}{ext}"
            if cand.is_file():
                return cand
    return None


def read_mvtec(
    root: Path,
    *,
    dataset: str = "mvtec",
    categories: Sequence[str] | None = None,
    splits: Sequence[str] = ("train", "test"),
    mask_suffixes: Sequence[str] = ("_mask",),
    require_masks: bool = True,
    on_bad: OnBad | None = None,
) -> Iterator[Sample]:
    """Samples in a fixed order (category, split, defect, file name).

    An anomalous test image without a mask is a bad sample when `require_masks` (the data set
    has masks); otherwise it is served without one and its pixel metrics are unavailable.
    Bad samples raise a DataError naming the file, or go to `on_bad` (--skip-bad).
    """
    root = Path(root)
    wanted = select_categories(root, list_categories(root), categories)
    for cat in wanted:
        for split in splits:
            split_dir = root / cat / split
            if not split_dir.is_dir():
                bad_sample(on_bad, split_dir, f"missing {split} folder (expected {split_dir}/{NORMAL}/*.png)")
                continue
            found = 0
            for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                defect = defect_dir.name
                label = 0 if defect == NORMAL else 1
                if split == "train" and label:
                    raise DataError(f"{defect_dir}: the train split must hold only '{NORMAL}' images")
                for img in images_in(defect_dir):
                    found += 1
                    mask = None
                    if label:
                        gt_dir = root / cat / "ground_truth" / defect
                        mask = find_mask(gt_dir, img, mask_suffixes)
                        if mask is None and require_masks:
                            bad_sample(
                                on_bad,
                                img,
                                "anomalous test image without a mask (expected "
                                f"{gt_dir / (img.stem + mask_suffixes[0] + '.png')}; {MASKS_HINT})",
                            )
                            continue
                    yield Sample.from_file(
                        root, img, mask, dataset=dataset, category=cat, split=split, label=label, defect=defect
                    )
            if not found:  # an empty category would otherwise drop out of the data set unnoticed
                bad_sample(
                    on_bad,
                    split_dir,
                    f"no images in category {cat!r} ({split} split; expected {split_dir}/<{NORMAL} or defect>/*.png)",
                )
