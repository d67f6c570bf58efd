"""A validation split for choosing settings without looking at the test set.

The paper tunes on the test sets. Here a share of each category's normal *training* images is
held out: the model never trains on them, and each one enters a validation set twice over, as
itself (normal) and with synthetic defects painted by `datasets.defects.synthesize_defect`
(exact pixel masks). A sweep can rank its trials on this set and report the test metrics
beside it, untouched by the choice.

The split is two shard sets in the cache, made once per (data, categories, settings):
`<cache>/validation/<tag>/train` (the remaining normal images, records copied byte for byte)
and `<cache>/validation/<tag>/val` (the held-out images and their defective copies, under the
split name "test" so that `evaluate` reads it like any test set).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import webdataset as wds
from PIL import Image

from decodiff.datasets.defects import DEFECT_KINDS, SUBTLE_FRACTION, DefectError, synthesize_defect
from decodiff.datasets.demo import CATEGORIES, foreign_textures
from decodiff.datasets.files import mark_used
from decodiff.datasets.imageio import DataError, encode_png, read_rgb
from decodiff.datasets.manifest import Manifest
from decodiff.datasets.records import NORMAL
from decodiff.datasets.shard_record import member_key
from decodiff.datasets.shards import ShardSetWriter
from decodiff.datasets.stream import shard_urls
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData
from decodiff.harness.progress import Progress, log

# change whenever the split's content would change (2: a demo category's share of faint defects, as its test set)
SPLIT_VERSION = "decodiff-validation/2"


@dataclass(frozen=True)
class ValidationSettings:
    holdout: float = 0.2  # share of each category's normal training images held out
    defects: int = 2  # defective copies per held-out image
    seed: int = 0


def _tag(cfg: Config, data: PreparedData, s: ValidationSettings) -> str:
    spec = {
        "version": SPLIT_VERSION,
        "data": data.manifest.checksum,
        "categories": sorted(data.categories),
        "holdout": s.holdout,
        "defects": s.defects,
        "seed": s.seed,
        "resize": cfg.data.resize,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def split_folder(cfg: Config, data: PreparedData, settings: ValidationSettings) -> Path:
    return Path(cfg.run.cache_dir) / "validation" / _tag(cfg, data, settings)


def held_out(keys: list[str], settings: ValidationSettings) -> set[str]:
    """A deterministic share of `keys` (at least one, never all): ranked by a seeded hash."""
    if len(keys) < 2:
        raise DataError(f"validation split: a category with {len(keys)} training image(s) cannot give some up")
    n = min(len(keys) - 1, max(1, round(settings.holdout * len(keys))))
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{settings.seed}:{k}".encode()).hexdigest())
    return set(ranked[:n])


def validation_split(
    cfg: Config, data: PreparedData, settings: ValidationSettings, build: bool = True
) -> tuple[PreparedData, PreparedData]:
    """(training data without the held-out images, validation data); built once, then reused."""
    folder = split_folder(cfg, data, settings)
    if not (folder / "val" / "manifest.json").is_file():
        if not build:
            raise DataError(f"{folder}: validation split not built yet")
        _build(cfg, data, settings, folder)
    else:
        mark_used(folder)
    train_m, val_m = Manifest.load(folder / "train"), Manifest.load(folder / "val")
    n_val = val_m.count("test")
    train = PreparedData(
        str(folder / "train"),
        train_m,
        list(data.categories),
        f"{data.source}, without the {data.manifest.count('train', data.categories) - train_m.count('train')} "
        f"images held out for validation",
    )
    val = PreparedData(
        str(folder / "val"),
        val_m,
        list(data.categories),
        f"validation split of {data.source}: {n_val} images (held-out normal training images and "
        f"synthetic defects on them, {settings.defects} per image)",
    )
    return train, val


def _raw_records(urls: list[str]):
    for rec in wds.tarfile_to_samples()(iter([{"url": u} for u in urls])):
        yield {k: v for k, v in rec.items() if k == "__key__" or not k.startswith("__")}


def _build(cfg: Config, data: PreparedData, settings: ValidationSettings, folder: Path) -> None:
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        _write_split(cfg, data, settings, folder, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed build leaves nothing behind (retries made one each)
        raise
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)  # another process may have finished the same split first: keep theirs
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "val" / "manifest.json").is_file():
            raise


def _write_split(cfg: Config, data: PreparedData, settings: ValidationSettings, folder: Path, tmp: Path) -> None:
    log(
        f"validation: holding out {settings.holdout:.0%} of the normal training images per category "
        f"with {settings.defects} synthetic defect(s) each, in {folder}"
    )
    train_w = ShardSetWriter(tmp / "train")
    val_w = ShardSetWriter(tmp / "val")
    demo = data.manifest.dataset == "demo"
    total = data.manifest.count("train", data.categories)
    unpainted: list[str] = []  # held-out images on which no defect kind could be painted
    with Progress("validation split", total=total, unit="img") as prog:
        for cat in data.categories:
            urls = shard_urls(data.location, data.manifest, "train", [cat])
            keys = [json.loads(r["meta.json"])["key"] for r in _raw_records(urls)]
            chosen = held_out(keys, settings)
            kinds = CATEGORIES[cat].defects if demo and cat in CATEGORIES else DEFECT_KINDS
            # the demo's own mix of faint defects (grass and gravel: fewer, as their test sets paint them)
            subtle = CATEGORIES[cat].subtle if demo and cat in CATEGORIES else SUBTLE_FRACTION
            textures = foreign_textures(cat if demo and cat in CATEGORIES else None)
            n_val = defects_here = 0
            for rec in _raw_records(urls):
                meta = json.loads(rec["meta.json"])
                img_bytes = rec.get("image.png", rec.get("image.jpg"))
                if meta["key"] not in chosen:
                    size = Image.open(io.BytesIO(img_bytes)).size
                    train_w.add(
                        rec, split="train", category=cat, label=0, defect=NORMAL, has_mask=True, size=(size[1], size[0])
                    )
                else:
                    image = read_rgb(img_bytes, name=meta["key"])
                    if cfg.data.resize and image.shape[:2] != (cfg.data.resize, cfg.data.resize):
                        image = np.asarray(
                            Image.fromarray(image).resize((cfg.data.resize, cfg.data.resize), Image.BILINEAR)
                        )
                    stem = meta["key"].rsplit("/", 1)[-1]
                    _add_val(val_w, meta, f"{cat}/val/{NORMAL}/{stem}", image, None, NORMAL)
                    for j in range(settings.defects):
                        first = (n_val * settings.defects + j) % len(kinds)
                        code = int(hashlib.sha256(meta["key"].encode()).hexdigest()[:8], 16)
                        rng = np.random.default_rng([settings.seed, code, j])
                        order = [*kinds[first:], *kinds[:first]]  # its kind first, then the others in turn
                        painted = _first_paintable(image, order, rng, textures, subtle)
                        if painted is None:
                            unpainted.append(meta["key"])
                            continue
                        kind, bad, mask = painted
                        _add_val(val_w, meta, f"{cat}/val/{kind}/{stem}-{j}", bad, mask, kind)
                        defects_here += 1
                    n_val += 1
                prog.update(1)
            if settings.defects and not defects_here:  # only normal images: no image AUROC to select by
                raise DataError(
                    f"validation split: no synthetic defect fits on any held-out image of category {cat!r} "
                    f"(flat images?): it cannot be validated"
                )
    if unpainted:
        log(
            f"validation split: {len(unpainted)} synthetic defect(s) not painted: no defect kind fits on "
            f"{', '.join(sorted(set(unpainted))[:3])}{' ...' if len(set(unpainted)) > 3 else ''} (flat images?)"
        )
    train_w.finish(data.manifest.dataset, {"validation_of": data.location, "held_out": True, **settings.__dict__})
    val_w.finish(
        data.manifest.dataset, {"validation_of": data.location, "synthetic_defects": True, **settings.__dict__}
    )


def _first_paintable(
    image: np.ndarray, order: list[str], rng: np.random.Generator, textures: Sequence[np.ndarray], subtle: float
) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(kind, image, mask) of the first kind in `order` that this image takes, or None: a flat image may
    refuse some (a piece moved within a uniform region changes nothing). The demo's images take every kind
    they are given, so their split is as before."""
    for kind in order:
        try:
            return (kind, *synthesize_defect(image, kind, rng, textures, subtle=subtle))
        except DefectError:
            continue
    return None


def _add_val(
    writer: ShardSetWriter, meta: dict, key: str, image: np.ndarray, mask: np.ndarray | None, defect: str
) -> None:
    label = 0 if mask is None else 1
    new_meta = {
        "key": key,
        "dataset": meta["dataset"],
        "category": meta["category"],
        "split": "test",
        "label": label,
        "defect": defect if label == 0 else f"synthetic_{defect}",
        "source": f"{meta['key']} (held out)",
        "has_mask": True,
        "size": [image.shape[0], image.shape[1]],
    }
    rec = {"__key__": member_key(key), "image.png": encode_png(image), "meta.json": json.dumps(new_meta).encode()}
    if mask is not None:
        rec["mask.png"] = encode_png(mask.astype(np.uint8) * 255)
    writer.add(
        rec,
        split="test",
        category=meta["category"],
        label=label,
        defect=new_meta["defect"],
        has_mask=True,
        size=(image.shape[0], image.shape[1]),
    )
