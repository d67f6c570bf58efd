"""The validation split: held-out normal training images, never trained on, plus synthetic defects
with exact masks; deterministic, reused, and read by `evaluate` like any test set."""

import hashlib
import json

import numpy as np
import pytest
import webdataset as wds

from decodiff.datasets.defects import SUBTLE_FRACTION, synthesize_defect
from decodiff.datasets.demo import CATEGORIES, foreign_textures
from decodiff.datasets.imageio import DataError, read_mask, read_rgb
from decodiff.harness import data as data_mod
from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.evaluation.validation import ValidationSettings, held_out, validation_split


def records(prepared, split):
    urls = prepared.urls(split)
    return list(wds.tarfile_to_samples()(iter([{"url": u} for u in urls])))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    cache = tmp_path_factory.mktemp("val-cache")
    cfg = build_config("tiny", [f"run.cache_dir={cache}", "data.demo.categories=[grass,coins]"])
    return cfg, prepare_data(cfg)


def test_held_out_images_leave_training_and_come_back_with_defects(demo):
    cfg, data = demo
    settings = ValidationSettings(holdout=0.25, defects=2, seed=3)
    train, val = validation_split(cfg, data, settings)
    orig = {json.loads(r["meta.json"])["key"] for r in records(data, "train")}
    kept = {json.loads(r["meta.json"])["key"] for r in records(train, "train")}
    assert kept < orig and len(orig - kept) == 2 * 2  # 25% of 8 per category, 2 categories
    assert train.manifest.checksum != data.manifest.checksum  # so the training key differs too
    val_recs = records(val, "test")
    metas = [json.loads(r["meta.json"]) for r in val_recs]
    assert len(metas) == 4 * (1 + 2)
    sources = {m["source"].split(" ")[0] for m in metas}
    assert sources == orig - kept  # every validation image is a held-out training image
    for rec, meta in zip(val_recs, metas):
        img = read_rgb(rec["image.png"])
        if meta["label"]:
            mask = read_mask(rec["mask.png"])
            assert meta["defect"].startswith("synthetic_") and 0.004 < mask.mean() < 0.11
            assert mask.shape == img.shape[:2]
        else:
            assert meta["defect"] == "good" and "mask.png" not in rec
    batch = next(iter(data_mod.test_loader(cfg, val)))  # evaluate reads it like a test set
    assert batch["has_mask"].all() and set(batch["label"].tolist()) == {0, 1}


def test_demo_defects_are_painted_as_the_categorys_test_set_paints_them(demo):
    """Its defect kinds and its share of faint defects (grass: 0.2, not the default 0.35): each
    synthetic defect is re-painted from its seed; some would differ with the default share."""
    cfg, data = demo
    settings = ValidationSettings(holdout=0.5, defects=4, seed=0)
    _, val = validation_split(cfg, data, settings)
    val_recs = records(val, "test")
    metas = [json.loads(r["meta.json"]) for r in val_recs]
    good = {m["source"].split(" ")[0]: read_rgb(r["image.png"]) for r, m in zip(val_recs, metas) if not m["label"]}
    checked, default_differs = 0, 0
    for rec, meta in zip(val_recs, metas):
        if not (meta["label"] and meta["category"] == "grass"):
            continue
        source = meta["source"].split(" ")[0]
        kind = meta["defect"].removeprefix("synthetic_")
        assert kind in CATEGORIES["grass"].defects

        j = int(meta["key"].rsplit("-", 1)[1])
        seed = [0, int(hashlib.sha256(source.encode()).hexdigest()[:8], 16), j]
        paint = [
            synthesize_defect(good[source], kind, np.random.default_rng(seed), foreign_textures("grass"), subtle=f)[0]
            for f in (CATEGORIES["grass"].subtle, SUBTLE_FRACTION)
        ]
        stored = read_rgb(rec["image.png"])
        assert np.array_equal(stored, paint[0])
        default_differs += not np.array_equal(stored, paint[1])
        checked += 1
    assert checked == 4 * 4 and default_differs >= 1


def test_split_is_deterministic_and_reused(demo, tmp_path):
    cfg, data = demo
    settings = ValidationSettings(holdout=0.25, defects=1, seed=0)
    a_train, a_val = validation_split(cfg, data, settings)
    stamp = (a_val.manifest.checksum, a_train.manifest.checksum)
    again = validation_split(cfg, data, settings)  # found in the cache, not rebuilt
    assert (again[1].manifest.checksum, again[0].manifest.checksum) == stamp
    other = build_config("tiny", [f"run.cache_dir={tmp_path}", "data.demo.categories=[grass,coins]"])
    b_train, b_val = validation_split(other, prepare_data(other), settings)
    assert b_val.manifest.checksum == stamp[0]  # byte-identical elsewhere (training records keep their source paths)
    assert {json.loads(r["meta.json"])["key"] for r in records(b_train, "train")} == {
        json.loads(r["meta.json"])["key"] for r in records(a_train, "train")
    }
    c_train, _ = validation_split(cfg, data, ValidationSettings(holdout=0.25, defects=1, seed=1))
    assert c_train.manifest.checksum != a_train.manifest.checksum


def test_held_out_rule():
    keys = [f"k{i}" for i in range(10)]
    s = ValidationSettings(holdout=0.2, seed=0)
    assert held_out(keys, s) == held_out(list(reversed(keys)), s) and len(held_out(keys, s)) == 2
    assert len(held_out(keys[:2], ValidationSettings(holdout=0.9))) == 1  # never all
    with pytest.raises(DataError, match="cannot give some up"):
        held_out(keys[:1], s)


def _folder_data(tmp_path):
    """The images under tmp_path/images as a folder data set (64 px), sharded into tmp_path/cache."""
    cfg = build_config(
        "tiny",
        [
            f"run.cache_dir={tmp_path / 'cache'}",
            "data.dataset=folder",
            f"data.root={tmp_path / 'images'}",
            "data.masks_optional=true",
            "data.resize=64",
        ],
    )
    return cfg, prepare_data(cfg)


def test_flat_images_get_the_defect_kinds_they_can_take(tmp_path):
    """A user's folder may hold flat images, on which a displaced piece changes nothing: the split paints
    the next kind that fits instead of failing the whole sweep (it did: `could not paint a displaced
    defect`), and an image that takes none of the kinds asked for is left without that defect."""
    from PIL import Image

    from decodiff.harness.evaluation.validation import _first_paintable

    rng = np.random.default_rng(0)
    for kind, n in (("normal", 8), ("anomalous", 2)):
        (tmp_path / "images" / "flat" / kind).mkdir(parents=True)
        for i in range(n):
            img = np.full((64, 64, 3), 90 + 10 * i, np.uint8)
            if i == 1:  # one textured, the rest flat
                img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / "images" / "flat" / kind / f"{i:02d}.png")
    cfg, data = _folder_data(tmp_path)
    _, val = validation_split(cfg, data, ValidationSettings(holdout=0.5, defects=5, seed=0))
    metas = [json.loads(r["meta.json"]) for r in records(val, "test")]
    held = {m["source"].split(" ")[0] for m in metas}
    defects = [m for m in metas if m["label"]]
    assert any(not k.endswith("/01") for k in held)  # flat ones among them
    assert held and len(defects) == 5 * len(held)  # every held-out image got all its defects
    flat = np.full((64, 64, 3), 120, np.uint8)
    assert _first_paintable(flat, ["displaced"], np.random.default_rng(0), (), 0.35) is None
    kind, bad, mask = _first_paintable(flat, ["displaced", "stain"], np.random.default_rng(0), (), 0.35)
    assert kind == "stain" and mask.any() and (bad[mask] != 120).any()


def test_a_failed_build_leaves_no_temporary_folder(tmp_path):
    from PIL import Image

    for kind in ("normal", "anomalous"):
        (tmp_path / "images" / "one" / kind).mkdir(parents=True)
        Image.fromarray(np.full((64, 64, 3), 100, np.uint8)).save(tmp_path / "images" / "one" / kind / "00.png")
    cfg, data = _folder_data(tmp_path)
    with pytest.raises(DataError, match="cannot give some up"):
        validation_split(cfg, data, ValidationSettings(holdout=0.2, defects=1, seed=0))
    assert list((tmp_path / "cache" / "validation").iterdir()) == []
