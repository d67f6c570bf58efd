"""Image labels: the data set's, or the authors' code's max of the cropped mask."""

import numpy as np
import pytest

from decodiff.harness.metrics.labels import image_label


def test_mask_max_follows_the_cropped_mask_and_metadata_keeps_the_label():
    empty, spot = np.zeros((8, 8), bool), np.zeros((8, 8), bool)
    spot[3, 4] = True
    assert image_label("metadata", 1, empty) == 1  # a defect the crop cut away stays anomalous
    assert image_label("mask-max", 1, empty) == 0  # ... and is normal by the authors' rule
    assert image_label("mask-max", 0, spot) == 1
    assert image_label("mask-max", 1, None) == 1 and image_label("mask-max", 0, None) == 0  # no mask: metadata
    with pytest.raises(ValueError, match="image label rule"):
        image_label("max", 1, spot)


def test_a_defect_the_crop_cuts_away_is_normal_only_under_mask_max():
    """A defect outside the center crop: an image whose mask lies in the border that the crop
    removes is normal under mask-max, anomalous under metadata (the real pre-processing)."""
    from decodiff.datasets.transforms import Preprocess

    image = np.zeros((40, 40, 3), np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[0:3, 0:3] = True  # in the corner: cropped away by the 32-px center crop
    out = Preprocess(resize=None, crop=32)(
        {"key": "k", "image": image, "mask": mask, "meta": {"label": 1, "category": "c", "defect": "d"}}
    )
    m = out["mask"].numpy()
    assert image_label("metadata", int(out["label"]), m) == 1 and image_label("mask-max", int(out["label"]), m) == 0
