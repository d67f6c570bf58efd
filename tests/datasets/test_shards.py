"""MVTec-AD layout -> WebDataset shards -> stream: counts, labels, masks and keys survive."""

import json
import tarfile

import numpy as np
import pytest

from decodiff.datasets.imageio import DataError
from decodiff.datasets.manifest import Manifest
from decodiff.datasets.mvtec import read_mvtec
from decodiff.datasets.shards import write_shards
from decodiff.datasets.stream import ShardStream, assigned, shard_urls


@pytest.fixture()
def mvtec(tmp_path, image_writer):
    """A two-category MVTec-AD layout with real PNG files (one grey-scale category)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "mvtec"
    for cat, grey in (("bottle", False), ("grid", True)):
        shape = (40, 40) if grey else (40, 40, 3)
        for i in range(5):
            image_writer(root / cat / "train" / "good" / f"{i:03d}.png", rng.integers(0, 255, shape, dtype=np.uint8))
        for i in range(2):
            image_writer(root / cat / "test" / "good" / f"{i:03d}.png", rng.integers(0, 255, shape, dtype=np.uint8))
        for defect in ("crack", "hole"):
            for i in range(2):
                image_writer(root / cat / "test" / defect / f"{i:03d}.png", rng.integers(0, 255, shape, dtype=np.uint8))
                m = np.zeros((40, 40), np.uint8)
                m[5 + i : 15, 10:20] = 255
                image_writer(root / cat / "ground_truth" / defect / f"{i:03d}_mask.png", m)
    return root


def test_reader_keys_labels_and_masks(mvtec):
    samples = list(read_mvtec(mvtec))
    assert len(samples) == 2 * (5 + 2 + 4)
    s = next(x for x in samples if x.key == "bottle/test/crack/001")
    assert (s.category, s.split, s.label, s.defect) == ("bottle", "test", 1, "crack")
    assert s.mask().sum() == 9 * 10
    grid = next(x for x in samples if x.category == "grid")
    assert grid.image().shape == (40, 40, 3)  # grey-scale served as 3 channels
    assert all(x.label == 0 for x in samples if x.split == "train")


def test_reader_errors_name_the_path(mvtec, tmp_path):
    with pytest.raises(DataError, match="not found"):
        list(read_mvtec(tmp_path / "nope"))
    with pytest.raises(DataError, match="unknown categories"):
        list(read_mvtec(mvtec, categories=["carpet"]))
    (mvtec / "bottle" / "ground_truth" / "hole" / "000_mask.png").unlink()
    with pytest.raises(DataError, match=r"hole/000.png: anomalous test image without a mask"):
        list(read_mvtec(mvtec))


def test_round_trip_through_shards(mvtec, tmp_path):
    out = tmp_path / "shards"
    manifest = write_shards(read_mvtec(mvtec), out, dataset="mvtec", max_count=3)
    assert {s.split for s in manifest.shards} == {"train", "test"}
    assert all(s.count <= 3 for s in manifest.shards)
    assert manifest.counts["test"]["bottle"] == {
        "normal": 2,
        "anomalous": 4,
        "defects": {"good": 2, "crack": 2, "hole": 2},
        "no_mask": 0,
    }
    assert manifest.image_size == [40, 40]
    loaded = Manifest.load(out)
    assert loaded.checksum == manifest.checksum and len(loaded.checksum) == 64
    assert not list(out.glob("*.tmp*"))
    # every shard holds one split and one category
    for info in manifest.shards:
        with tarfile.open(out / info.name) as tar:
            metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".meta.json")]
        assert {(m["split"], m["category"]) for m in metas} == {(info.split, info.category)}
    # stream back: same keys, same pixels, same masks
    originals = {s.key: s for s in read_mvtec(mvtec)}
    streamed = list(ShardStream(shard_urls(out, manifest, "test")))
    assert sorted(s["key"] for s in streamed) == sorted(k for k, s in originals.items() if s.split == "test")
    for s in streamed:
        o = originals[s["key"]]
        assert np.array_equal(s["image"], o.image())
        if o.label:
            assert np.array_equal(s["mask"], o.mask())
        else:
            assert s["mask"] is not None and not s["mask"].any()


def test_keys_with_dots_survive(tmp_path, image_writer):
    root = tmp_path / "data"
    image_writer(root / "cat.v2" / "train" / "good" / "img.001.png", np.zeros((8, 8, 3), np.uint8))
    image_writer(root / "cat.v2" / "test" / "good" / "img.002.png", np.zeros((8, 8, 3), np.uint8))
    m = write_shards(read_mvtec(root), tmp_path / "s", dataset="mvtec")
    keys = [s["key"] for s in ShardStream(shard_urls(tmp_path / "s", m, "train"))]
    assert keys == ["cat.v2/train/good/img.001"]


def test_resize_and_crop_at_shard_time(mvtec, tmp_path):
    m = write_shards(read_mvtec(mvtec, categories=["bottle"]), tmp_path / "s", dataset="mvtec", resize=36, crop=32)
    assert m.image_size == [32, 32]
    s = next(iter(ShardStream(shard_urls(tmp_path / "s", m, "test"))))
    assert s["image"].shape == (32, 32, 3)


def test_readers_get_disjoint_shards_covering_all():
    urls = [f"s{i}" for i in range(7)]
    seen = []
    for rank in range(2):
        for worker in range(2):
            seen += assigned(urls, rank, 2, worker, 2)
    assert sorted(seen) == sorted(urls)


def test_training_stream_shuffles_but_keeps_every_sample(mvtec, tmp_path):
    m = write_shards(read_mvtec(mvtec), tmp_path / "s", dataset="mvtec", max_count=2)
    urls = shard_urls(tmp_path / "s", m, "train")
    stream = ShardStream(urls, shuffle_buffer=4, seed=1)
    a = [s["key"] for s in stream]
    stream.set_epoch(1)
    b = [s["key"] for s in stream]
    assert sorted(a) == sorted(b) and len(set(a)) == 10
    assert a != b
    ranks = [[s["key"] for s in ShardStream(urls, shuffle_buffer=4, seed=1, rank=r, world_size=2)] for r in range(2)]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) + len(ranks[1]) == 10
