"""Augmentation under the latent cache (train.cache_augment=exact): every distinct translation is
encoded, and each sample's variant is drawn per epoch by the published augmentation's own draw,
so the training distribution equals the one without a cache (a fresh +-4 px shift with p = 0.5)."""

import io
import json
import random
from collections import Counter

import numpy as np
import pytest
import torch
from scipy import stats

from decodiff.datasets.transforms import Preprocess
from decodiff.harness.training.feed import _Augment
from decodiff.harness.training.latent_cache import ExactPick, build_latent_cache


def published_probability(dx: int, dy: int, rot: bool, translate: int = 4, rotate180: bool = False) -> float:
    """The published augmentation in closed form: shift (0, 0) with p = 0.5, else uniform over the
    (2t+1)^2 shifts (which include (0, 0)); an independent 180-degree rotation with p = 0.5."""
    n = (2 * translate + 1) ** 2
    p = (0.5 if (dx, dy) == (0, 0) else 0.0) + 0.5 / n
    return p * (0.5 if rotate180 else (1.0 if not rot else 0.0))


@pytest.mark.parametrize("rotate180", [False, True])
def test_variant_table_and_probabilities_are_the_published_ones(rotate180):
    pre = Preprocess(resize=None, crop=None, translate=4, rotate180=rotate180)
    table = pre.variants()
    assert len(table) == len(set(table)) == 81 * (2 if rotate180 else 1)
    probs = pre.variant_probabilities()
    assert probs == pytest.approx([published_probability(*v, rotate180=rotate180) for v in table], abs=1e-15)
    assert sum(probs) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("rotate180", [False, True])
def test_sampled_variants_follow_the_published_distribution(rotate180):
    """Picks over many (epoch, key) draws: a chi-square test against the closed form, and each
    pick is the very draw the image path (no cache) makes for that (seed, epoch, key)."""
    pre = Preprocess(resize=None, crop=None, translate=4, rotate180=rotate180)
    pick, aug = ExactPick(pre, seed=7), _Augment(pre, seed=7)
    table = pre.variants()
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    counts: Counter = Counter()
    n = 40_000
    for i in range(n):
        pick.epoch = i % 50
        key = f"cat/train/good/{i // 50:04d}"
        v = table[pick.pick(key)]
        counts[v] += 1
        if i < 300:  # the same draw as the image path's (no cache), not only the same distribution
            assert v == pre.draw(random.Random(f"7-{pick.epoch}-{key}"))
            aug.epoch = pick.epoch
            sample = {"key": key, "image": image, "meta": {"label": 0, "category": "cat", "defect": "good"}}
            assert torch.equal(aug(sample)["image"], pre.apply(sample, *v)["image"])
    expected = np.array([published_probability(*v, rotate180=rotate180) for v in table]) * n
    observed = np.array([counts[v] for v in table])
    assert observed.sum() == n
    assert stats.chisquare(observed, expected).pvalue > 1e-3
    assert abs(counts[(0, 0, False)] / n - published_probability(0, 0, False, rotate180=rotate180)) < 0.01


def _raw(rec):
    return rec


@pytest.mark.slow  # trains a small VAE for 2 steps and encodes 8 images x 25 shifts: ~20-30 s on 2 shared cores
def test_exact_cache_holds_the_encoding_of_every_shift_and_training_reads_the_drawn_one(tmp_path):
    from decodiff.datasets.shard_record import decode_record
    from decodiff.datasets.stream import ShardStream
    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data, preprocess_for
    from decodiff.harness.training.feed import TrainFeed
    from decodiff.harness.training.vae_fit import get_vae

    cfg = build_config(
        "tiny",
        [
            f"run.cache_dir={tmp_path}",
            "vae.steps=2",
            "train.cache_augment=exact",
            "data.demo.categories=[coins]",
            "train.translate=2",
        ],
    )
    data = prepare_data(cfg)
    vae = get_vae(cfg, data)
    location, manifest = build_latent_cache(cfg, data, vae)
    assert manifest.args["augment"] == "exact" and manifest.args["variants"] == 25 and len(manifest.args["table"]) == 25
    pre = preprocess_for(cfg, True)
    first = next(iter(ShardStream(data.urls("train"), decode=decode_record)))
    cache_urls = [str(p) for p in sorted((tmp_path / "latents").glob("*/*.tar"))]
    rec = next(iter(ShardStream(cache_urls, decode=_raw)))
    meta = json.loads(rec["meta.json"])
    assert meta["key"] == first["key"] and meta["variants"] == 25
    arr = np.load(io.BytesIO(rec["latent.npy"]))
    for i in (0, 12, 24):  # variant i is the encoding of the image shifted by table[i]
        x = pre.apply(first, *pre.variants()[i])["image"][None]
        mean, std = vae.encode_dist(x)
        np.testing.assert_allclose(arr[i, 0], mean[0].numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(arr[i, 1], std[0].numpy(), rtol=1e-5, atol=1e-5)
    assert not np.allclose(arr[0, 0], arr[12, 0])  # the shifts differ in latent space
    feed = TrainFeed(cfg, data, vae, rank=0, world=1, device=torch.device("cpu"), latent_cache=(location, manifest))
    step = next(feed.steps(3))
    batch = step.micro[0]
    assert batch["latent"].shape[1] == 1  # one variant per sample in the buffer: this epoch's draw
    k = batch["key"][0] if "key" in batch else step.keys[0]
    want = feed.pick.pick(k)
    full = {json.loads(r["meta.json"])["key"]: r for r in ShardStream(cache_urls, decode=_raw)}
    ref = np.load(io.BytesIO(full[k]["latent.npy"]))[want]
    np.testing.assert_array_equal(batch["latent"][0, 0].numpy(), ref)
    z0, _ = feed.latents(batch, torch.Generator().manual_seed(0))
    assert z0.shape[1:] == ref.shape[1:]
