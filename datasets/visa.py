"""Reader of VisA (Zou et al., 2022) in its raw layout and in the converted layout.

Raw (as published by amazon-science/spot-diff):
  <root>/<cat>/Data/Images/{Normal,Anomaly}/*.JPG, <root>/<cat>/Data/Masks/Anomaly/<stem>.png
  (any non-zero value is anomalous), optional <root>/<cat>/image_anno.csv (image,label,mask),
  and the split file <root>/split_csv/1cls.csv with the columns object,split,label,image,mask
  (label "normal" or "anomaly"; paths relative to <root>; mask empty for normal images).
Converted (what spot-diff's prepare_data.py and other toolkits write, often under 1cls/):
  <root>/<cat>/{train/good, test/good, test/bad, ground_truth/bad/<stem>.png}.

Keys are the image paths relative to <root> without extension
(`candle/Data/Images/Anomaly/000`, or `candle/test/bad/000` in the converted layout).
The defect type is the label of image_anno.csv where present (e.g. "chunk of wax missing"),
otherwise "bad" as in the converted layout.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from decodiff.datasets.imageio import DataError
from decodiff.datasets.mvtec import read_mvtec, select_categories
from decodiff.datasets.records import MASKS_HINT, NORMAL, OnBad, Sample, bad_sample

CATEGORIES = (
    "candle",
    "capsules",
    "cashew",
    "chewinggum",
    "fryum",
    "macaroni1",
    "macaroni2",
    "pcb1",
    "pcb2",
    "pcb3",
    "pcb4",
    "pipe_fryum",
)
SPLIT_COLUMNS = ("object", "split", "label", "image", "mask")
EXTRA = "\0extra"  # where csv puts the fields of a row longer than the header
ANOMALOUS = "bad"  # defect type where image_anno.csv gives none (the converted layout's folder name)


def is_raw(root: Path) -> bool:
    root = Path(root)
    return (root / "split_csv").is_dir() or any((p / "Data" / "Images").is_dir() for p in _subdirs(root))


def _subdirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def converted_root(root: Path) -> Path:
    """The folder that holds the converted categories: <root> itself, or <root>/1cls."""
    root = Path(root)
    if (root / "1cls").is_dir() and not any((p / "train").is_dir() for p in _subdirs(root)):
        return root / "1cls"
    return root


def read_visa(
    root: Path,
    *,
    dataset: str = "visa",
    categories: Sequence[str] | None = None,
    split_csv: str | Path | None = None,
    require_masks: bool = True,
    on_bad: OnBad | None = None,
) -> Iterator[Sample]:
    """Samples of either layout (the raw one when split_csv/ or <cat>/Data/Images exists)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"{root}: data folder not found (expected VisA: <root>/split_csv/1cls.csv and "
            "<root>/<category>/Data/Images, or the converted <root>/<category>/train/good)"
        )
    if split_csv is not None or is_raw(root):
        csv_path = Path(split_csv) if split_csv else root / "split_csv" / "1cls.csv"
        yield from _read_raw(root, csv_path, categories, dataset, require_masks, on_bad)
    else:
        yield from read_mvtec(
            converted_root(root),
            dataset=dataset,
            categories=categories,
            mask_suffixes=("", "_mask"),
            require_masks=require_masks,
            on_bad=on_bad,
        )


def _read_split_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError(
            f"{path}: VisA split file not found (expected split_csv/1cls.csv from the VisA release, "
            "or give it with --split-csv)"
        )
    try:
        return _split_rows(path)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason}); save the split file as UTF-8"
        ) from None
    except csv.Error as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None


def _split_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: a BOM (Excel's UTF-8 CSV) is dropped
        reader = csv.DictReader(f, restkey=EXTRA)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in SPLIT_COLUMNS if c not in header]
        if missing:
            raise DataError(
                f"{path}: columns {header} do not match the VisA split file; expected "
                f"{','.join(SPLIT_COLUMNS)} (missing {missing})"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            if row.get(EXTRA):
                raise DataError(
                    f"{path}:{line}: {len(header) + len(row[EXTRA])} fields, expected {len(header)} "
                    f"({','.join(header)}); a comma inside a path must be quoted"
                )
            if any(v is None for v in row.values()):
                raise DataError(f"{path}:{line}: fewer fields than the {len(header)} columns ({','.join(header)})")
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if row["split"] not in ("train", "test"):
                raise DataError(f"{path}:{line}: split {row['split']!r}, expected 'train' or 'test'")
            if row["label"] not in ("normal", "anomaly"):
                raise DataError(f"{path}:{line}: label {row['label']!r}, expected 'normal' or 'anomaly'")
            if row["split"] == "train" and row["label"] != "normal":
                raise DataError(
                    f"{path}:{line}: an anomalous training image; the 1cls split trains on normal "
                    "images only (the 2cls splits are not for unsupervised training)"
                )
            if not row["image"] or not row["object"]:
                raise DataError(f"{path}:{line}: empty object or image column")
            for col in ("image", "mask"):
                p = row[col]
                if p and (Path(p).is_absolute() or ".." in Path(p.replace("\\", "/")).parts):
                    raise DataError(
                        f"{path}:{line}: {col} path {p!r} leaves the data set folder (expected a "
                        "path relative to the VisA root)"
                    )
            rows.append(row)
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def _defect_labels(cat_dir: Path) -> dict[str, str]:
    """image path (relative to the VisA root) -> defect label, from <cat>/image_anno.csv if present."""
    path = cat_dir / "image_anno.csv"
    if not path.is_file():
        return {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "image" not in reader.fieldnames or "label" not in reader.fieldnames:
                raise DataError(f"{path}: columns {reader.fieldnames}, expected image,label,mask")
            return {r["image"].strip(): (r["label"] or "").strip() for r in reader if r.get("image")}
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def _read_raw(
    root: Path,
    csv_path: Path,
    categories: Sequence[str] | None,
    dataset: str,
    require_masks: bool,
    on_bad: OnBad | None,
) -> Iterator[Sample]:
    """Samples in the split file's categories, each category's train rows then its test rows."""
    rows = _read_split_csv(csv_path)
    available = list(dict.fromkeys(r["object"] for r in rows))
    wanted = select_categories(csv_path, available, categories)
    for cat in wanted:
        cat_dir = root / cat
        if not cat_dir.is_dir():
            bad_sample(on_bad, cat_dir, f"missing category folder (listed in {csv_path})")
            continue
        defects = _defect_labels(cat_dir)
        mine = [r for r in rows if r["object"] == cat]
        for split in ("train", "test"):
            for row in sorted((r for r in mine if r["split"] == split), key=lambda r: r["image"]):
                img = root / row["image"]
                if not img.is_file():
                    bad_sample(on_bad, img, f"image listed in {csv_path} not found")
                    continue
                label = int(row["label"] == "anomaly")
                mask = None
                if label:
                    mask = root / row["mask"] if row["mask"] else None
                    if mask is None or not mask.is_file():
                        if require_masks:
                            bad_sample(
                                on_bad,
                                img,
                                "anomalous test image without a mask (expected "
                                f"{mask or cat_dir / 'Data/Masks/Anomaly' / (img.stem + '.png')}; {MASKS_HINT})",
                            )
                            continue
                        mask = None
                defect = NORMAL if not label else (defects.get(row["image"]) or ANOMALOUS)
                yield Sample.from_file(
                    root, img, mask, dataset=dataset, category=cat, split=split, label=label, defect=defect
                )
