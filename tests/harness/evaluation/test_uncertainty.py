"""Bootstrap intervals: the binned pixel metrics agree with the exact ones, the image-level
resamples are exact, and the intervals are reproducible and bracket the measured values."""

from __future__ import annotations

import numpy as np
import pytest

from decodiff.harness.evaluation.uncertainty import (
    PixelStats,
    _image_resamples,
    _weights,
    binned_pixel_metrics,
    bootstrap,
)
from decodiff.harness.metrics import MetricSuite, binary_metrics


def _category(rng, n_images=12, size=32):
    maps, masks, labels = [], [], []
    for i in range(n_images):
        m = rng.random((size, size)) * 0.5
        mask = np.zeros((size, size), dtype=bool)
        if i % 2:
            y, x = rng.integers(2, size - 10, 2)
            mask[y : y + 8, x : x + 6] = True
            mask[1:3, 1:3] = i % 4 == 1  # a second region in some images
            m[mask] += rng.random(mask.sum()) * 0.6
        maps.append(m.astype(np.float32))
        masks.append(mask)
        labels.append(int(mask.any()))
    return np.stack(maps), np.stack(masks), np.array(labels)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    suite, stats, samples = MetricSuite("t"), PixelStats(), []
    for cat in ("a", "b"):
        maps, masks, labels = _category(rng)
        keys = [f"{cat}/{i}" for i in range(len(labels))]
        scores = maps.reshape(len(maps), -1).max(axis=1)
        suite.update(cat, scores, labels, maps, masks, keys=keys)
        stats.update(cat, keys, labels, maps, masks)
        samples += [
            {"key": k, "category": cat, "label": int(y), "score": float(s)} for k, y, s in zip(keys, labels, scores)
        ]
    return suite.compute(), stats, samples


def test_binned_pixel_metrics_agree_with_the_exact_ones(data):
    records, stats, _ = data
    for cat in ("a", "b"):
        a = stats.arrays(cat)
        ones = np.ones((1, len(a["keys"])))
        binned = binned_pixel_metrics(
            ones @ a["h_norm"], ones @ a["h_anom"], ones @ a["pro"], ones @ a["n_regions"], 0.3
        )
        for m in ("auroc", "auprc", "f1max", "aupro"):
            exact = next(
                r["value"] for r in records if r["category"] == cat and r["level"] == "pixel" and r["metric"] == m
            )
            assert binned[m][0] == pytest.approx(exact, abs=3e-3), (cat, m)


def test_image_resamples_are_exact():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    labels = (rng.random(40) < 0.4).astype(np.int8)
    w = _weights(labels, 25, rng)
    assert (w[:, labels == 1].sum(axis=1) == labels.sum()).all()  # stratified: class sizes kept
    got = _image_resamples(scores, labels, w)
    for r in range(25):
        c = w[r].astype(int)
        ref = binary_metrics(np.repeat(scores, c), np.repeat(labels, c))
        assert (got["auroc"][r], got["auprc"][r], got["f1max"][r]) == pytest.approx((ref.auroc, ref.auprc, ref.f1max))


def test_bootstrap_is_reproducible_and_brackets_the_values(data, tmp_path):
    records, stats, samples = data
    a = bootstrap("t", samples, stats, records, resamples=300, seed=1)
    b = bootstrap("t", samples, stats, records, resamples=300, seed=1)
    assert a.intervals == b.intervals
    keyed = {(i["category"], i["level"], i["metric"]): i for i in a.intervals}
    assert set(keyed) == {
        (c, lvl, m)
        for c in ("a", "b", "mean")
        for lvl, ms in (("image", ("auroc", "auprc", "f1max")), ("pixel", ("auroc", "auprc", "f1max", "aupro")))
        for m in ms
    }
    for r in records:
        i = keyed.get((r["category"], r["level"], r["metric"]))
        if i is not None and r["level"] == "pixel":
            assert i["low"] - 0.01 <= r["value"] <= i["high"] + 0.01, (r, i)
            assert i["std"] > 0 and i["resamples"] == 300
    assert set(a.pixel_curves) == {"a", "b"} and a.pixel_curves["a"]["fpr"][0] == 0.0
    assert len(a.image_quality) == 12 and all(0 <= v <= 1 for v in a.image_quality.values())
    assert bootstrap("t", samples, stats, records, resamples=300, seed=2).intervals != a.intervals
    stats.save(tmp_path / "s.npz")
    with np.load(tmp_path / "s.npz") as z:
        assert z["c0_h_norm"].dtype == np.uint32 and list(z["categories"]) == ["a", "b"]


def test_categories_without_masks_get_image_intervals_only(data):
    records, _, samples = data
    stats = PixelStats()
    stats.update("a", ["a/0"], np.array([0]), np.zeros((1, 4, 4)), None)
    u = bootstrap("t", samples, stats, records, resamples=50)
    assert {i["level"] for i in u.intervals if i["category"] == "a"} == {"image"}
