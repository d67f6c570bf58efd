"""An image's label for the image-level metrics: the data set's own (metadata), or the rule of
the authors' code, which calls an image anomalous when its (resized, cropped) mask has a positive
pixel. They differ where a defect lies outside the center crop (the crop cuts it away) or where a
mask is empty."""

from __future__ import annotations

import numpy as np

IMAGE_LABELS = ("metadata", "mask-max")


def image_label(rule: str, label: int, mask: np.ndarray | None) -> int:
    """`mask`: the image's cropped ground-truth mask, None where it has none (a normal image, or a
    data set without masks): such images keep their metadata label under either rule."""
    if rule not in IMAGE_LABELS:
        raise ValueError(f"image label rule must be one of {IMAGE_LABELS}, got {rule!r}")
    if rule == "metadata" or mask is None:
        return int(label)
    return int(bool(np.asarray(mask).any()))
