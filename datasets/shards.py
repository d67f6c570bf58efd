"""Writing a data set into WebDataset tar shards with a manifest.

Shards hold one split and one category each (so a category can be streamed alone) and are
bounded in size and count. Each tar is written under a temporary name and renamed when
complete: a killed run never leaves a tar that looks finished.
"""
from __future__ import annotations

import json
import os
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import webdataset as wds
from PIL import Image

from decodiff.datasets.imageio import DataError, encode_png, read_mask, read_rgb
from decodiff.datasets.manifest import Manifest, ShardInfo, sha256_file
from decodiff.datasets.records import Sample

Progress = Callable[[int, int | None], None]


def member_key(key: str) -> str:
    """Tar member stem for a sample key: WebDataset splits a member name at the first dot of
    its base name, so dots (and '%') are escaped; the true key travels in meta.json."""
    return key.replace("%", "%25").replace(".", "%2E")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def _resize_crop(img: Image.Image, resize: int | None, crop: int | None, resample: int) -> Image.Image:
    if resize:
        img = img.resize((resize, resize), resample)  # aspect ratio not kept (published protocol)
    if crop:
        w, h = img.size
        if crop > min(w, h):
            raise DataError(f"crop {crop} is larger than the image ({w}x{h})")
        left, top = (w - crop) // 2, (h - crop) // 2
        img = img.crop((left, top, left + crop, top + crop))
    return img


def encode_sample(sample: Sample, resize: int | None = None, crop: int | None = None) -> tuple[dict[str, Any], tuple[int, int]]:
    """The WebDataset record of a sample; original bytes pass through when nothing is resized."""
    meta = sample.meta()
    rec: dict[str, Any] = {"__key__": member_key(sample.key)}
    src = Path(sample.source)
    if not resize and not crop and sample.load_image is None and src.suffix.lower() in (".png", ".jpg", ".jpeg"):
        data = src.read_bytes()
        arr = read_rgb(data, name=str(src))  # validates: a corrupt file fails here, naming it
        ext = "png" if src.suffix.lower() == ".png" else "jpg"
        rec[f"image.{ext}"] = data
        size = arr.shape[:2]
    else:
        arr = sample.image()
        img = _resize_crop(Image.fromarray(arr), resize, crop, Image.BILINEAR)
        rec["image.png"] = encode_png(np.asarray(img))
        size = (img.size[1], img.size[0])
    mask = sample.mask()
    if mask is not None:
        if mask.shape != tuple(arr.shape[:2]):
            raise DataError(
                f"{sample.mask_source or sample.key}: mask size {mask.shape[1]}x{mask.shape[0]} differs from "
                f"its image {arr.shape[1]}x{arr.shape[0]} ({sample.source})"
            )
        m = Image.fromarray(mask.astype(np.uint8) * 255)
        # masks follow the images' interpolation; readers threshold at > 0 (published protocol)
        m = _resize_crop(m, resize, crop, Image.BILINEAR)
        rec["mask.png"] = encode_png(np.asarray(m))
    meta["size"] = list(size)
    rec["meta.json"] = json.dumps(meta).encode()
    return rec, size


class _GroupWriter:
    """Writes one (split, category) group into size-bounded shards."""

    def __init__(self, out: Path, split: str, category: str, max_bytes: int, max_count: int):
        self.out, self.split, self.category = out, split, category
        self.max_bytes, self.max_count = max_bytes, max_count
        self.index = 0
        self.done: list[ShardInfo] = []
        self._tar: wds.TarWriter | None = None
        self._file = None
        self._count = 0
        self._bytes = 0

    def _name(self) -> str:
        return f"{self.split}-{_safe(self.category)}-{self.index:05d}.tar"

    def write(self, rec: dict[str, Any]) -> None:
        size = sum(len(v) for k, v in rec.items() if not k.startswith("__"))
        if self._tar is not None and (self._count >= self.max_count or self._bytes + size > self.max_bytes):
            self.close()
        if self._tar is None:
            tmp = self.out / (self._name() + f".tmp-{os.getpid()}")
            self._file = open(tmp, "wb")
            self._tar = wds.TarWriter(self._file, encoder=False, mtime=0.0)
            self._count = self._bytes = 0
        self._tar.write(rec)
        self._count += 1
        self._bytes += size

    def close(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        name = self._name()
        tmp = self.out / (name + f".tmp-{os.getpid()}")
        final = self.out / name
        os.replace(tmp, final)
        self.done.append(
            ShardInfo(name=name, split=self.split, category=self.category, count=self._count,
                      bytes=final.stat().st_size, sha256=sha256_file(final))
        )
        self.index += 1
        self._tar = None


class ShardSetWriter:
    """Accumulates records into per-(split, category) shards; `finish` writes the manifest last."""

    def __init__(self, out: Path, *, max_bytes: int = 256 << 20, max_count: int = 2000):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_count = max_bytes, max_count
        self.writers: dict[tuple[str, str], _GroupWriter] = {}
        self.counts: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.sizes: set[tuple[int, int]] = set()
        self.categories: list[str] = []
        self.has_masks = True
        self.n = 0

    def add(self, rec: dict[str, Any], *, split: str, category: str, label: int, defect: str,
            has_mask: bool, size: tuple[int, int] | None = None) -> None:
        if category not in self.categories:
            self.categories.append(category)
        group = (split, category)
        if group not in self.writers:
            self.writers[group] = _GroupWriter(self.out, split, category, self.max_bytes, self.max_count)
        self.writers[group].write(rec)
        if size is not None:
            self.sizes.add(tuple(size))
        c = self.counts[split].setdefault(category, {"normal": 0, "anomalous": 0, "defects": {}, "no_mask": 0})
        c["anomalous" if label else "normal"] += 1
        c["defects"][defect] = c["defects"].get(defect, 0) + 1
        if not has_mask:
            c["no_mask"] += 1
            self.has_masks = False
        self.n += 1

    def finish(self, dataset: str, args: dict[str, Any] | None = None) -> Manifest:
        for w in self.writers.values():
            w.close()
        manifest = Manifest(
            dataset=dataset,
            categories=self.categories,
            shards=[s for w in self.writers.values() for s in w.done],
            counts=dict(self.counts),
            image_size=list(next(iter(self.sizes))) if len(self.sizes) == 1 else None,
            args={**(args or {}), "max_bytes": self.max_bytes, "max_count": self.max_count,
                  "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            has_masks=self.has_masks,
        )
        manifest.save(self.out)
        return manifest


def write_shards(
    samples: Iterable[Sample],
    out: Path,
    *,
    dataset: str,
    max_bytes: int = 256 << 20,
    max_count: int = 2000,
    resize: int | None = None,
    crop: int | None = None,
    args: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Shard `samples` into `out` and write its manifest.json last."""
    writer = ShardSetWriter(out, max_bytes=max_bytes, max_count=max_count)
    for sample in samples:
        rec, size = encode_sample(sample, resize, crop)
        writer.add(rec, split=sample.split, category=sample.category, label=sample.label, defect=sample.defect,
                   has_mask=sample.has_mask, size=size)
        if progress:
            progress(writer.n, None)
    return writer.finish(dataset, {**(args or {}), "resize": resize, "crop": crop})


def decode_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A raw tar record -> {"key", "image" (HxWx3 uint8), "mask" (HxW bool or None), "meta"}."""
    meta = json.loads(rec["meta.json"])
    name = f"{rec.get('__url__', '?')}:{meta['key']}"
    img_bytes = rec.get("image.png", rec.get("image.jpg"))
    if img_bytes is None:
        raise DataError(f"{name}: shard sample without image.png/image.jpg")
    image = read_rgb(img_bytes, name=name)
    mask = read_mask(rec["mask.png"], name=name + " (mask)") if "mask.png" in rec else None
    if mask is None and meta.get("has_mask") and meta.get("label") == 0:
        mask = np.zeros(image.shape[:2], dtype=bool)
    return {"key": meta["key"], "image": image, "mask": mask, "meta": meta}


