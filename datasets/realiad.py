"""Reader of Real-IAD (Wang et al., CVPR 2024): per-category JSON files over image folders.

  <root>/realiad_jsons/<cat>.json (or realiad_jsons/realiad_jsons/, realiad_jsons_sv/,
  realiad_jsons_fuiad_0.x/: choose with json_dir), each an object
  {"meta": {"prefix", "normal_class": "OK", ...},
   "train": [{"category", "anomaly_class", "image_path", "mask_path"}, ...], "test": [...]}
  <root>/realiad_{256,512,1024,raw}/<cat>/OK/S0001/<cat>_0001_OK_C1_<time>.jpg,
  <root>/realiad_<res>/<cat>/NG/<code>/S0002/..._C3_<time>.{jpg,png} (mask).

image_path and mask_path are relative to realiad_<res>/<cat>/ (a path that already starts
with <cat>/ is taken relative to realiad_<res>/). `anomaly_class` equal to meta.normal_class
("OK") is normal; otherwise it is the defect code (AK pit, BX deformation, CH abrasion,
HS scratch, PS damage, QS missing parts, YW foreign objects, ZW contamination).
Keys are image paths relative to realiad_<res>/ without extension, so that the same image
has the same key at every resolution. The camera view (C1..C5) goes into the meta as "view".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from decodiff.datasets.imageio import DataError
from decodiff.datasets.mvtec import select_categories
from decodiff.datasets.records import MASKS_HINT, NORMAL, OnBad, Sample, bad_sample

CATEGORIES = (
    "audiojack",
    "bottle_cap",
    "button_battery",
    "end_cap",
    "eraser",
    "fire_hood",
    "mint",
    "mounts",
    "pcb",
    "phone_battery",
    "plastic_nut",
    "plastic_plug",
    "porcelain_doll",
    "regulator",
    "rolled_strip_base",
    "sim_card_set",
    "switch",
    "tape",
    "terminalblock",
    "toothbrush",
    "toy",
    "toy_brick",
    "transistor1",
    "u_block",
    "usb",
    "usb_adaptor",
    "vcpill",
    "wooden_beads",
    "woodstick",
    "zipper",
)
RESOLUTIONS = ("256", "512", "1024", "raw")
DEFECT_NAMES = {
    "AK": "pit",
    "BX": "deformation",
    "CH": "abrasion",
    "HS": "scratch",
    "PS": "damage",
    "QS": "missing parts",
    "YW": "foreign objects",
    "ZW": "contamination",
}
_VIEW = re.compile(r"_(C[1-5])(?:_|$)")


def resolution_dir(root: Path, resolution: str | int | None = None) -> Path:
    """realiad_<resolution>/ (default: 256 if present, else the smallest present)."""
    root = Path(root)
    present = [r for r in RESOLUTIONS if (root / f"realiad_{r}").is_dir()]
    if resolution is not None:
        res = str(resolution)
        if res not in RESOLUTIONS:
            raise DataError(f"--resolution {res}: expected one of {list(RESOLUTIONS)}")
        if res not in present:
            raise DataError(
                f"{root / f'realiad_{res}'}: image folder not found (present: "
                f"{[f'realiad_{r}' for r in present] or 'none'})"
            )
        return root / f"realiad_{res}"
    if not present:
        raise DataError(
            f"{root}: no Real-IAD image folder (expected realiad_256, realiad_512, realiad_1024 or realiad_raw)"
        )
    return root / f"realiad_{present[0]}"


def json_folder(root: Path, json_dir: str | Path | None = None) -> Path:
    """The folder of <category>.json files: json_dir (relative to root or absolute) or the first of
    realiad_jsons/realiad_jsons/, realiad_jsons/ that holds JSON files."""
    root = Path(root)
    if json_dir is not None:
        cand = Path(json_dir) if Path(json_dir).is_absolute() else root / json_dir
        if not cand.is_dir() or not list(cand.glob("*.json")):
            raise DataError(f"{cand}: no Real-IAD <category>.json files there (--json-dir)")
        return cand
    for cand in (root / "realiad_jsons" / "realiad_jsons", root / "realiad_jsons"):
        if cand.is_dir() and list(cand.glob("*.json")):
            return cand
    raise DataError(
        f"{root}: no Real-IAD JSON folder (expected realiad_jsons/<category>.json; give another with --json-dir)"
    )


def list_realiad_categories(root: Path, json_dir: str | Path | None = None) -> list[str]:
    return sorted(p.stem for p in json_folder(root, json_dir).glob("*.json"))


def _load(path: Path) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or not any(isinstance(doc.get(s), list) for s in ("train", "test")):
        raise DataError(f"{path}: expected a JSON object with 'train' and 'test' lists (Real-IAD layout)")
    meta = doc.get("meta") or {}
    if not isinstance(meta, dict):
        raise DataError(f"{path}: 'meta' must be an object")
    normal = str(meta.get("normal_class", "OK"))
    splits = {}
    for split in ("train", "test"):
        entries = doc.get(split, [])
        if not isinstance(entries, list):
            raise DataError(f"{path}: '{split}' must be a list")
        for i, e in enumerate(entries):
            if (
                not isinstance(e, dict)
                or not isinstance(e.get("image_path"), str)
                or not isinstance(e.get("anomaly_class"), str)
                or not e["anomaly_class"]
            ):
                raise DataError(
                    f"{path}: {split}[{i}] must be an object with image_path and anomaly_class "
                    f"(non-empty strings; and mask_path), got {str(e)[:120]}"
                )
        splits[split] = entries
    return normal, splits


def _resolve(img_root: Path, cat: str, rel: str) -> Path:
    path = img_root / cat / rel
    if not path.exists() and rel.startswith(cat + "/"):
        path = img_root / rel
    normal = Path(os.path.normpath(path))
    if normal != img_root and img_root not in normal.parents:
        raise DataError(f"{rel}: path in the JSON leaves the image folder {img_root}")
    return normal


def read_realiad(
    root: Path,
    *,
    dataset: str = "realiad",
    categories: Sequence[str] | None = None,
    resolution: str | int | None = None,
    json_dir: str | Path | None = None,
    require_masks: bool = True,
    on_bad: OnBad | None = None,
) -> Iterator[Sample]:
    """Samples per category in JSON order (train, then test)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found (expected Real-IAD: realiad_jsons/ and realiad_256/ ...)")
    folder = json_folder(root, json_dir)
    img_root = resolution_dir(root, resolution)
    wanted = select_categories(folder, list_realiad_categories(root, json_dir), categories)
    for cat in wanted:
        path = folder / f"{cat}.json"
        normal, splits = _load(path)
        if not (img_root / cat).is_dir():
            bad_sample(on_bad, img_root / cat, f"missing category folder (listed in {path})")
            continue
        for split in ("train", "test"):
            for i, e in enumerate(splits.get(split, [])):
                img = _resolve(img_root, cat, e["image_path"])
                if not img.is_file():
                    bad_sample(on_bad, img, f"image of {path.name} {split}[{i}] not found")
                    continue
                code = str(e["anomaly_class"])
                label = int(code != normal)
                if split == "train" and label:
                    bad_sample(on_bad, img, f"{path.name} {split}[{i}]: anomalous image ({code}) in the train split")
                    continue
                mask = None
                if label:
                    mp = e.get("mask_path")
                    mask = _resolve(img_root, cat, mp) if mp else None
                    if mask is None or not mask.is_file():
                        if require_masks:
                            bad_sample(
                                on_bad,
                                img,
                                f"anomalous test image without a mask ({path.name} {split}[{i}] "
                                f"mask_path {mp!r}; {MASKS_HINT})",
                            )
                            continue
                        mask = None
                view = _VIEW.search(img.stem)
                extra = {"view": view.group(1)} if view else {}
                if label:
                    extra["defect_name"] = DEFECT_NAMES.get(code, code)
                yield Sample.from_file(
                    img_root,
                    img,
                    mask,
                    dataset=dataset,
                    category=cat,
                    split=split,
                    label=label,
                    defect=NORMAL if not label else code,
                    extra=extra,
                )
