"""Reader of the user's own image folders: normal images, anomalous images, optional masks.

One category:   <root>/{normal, anomalous, masks}/...   (category name: the folder's name)
Several:        <root>/<cat>/{normal, anomalous, masks}/...
The folder names are found among common spellings (normal|good|ok, anomalous|abnormal|anomaly|
bad|defect|ng, masks|mask|ground_truth) or given (relative to the category folder).
Anomalous images lie directly in the anomalous folder (defect type "anomalous") or in one
sub-folder per defect type. A mask is <masks>[/<defect>]/<stem>.png or <stem>_mask.png; any
non-zero value is anomalous. Without a mask folder the set has no masks and pixel metrics are
reported as not available.

Split: all anomalous images are test images. Normal images go to the test split from a
`normal_test` folder when given, otherwise a fixed share (test_fraction) of them is chosen by
a hash of the file name, so adding images never moves the others between splits.
Keys are image paths relative to <root> without extension.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from decodiff.datasets.imageio import DataError
from decodiff.datasets.mvtec import find_mask, images_in, select_categories
from decodiff.datasets.records import MASKS_HINT, NORMAL, OnBad, Sample, bad_sample

NORMAL_NAMES = ("normal", "good", "ok", "OK")
ANOMALOUS_NAMES = ("anomalous", "abnormal", "anomaly", "bad", "defect", "defects", "ng", "NG")
MASK_NAMES = ("masks", "mask", "ground_truth")
ANOMALOUS = "anomalous"  # defect type of anomalous images without a defect sub-folder


def _pick(folder: Path, given: str | None, names: Sequence[str]) -> Path | None:
    if given:
        return Path(given) if Path(given).is_absolute() else folder / given
    return next((folder / n for n in names if (folder / n).is_dir()), None)


def folder_categories(root: Path, normal: str | None = None) -> dict[str, Path]:
    """category -> its folder: <root> itself when it holds the normal folder, else its sub-folders that do."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (expected <root>/normal, <root>/anomalous[, <root>/masks])")
    here = _pick(root, normal, NORMAL_NAMES)
    if here is not None and here.is_dir():
        return {root.name: root}
    cats = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        d = _pick(sub, normal, NORMAL_NAMES)
        if d is not None and d.is_dir():
            cats[sub.name] = sub
    if not cats:
        names = normal or "|".join(NORMAL_NAMES)
        raise DataError(
            f"{root}: no normal-image folder ({names}) in it or in its sub-folders "
            "(expected <root>/normal, <root>/anomalous[, <root>/masks]; name them with --normal/--anomalous/--masks)"
        )
    return cats


def _is_test(name: str, fraction: float) -> bool:
    h = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def read_folder(
    root: Path,
    *,
    dataset: str = "folder",
    categories: Sequence[str] | None = None,
    normal: str | None = None,
    anomalous: str | None = None,
    masks: str | None = None,
    normal_test: str | None = None,
    test_fraction: float = 0.2,
    require_masks: bool | None = None,
    on_bad: OnBad | None = None,
) -> Iterator[Sample]:
    """Samples per category: train normals, test normals, then anomalous images by defect type."""
    root = Path(root)
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"--test-fraction {test_fraction}: expected a number in [0, 1)")
    found = folder_categories(root, normal)
    wanted = select_categories(root, list(found), categories)
    for cat in wanted:
        cat_dir = found[cat]
        normal_dir = _pick(cat_dir, normal, NORMAL_NAMES)
        anomalous_dir = _pick(cat_dir, anomalous, ANOMALOUS_NAMES)
        mask_dir = _pick(cat_dir, masks, MASK_NAMES)
        test_dir = _pick(cat_dir, normal_test, ()) if normal_test else None
        for given, d, what in (
            (anomalous, anomalous_dir, "anomalous"),
            (masks, mask_dir, "mask"),
            (normal_test, test_dir, "normal test"),
        ):
            if given and (d is None or not d.is_dir()):
                raise DataError(f"{d}: {what} folder not found")
        needs_masks = mask_dir is not None if require_masks is None else require_masks
        assert normal_dir is not None
        normals = images_in(normal_dir)
        if not normals:
            bad_sample(on_bad, normal_dir, "no normal images in it")
        if test_dir is not None:
            split_of = {p: "train" for p in normals}
            split_of.update({p: "test" for p in images_in(test_dir)})
        else:
            split_of = {p: "test" if _is_test(p.name, test_fraction) else "train" for p in normals}
        for split in ("train", "test"):
            for img in (p for p in split_of if split_of[p] == split):
                yield Sample.from_file(root, img, dataset=dataset, category=cat, split=split, label=0, defect=NORMAL)
        if anomalous_dir is None:
            continue
        groups = [(ANOMALOUS, anomalous_dir, mask_dir)] + [
            (d.name, d, mask_dir / d.name if mask_dir is not None else None)
            for d in sorted(p for p in anomalous_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        ]
        for defect, folder, defect_masks in groups:
            for img in images_in(folder):
                mask = None
                for d in (defect_masks, mask_dir):
                    if mask is None and d is not None and d.is_dir():
                        mask = find_mask(d, img, ("", "_mask"))
                if mask is None and needs_masks:
                    bad_sample(
                        on_bad,
                        img,
                        f"anomalous image without a mask (expected {(defect_masks or mask_dir)}/"
                        f"{img.stem}.png or {img.stem}_mask.png; {MASKS_HINT})",
                    )
                    continue
                yield Sample.from_file(
                    root, img, mask, dataset=dataset, category=cat, split="test", label=1, defect=defect
                )
