"""Data sets without masks as a first-class case: one config key equal to `data shard --masks-optional`."""

import numpy as np
import pytest
from PIL import Image

from decodiff.datasets.imageio import DataError
from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data


@pytest.fixture()
def maskless_root(tmp_path):
    """The MVTec-AD layout with anomalous test images and no ground_truth folder at all."""
    rng = np.random.default_rng(0)
    root = tmp_path / "raw"
    for split, defect, n in (("train", "good", 4), ("test", "good", 2), ("test", "crack", 3)):
        for i in range(n):
            p = root / "widget" / split / defect / f"{i:03d}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(p)
    return root


def test_a_mask_less_folder_stops_without_the_key_and_shards_with_it(maskless_root, tmp_path):
    base = [f"data.root={maskless_root}", "data.dataset=mvtec", f"run.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(DataError, match="data.masks_optional=true"):
        prepare_data(build_config("tiny", base))
    data = prepare_data(build_config("tiny", base + ["data.masks_optional=true"]))
    counts = data.manifest.counts["test"]["widget"]
    assert counts["anomalous"] == 3 and counts["normal"] == 2
    assert data.manifest.args["masks_optional"] is True
