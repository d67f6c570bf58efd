"""score_maps: any method's maps, read by key from one .npz or a folder, scored like a run."""

import numpy as np
import pytest
import torch

from decodiff.datasets.imageio import DataError
from decodiff.harness.evaluation.score import TruthSample, score_maps, truth_from_batches
from decodiff.harness.metrics import MetricSuite


def make_truth(seed=0, size=16):
    rng = np.random.default_rng(seed)
    truth, maps = [], {}
    for cat in ("bottle", "wood"):
        for i in range(6):
            mask = np.zeros((size, size), dtype=bool)
            if i % 2:
                mask[rng.integers(0, 10) :, rng.integers(0, 10) : rng.integers(11, 16)] = True
            key = f"{cat}/test/{'crack' if i % 2 else 'good'}/{i:03d}"
            truth.append(TruthSample(key, cat, int(mask.any()), mask, "crack" if i % 2 else "good"))
            maps[key] = (rng.random((size, size)) + 0.5 * mask).astype(np.float16)
    return truth, maps


def direct(truth, maps):
    suite = MetricSuite("demo")
    for t in truth:
        m = maps[t.key].astype(np.float32)
        suite.update(t.category, np.array([m.max()]), np.array([t.label]), m[None], t.mask[None], keys=[t.key])
    return suite.compute()


def test_one_npz_like_evaluate_saves_it(tmp_path):
    truth, maps = make_truth()
    path = tmp_path / "maps.npz"
    np.savez_compressed(path, keys=np.array(list(maps)), maps=np.stack(list(maps.values())))
    result = score_maps(path, truth, "demo")
    assert result.records == direct(truth, maps)
    assert [s["key"] for s in result.samples] == [t.key for t in truth] and result.unused_maps == 0


def test_a_folder_of_per_image_files(tmp_path):
    truth, maps = make_truth(1)
    for i, (key, m) in enumerate(maps.items()):
        f = tmp_path / "out" / key
        f.parent.mkdir(parents=True, exist_ok=True)
        if i % 2:
            np.save(f.with_suffix(".npy"), m)
        else:
            np.savez(f.with_suffix(".npz"), map=m)
    np.save(tmp_path / "out" / "extra.npy", np.zeros((16, 16)))
    result = score_maps(tmp_path / "out", truth, "demo")
    assert result.records == direct(truth, maps)
    assert result.unused_maps == 1 and result.notes


def test_image_scores_from_the_file_win_over_the_map_max(tmp_path):
    truth, maps = make_truth(2)
    scores = np.arange(len(maps), dtype=np.float32)
    np.savez(tmp_path / "m.npz", keys=np.array(list(maps)), maps=np.stack(list(maps.values())), scores=scores)
    result = score_maps(tmp_path / "m.npz", truth, "demo")
    assert [s["score"] for s in result.samples] == list(map(float, scores))


def test_missing_maps_shapes_and_nan_name_the_sample(tmp_path):
    truth, maps = make_truth(3)
    keys = list(maps)
    np.savez(tmp_path / "a.npz", keys=np.array(keys[1:]), maps=np.stack([maps[k] for k in keys[1:]]))
    with pytest.raises(DataError, match=keys[0]):
        score_maps(tmp_path / "a.npz", truth, "demo")
    small = {k: m[::2, ::2] for k, m in maps.items()}
    np.savez(tmp_path / "b.npz", keys=np.array(keys), maps=np.stack(list(small.values())))
    with pytest.raises(DataError, match=f"{keys[0]}.*8x8.*16x16"):
        score_maps(tmp_path / "b.npz", truth, "demo")
    resized = score_maps(tmp_path / "b.npz", truth, "demo", resize=True)
    assert all(r["value"] is not None for r in resized.records if r["category"] == "bottle")
    bad = dict(maps)
    bad[keys[4]] = bad[keys[4]].copy()
    bad[keys[4]][3, 3] = np.nan
    np.savez(tmp_path / "c.npz", keys=np.array(keys), maps=np.stack(list(bad.values())))
    with pytest.raises(DataError, match=keys[4]):
        score_maps(tmp_path / "c.npz", truth, "demo")


def test_samples_without_masks_have_no_pixel_metrics(tmp_path):
    truth, maps = make_truth(4)
    truth = [
        TruthSample(t.key, t.category, t.label, None if t.category == "wood" and t.label else t.mask, t.defect)
        for t in truth
    ]
    np.savez(tmp_path / "m.npz", keys=np.array(list(maps)), maps=np.stack(list(maps.values())))
    rec = {(r["category"], r["level"], r["metric"]): r for r in score_maps(tmp_path / "m.npz", truth, "demo").records}
    assert (
        rec[("wood", "pixel", "auroc")]["value"] is None
        and "not available" in rec[("wood", "pixel", "auroc")]["reason"]
    )
    assert rec[("wood", "image", "auroc")]["value"] is not None
    assert rec[("bottle", "pixel", "aupro")]["value"] is not None


def test_truth_from_loader_batches():
    batch = {
        "key": ["a/test/good/000", "a/test/crack/001"],
        "category": ["a", "a"],
        "label": torch.tensor([0, 1]),
        "mask": torch.zeros(2, 4, 4, dtype=torch.bool),
        "has_mask": torch.tensor([True, False]),
        "defect": ["good", "crack"],
    }
    out = list(truth_from_batches([batch]))
    assert [t.key for t in out] == batch["key"] and out[0].mask.shape == (4, 4) and out[1].mask is None
