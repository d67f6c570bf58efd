"""The published pre-processing end to end: an MVTec-AD folder of real PNG files (not square,
not 288 px) goes through sharding and the test loader of the default config, and every image
and mask must equal an independent PIL computation of the protocol: resize to 288 x 288
(bilinear, aspect ratio not kept), center crop 256, [-1, 1]; masks resized the same way and
thresholded at > 0. Training augmentation: shifts of at most 4 px and 180-degree rotations."""

import random

import numpy as np
import pytest
from PIL import Image

from decodiff.datasets.transforms import Preprocess
from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.data import test_loader as make_test_loader


@pytest.fixture()
def mvtec_root(tmp_path, image_writer):
    rng = np.random.default_rng(0)
    root = tmp_path / "mvtec"
    h, w = 300, 340  # neither square nor the resize size
    for i in range(2):
        image_writer(
            root / "bottle" / "train" / "good" / f"{i:03d}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        )
    image_writer(root / "bottle" / "test" / "good" / "000.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    for i in range(2):
        image_writer(
            root / "bottle" / "test" / "crack" / f"{i:03d}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        )
        mask = np.zeros((h, w), np.uint8)
        mask[100 + 40 * i : 131 + 40 * i, 150:157] = 255  # a thin region: its resized edges are fractional
        mask[5, 5] = 1  # a faint pixel: "> 0" keeps it where it survives the resize
        image_writer(root / "bottle" / "ground_truth" / "crack" / f"{i:03d}_mask.png", mask)
    return root


def _reference_image(path) -> np.ndarray:
    img = Image.open(path).convert("RGB").resize((288, 288), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.float32)[16:272, 16:272]
    return arr.transpose(2, 0, 1) / 127.5 - 1.0


def _reference_mask(path) -> np.ndarray:
    binary = (np.asarray(Image.open(path)) > 0).astype(np.uint8) * 255  # any non-zero is anomalous
    m = np.asarray(Image.fromarray(binary).resize((288, 288), Image.BILINEAR))[16:272, 16:272]
    return m > 0


def test_published_resize_crop_and_mask_threshold_end_to_end(mvtec_root, tmp_path):
    cfg = build_config(None, ["data.dataset=mvtec", f"data.root={mvtec_root}", f"run.cache_dir={tmp_path / 'cache'}"])
    assert (cfg.data.resize, cfg.data.crop) == (288, 256)
    data = prepare_data(cfg)
    seen = 0
    for batch in make_test_loader(cfg, data):
        for i, key in enumerate(batch["key"]):
            image = batch["image"][i].numpy()
            assert image.shape == (3, 256, 256) and image.dtype == np.float32
            np.testing.assert_allclose(image, _reference_image(mvtec_root / f"{key}.png"), atol=1e-6)
            defect, stem = key.split("/")[2], key.split("/")[3]
            if defect == "good":
                assert not batch["mask"][i].any() and int(batch["label"][i]) == 0  # normal: an empty mask
                continue
            want = _reference_mask(mvtec_root / "bottle" / "ground_truth" / defect / f"{stem}_mask.png")
            got = batch["mask"][i].numpy()
            assert got.dtype == bool and np.array_equal(got, want)
            assert int(batch["label"][i]) == 1 and got.sum() > 31 * 7 * (256 / 300) * (256 / 340) * 0.9
            seen += 1
    assert seen == 2


def test_training_augmentation_is_a_small_shift_or_a_half_turn():
    x = np.random.default_rng(1).integers(0, 256, (288, 288, 3), dtype=np.uint8)
    sample = {"key": "k", "image": x, "meta": {"label": 0, "category": "c", "defect": "good"}}
    crops = {(dx, dy): x[16 + dy : 272 + dy, 16 + dx : 272 + dx] for dx in range(-4, 5) for dy in range(-4, 5)}
    shifts, turned = set(), 0
    for seed in range(24):
        out = Preprocess(resize=288, crop=256, translate=4, rotate180=True)(sample, random.Random(seed))["image"]
        hwc = ((out.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().astype(np.uint8)
        found = [(d, False) for d, c in crops.items() if np.array_equal(hwc, c)]
        found += [(d, True) for d, c in crops.items() if np.array_equal(hwc[::-1, ::-1], c)]
        assert found, f"seed {seed}: not a shift of at most 4 px of the centre crop (or its half turn)"
        shifts.add(found[0][0])
        turned += found[0][1]
    assert (0, 0) in shifts and len(shifts) > 3 and 0 < turned < 24
