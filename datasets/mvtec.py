"""Reader of the MVTec-AD folder layout (also MPDD's and the demo set's).

<root>/<cat>/train/good/*.png, <root>/<cat>/test/<defect>/*.png (good included),
<root>/<cat>/ground_truth/<defect>/<stem>_mask.png (MPDD also <stem>.png).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from decodiff.datasets.imageio import DataError
from decodiff.datasets.records import NORMAL, Sample

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".JPG", ".PNG")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in IMAGE_SUFFIXES)


def list_categories(root: Path) -> list[str]:
    """Category folders: those that hold a train/ or test/ folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (expected the MVTec-AD layout <root>/<category>/train/good)")
    cats = sorted(p.name for p in root.iterdir() if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir()))
    if not cats:
        raise DataError(f"{root}: no category folders with train/ or test/ inside (expected the MVTec-AD layout)")
    return cats


def _mask_for(gt_dir: Path, image: Path, suffixes: Sequence[str]) -> Path | None:
    for suffix in suffixes:
        for ext in (".png", image.suffix):
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
) -> Iterator[Sample]:
    """Samples in a fixed order (category, split, defect, file name).

    An anomalous test image without a mask is an error when `require_masks` (the data set
    has masks); otherwise it is served without one and its pixel metrics are unavailable.
    """
    root = Path(root)
    available = list_categories(root)
    wanted = list(categories) if categories else available
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise DataError(f"{root}: unknown categories {unknown}; available: {available}")
    for cat in wanted:
        for split in splits:
            split_dir = root / cat / split
            if not split_dir.is_dir():
                if split == "train" or split == "test":
                    raise DataError(f"{split_dir}: missing {split} folder")
                continue
            for defect_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                defect = defect_dir.name
                label = 0 if defect == NORMAL else 1
                if split == "train" and label:
                    raise DataError(f"{defect_dir}: the train split must hold only '{NORMAL}' images")
                for img in _images(defect_dir):
                    mask = None
                    if label:
                        mask = _mask_for(root / cat / "ground_truth" / defect, img, mask_suffixes)
                        if mask is None and require_masks:
                            raise DataError(
                                f"{img}: anomalous test image without a mask "
                                f"(expected {root / cat / 'ground_truth' / defect / (img.stem + mask_suffixes[0] + '.png')})"
                            )
                    key = img.relative_to(root).with_suffix("").as_posix()
                    yield Sample(
                        key=key,
                        dataset=dataset,
                        category=cat,
                        split=split,
                        label=label,
                        defect=defect,
                        source=str(img),
                        mask_source=str(mask) if mask is not None else None,
                    )
