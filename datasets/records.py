"""The one sample record that every data set reader yields and every shard holds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decodiff.datasets.imageio import DataError, read_mask, read_rgb

NORMAL = "good"  # defect type of normal samples, as in MVTec-AD
# how to keep anomalous images that have no mask (their pixel metrics are then null with a reason)
MASKS_HINT = "to keep it without one: --masks-optional, or data.masks_optional=true"


@dataclass
class Sample:
    """A data set sample, lazily loaded so that listing a data set costs no decoding.

    `key` is the image path relative to the data set root without its extension
    (`bottle/test/broken_large/000`): the same key in shards, maps and reports.
    """

    key: str
    dataset: str
    category: str
    split: str  # "train" | "test" (| "val")
    label: int  # 0 normal, 1 anomalous
    defect: str  # NORMAL for normal samples
    source: str  # path of the image file (or URL)
    mask_source: str | None = None  # path of the ground-truth mask, None where there is none
    load_image: Callable[[], np.ndarray] | None = field(default=None, repr=False)
    load_mask: Callable[[], np.ndarray | None] | None = field(default=None, repr=False)
    extra: dict = field(default_factory=dict)  # data-set specific meta (Real-IAD: camera view)

    def meta(self) -> dict:
        """The JSON-serialisable part, as stored in a shard's `meta.json`."""
        return {
            "key": self.key,
            "dataset": self.dataset,
            "category": self.category,
            "split": self.split,
            "label": int(self.label),
            "defect": self.defect,
            "source": self.source,
            "has_mask": self.has_mask,
            **self.extra,
        }

    @classmethod
    def from_file(cls, root: Path, image: Path, mask: Path | None = None, **fields: Any) -> Sample:
        """The sample of an image file under a data set's root: its key is the path there."""
        key = image.relative_to(root).with_suffix("").as_posix()
        return cls(key=key, source=str(image), mask_source=str(mask) if mask is not None else None, **fields)

    @property
    def has_mask(self) -> bool:
        """Whether the ground truth is known per pixel (normal images: all normal)."""
        return self.label == 0 or self.mask_source is not None or self.load_mask is not None

    def image(self) -> np.ndarray:
        """HxWx3 uint8 RGB (grey-scale images are served as 3 channels)."""
        if self.load_image is None:
            return read_rgb(Path(self.source))
        return self.load_image()

    def mask(self) -> np.ndarray | None:
        """HxW bool; None for normal samples (all normal) and where no mask exists."""
        if self.load_mask is not None:
            return self.load_mask()
        if self.mask_source is None:
            return None

        return read_mask(Path(self.mask_source))


# A reader's answer to a sample it cannot serve: (path of the offending file, what is wrong).
OnBad = Callable[[str, str], None]


def bad_sample(on_bad: OnBad | None, path: str | Path, reason: str) -> None:
    """Raise a DataError naming the file, or hand it to `on_bad` (--skip-bad) to list it."""
    if on_bad is None:
        raise DataError(f"{path}: {reason}")
    on_bad(str(path), reason)
