"""One sample as a record of a shard: the tar member stem its key becomes, and a record read back
into a sample. The writer (shards.py), the readers (stream.py, the training feed, evaluation)
and the writers of derived shard sets (latent cache, validation) all take them from here."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from decodiff.datasets.imageio import DataError, read_mask, read_rgb


def member_key(key: str) -> str:
    """Tar member stem for a sample key: WebDataset splits a member name at the first dot of
    its base name, so dots (and '%') are escaped; the true key travels in meta.json."""
    return key.replace("%", "%25").replace(".", "%2E")


def decode_record(rec: dict[str, Any]) -> dict[str, Any]:
    """A raw tar record -> {"key", "image" (HxWx3 uint8), "mask" (HxW bool or None), "meta"}."""
    where = f"{rec.get('__url__', '?')}: sample {rec.get('__key__', '?')}"
    if "meta.json" not in rec:
        raise DataError(f"{where} has no meta.json (a truncated or damaged shard)")
    try:
        meta = json.loads(rec["meta.json"])
        name = f"{rec.get('__url__', '?')}:{meta['key']}"
    except (ValueError, KeyError, TypeError):
        raise DataError(f"{where}: unreadable meta.json (a damaged shard)") from None
    img_bytes = rec.get("image.png", rec.get("image.jpg"))
    if img_bytes is None:
        raise DataError(f"{name}: shard sample without image.png/image.jpg")
    image = read_rgb(img_bytes, name=name)
    mask = read_mask(rec["mask.png"], name=name + " (mask)") if "mask.png" in rec else None
    if mask is None and meta.get("has_mask") and meta.get("label") == 0:
        mask = np.zeros(image.shape[:2], dtype=bool)
    return {"key": meta["key"], "image": image, "mask": mask, "meta": meta}
