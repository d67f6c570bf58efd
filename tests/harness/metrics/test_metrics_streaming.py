"""MetricSuite: batch-by-batch equals all-at-once, per category / mean / pooled records in the
results contract, undefined cases as None with a reason, torch path == numpy path."""

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from decodiff.harness.metrics import MEAN, POOLED, MetricSuite, aupro, f1max

CATS = ("bottle", "cable", "wood")


def dataset(seed=0, n=10, h=20, w=20, levels=None):
    """{category: (maps, masks, scores, labels, keys)}, about half of each category anomalous."""
    rng = np.random.default_rng(seed)
    out = {}
    for c, cat in enumerate(CATS):
        masks = np.zeros((n, h, w), dtype=bool)
        for i in range(n // 2):
            for _ in range(int(rng.integers(1, 4))):
                y, x = rng.integers(0, h - 4), rng.integers(0, w - 4)
                masks[i, y : y + rng.integers(2, 6), x : x + rng.integers(2, 6)] = True
        maps = rng.random((n, h, w)) + (0.3 + 0.2 * c) * masks
        if levels:
            maps = np.floor(maps * levels) / levels
        maps = maps.astype(np.float32)
        labels = masks.any(axis=(1, 2)).astype(np.int64)
        scores = maps.max(axis=(1, 2))
        keys = [f"{cat}/test/{'bad' if labels[i] else 'good'}/{i:03d}" for i in range(n)]
        out[cat] = (maps, masks, scores, labels, keys)
    return out


def fill(suite, data, batch):
    for cat, (maps, masks, scores, labels, keys) in data.items():
        for s in range(0, len(keys), batch):
            sl = slice(s, s + batch)
            suite.update(cat, scores[sl], labels[sl], maps[sl], masks[sl], keys=keys[sl])
    return suite


def table(records):
    return {(r["category"], r["level"], r["metric"]): r for r in records}


def test_batch_by_batch_equals_all_at_once_and_the_plain_functions():
    data = dataset(levels=12)
    whole = table(fill(MetricSuite("mvtec"), data, 1000).compute())
    for batch in (1, 3, 7):
        parts = table(fill(MetricSuite("mvtec"), data, batch).compute())
        assert parts.keys() == whole.keys()
        for k in whole:
            assert parts[k]["value"] == pytest.approx(whole[k]["value"], abs=1e-12), k
    for cat, (maps, masks, scores, labels, _) in data.items():
        assert whole[(cat, "image", "auroc")]["value"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
        assert whole[(cat, "image", "auprc")]["value"] == pytest.approx(
            average_precision_score(labels, scores), abs=1e-9
        )
        assert whole[(cat, "pixel", "auroc")]["value"] == pytest.approx(
            roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9
        )
        assert whole[(cat, "pixel", "auprc")]["value"] == pytest.approx(
            average_precision_score(masks.ravel(), maps.ravel()), abs=1e-9
        )
        assert whole[(cat, "pixel", "f1max")]["value"] == pytest.approx(f1max(maps, masks), abs=1e-12)
        assert whole[(cat, "pixel", "aupro")]["value"] == pytest.approx(aupro(maps, masks), abs=1e-12)


def test_mean_and_pooled():
    data = dataset(1)
    rec = table(fill(MetricSuite("mvtec"), data, 4).compute())
    for level, metric in [("image", "auroc"), ("pixel", "aupro")]:
        mean = rec[(MEAN, level, metric)]
        assert mean["aggregate"] == "mean" and mean["n_categories"] == 3 and "skipped" not in mean
        assert mean["value"] == pytest.approx(np.mean([rec[(c, level, metric)]["value"] for c in CATS]), abs=1e-12)
    maps = np.concatenate([d[0] for d in data.values()])
    masks = np.concatenate([d[1] for d in data.values()])
    scores = np.concatenate([d[2] for d in data.values()])
    labels = np.concatenate([d[3] for d in data.values()])
    assert rec[(POOLED, "image", "auroc")]["value"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert rec[(POOLED, "pixel", "auroc")]["value"] == pytest.approx(
        roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-9
    )
    assert rec[(POOLED, "pixel", "aupro")]["value"] == pytest.approx(aupro(maps, masks), abs=1e-12)
    assert rec[(POOLED, "pixel", "aupro")]["aggregate"] == "pooled"


def test_records_follow_the_results_contract():
    records = fill(MetricSuite("mvtec", aupro_protocol="deco-diff-code"), dataset(2), 5).compute()
    json.dumps(records)  # plain JSON types only
    assert len(records) == (len(CATS) + 2) * 7
    assert len(table(records)) == len(records)  # one row per (category, level, metric)
    for r in records:
        assert {"dataset", "category", "level", "metric", "value"} <= r.keys()
        assert r["level"] in ("image", "pixel") and r["metric"] in ("auroc", "auprc", "f1max", "aupro")
        assert r["metric"] != "aupro" or r["level"] == "pixel"
        assert isinstance(r["value"], float) and "reason" not in r
        if r["metric"] == "aupro":
            assert r["protocol"] == "deco-diff-code" and r["fpr_limit"] == 0.3
    assert [r["category"] for r in records][::7] == [*CATS, MEAN, POOLED]


def test_undefined_cases_are_none_with_a_reason_and_the_mean_says_what_it_skipped():
    data = dataset(3)
    suite = MetricSuite("mvtec")
    fill(suite, {c: data[c] for c in ("bottle", "cable")}, 4)
    maps, masks, scores, labels, keys = data["wood"]
    good = labels == 0
    suite.update("wood", scores[good], labels[good], maps[good], masks[good], keys=[k for k, g in zip(keys, good) if g])
    suite.update(
        "flat",
        np.ones(4),
        np.array([0, 1, 0, 1]),
        np.full((4, 8, 8), 0.25, np.float32),
        np.pad(np.ones((4, 2, 2), bool), ((0, 0), (3, 3), (3, 3))),
    )
    suite.update("nomask", np.array([0.1, 0.9]), np.array([0, 1]), np.random.default_rng(0).random((2, 8, 8)), None)
    rec = table(suite.compute())
    for level, metric in [("image", "auroc"), ("image", "auprc"), ("pixel", "aupro"), ("pixel", "f1max")]:
        r = rec[("wood", level, metric)]
        assert r["value"] is None and "no anomalous" in r["reason"]
        r = rec[("flat", level, metric)]
        assert r["value"] is None and "equal" in r["reason"]
    assert rec[("nomask", "image", "auroc")]["value"] == 1.0
    for metric in ("auroc", "auprc", "f1max", "aupro"):
        r = rec[("nomask", "pixel", metric)]
        assert r["value"] is None and "not available" in r["reason"]
    mean = rec[(MEAN, "pixel", "aupro")]
    assert mean["n_categories"] == 2 and mean["skipped"] == ["wood", "flat", "nomask"]
    assert mean["value"] == pytest.approx(
        (rec[("bottle", "pixel", "aupro")]["value"] + rec[("cable", "pixel", "aupro")]["value"]) / 2, abs=1e-12
    )
    pooled = rec[(POOLED, "pixel", "auroc")]
    assert pooled["value"] is None and "nomask" in pooled["reason"]
    assert rec[(POOLED, "image", "auroc")]["value"] is not None


def test_a_category_without_anything_defined_has_an_undefined_mean():
    suite = MetricSuite("x")
    suite.update(
        "only-good",
        np.array([0.1, 0.2]),
        np.array([0, 0]),
        np.zeros((2, 4, 4)) + [[[0.1]], [[0.2]]],
        np.zeros((2, 4, 4), bool),
    )
    rec = table(suite.compute())
    assert rec[(MEAN, "image", "auroc")]["value"] is None
    assert "every category" in rec[(MEAN, "image", "auroc")]["reason"]


def test_bad_samples_are_named():
    suite = MetricSuite("x")
    maps = np.zeros((2, 4, 4), np.float32)
    maps[1, 2, 2] = np.nan
    with pytest.raises(ValueError, match="b/001"):
        suite.update(
            "b", np.array([0.1, 0.2]), np.array([0, 1]), maps, np.zeros((2, 4, 4), bool), keys=["b/000", "b/001"]
        )
    suite.update("b", np.array([0.1]), np.array([0]), np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool), keys=["b/000"])
    with pytest.raises(ValueError, match="b/000.*twice"):
        suite.update(
            "b", np.array([0.1]), np.array([0]), np.zeros((1, 4, 4)), np.zeros((1, 4, 4), bool), keys=["b/000"]
        )
    with pytest.raises(ValueError, match="shape"):
        suite.update("b", np.array([0.1]), np.array([0]), np.zeros((1, 4, 4)), np.zeros((1, 4, 5), bool))


def test_state_keeps_float32_maps_as_float32_and_images_for_a_bootstrap():
    data = dataset(4)
    suite = fill(MetricSuite("mvtec"), data, 3)
    normal, anomalous, region = suite.state["bottle"].pixels()
    assert normal.dtype == np.float32 and anomalous.dtype == np.float32 and region.dtype == np.int32
    img = suite.images("cable")
    assert img.keys == data["cable"][4] and np.array_equal(img.scores, data["cable"][2])
    assert np.array_equal(img.labels, data["cable"][3])
    assert len(suite.images().keys) == 3 * 10


def test_merged_ranks_equal_one_suite():
    data = dataset(5, levels=9)
    one = table(fill(MetricSuite("mvtec"), data, 4).compute())
    a, b = MetricSuite("mvtec"), MetricSuite("mvtec")
    for cat, (maps, masks, scores, labels, keys) in data.items():
        a.update(cat, scores[:4], labels[:4], maps[:4], masks[:4], keys=keys[:4])
        b.update(cat, scores[4:], labels[4:], maps[4:], masks[4:], keys=keys[4:])
    a.merge(b)
    merged = table(a.compute())
    for k in one:
        assert merged[k]["value"] == pytest.approx(one[k]["value"], abs=1e-12), k


@pytest.mark.parametrize("protocol", ["mvtec", "deco-diff-code"])
def test_torch_path_equals_numpy_path(protocol):
    pytest.importorskip("torch")
    import torch

    data = dataset(6, levels=15)
    ref = table(fill(MetricSuite("mvtec", aupro_protocol=protocol), data, 4).compute())
    suite = MetricSuite("mvtec", aupro_protocol=protocol, device="cpu", backend="torch")
    for cat, (maps, masks, scores, labels, keys) in data.items():  # tensors in, as evaluation may pass them
        suite.update(
            cat,
            torch.from_numpy(scores),
            torch.from_numpy(labels),
            torch.from_numpy(maps),
            torch.from_numpy(masks),
            keys=keys,
        )
    got = table(suite.compute())
    for k in ref:
        assert got[k]["value"] == ref[k]["value"], k


def test_cuda_request_without_cuda_falls_back_to_numpy():
    torch = pytest.importorskip("torch")
    suite = MetricSuite("x", device="cuda")
    assert suite.backend == ("torch" if torch.cuda.is_available() else "numpy")


def test_compute_leaves_the_state_as_it_was():
    data = dataset(9, levels=10)
    ref = table(fill(MetricSuite("mvtec"), data, 3).compute())
    suite = MetricSuite("mvtec")
    fill(suite, {c: data[c] for c in CATS[:2]}, 3)
    first = table(suite.compute())
    assert table(suite.compute()) == first  # computing twice changes nothing
    fill(suite, {CATS[2]: data[CATS[2]]}, 3)  # and the stream may go on afterwards
    got = table(suite.compute())
    for k in ref:
        assert got[k]["value"] == pytest.approx(ref[k]["value"], abs=1e-12), k
