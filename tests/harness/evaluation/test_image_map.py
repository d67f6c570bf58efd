"""`infer.image_map` through a real evaluation: the latent part's score changes the image metrics and
nothing else, the run keeps its scores beside its maps (so `decodiff score` re-reads the run's own
numbers, not the maps' maxima), and settings without a latent part are refused."""

import numpy as np
import pytest
import torch

from decodiff.harness.config import ConfigError, build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.data import test_loader as loader_of_test_split
from decodiff.harness.evaluation.evaluate import evaluate
from decodiff.harness.evaluation.score import score_maps, truth_from_batches
from decodiff.harness.training.vae_fit import get_vae
from decodiff.models.unet import build_unet


def _cfg(tmp, *more):
    return build_config(
        "tiny",
        [
            f"run.cache_dir={tmp / 'cache'}",
            "vae.pretrained=builtin:demo-vae",
            "vae.small=f8-small",
            "data.categories=[coins,brick]",
            "run.threads=1",
            "infer.baselines=[]",
            "infer.reference_cache=false",
            "metrics.bootstrap=0",
            "tracking.enabled=false",
            *more,
        ],
    )


def _split(records):
    return (
        {(r["category"], r["metric"]): r["value"] for r in records if r["level"] == "pixel"},
        {(r["category"], r["metric"]): r["value"] for r in records if r["level"] == "image"},
    )


def test_latent_image_map_changes_the_image_scores_only_and_is_kept_beside_the_maps(tmp_path):
    plain, latent = _cfg(tmp_path), _cfg(tmp_path, "infer.image_map=latent")
    data = prepare_data(plain)
    vae = get_vae(plain, data)
    torch.manual_seed(0)
    model = build_unet("tiny", num_classes=len(data.categories))  # untrained: any fixed network will do
    a = evaluate(plain, data, model, vae, data.categories, out=tmp_path / "map")
    b = evaluate(latent, data, model, vae, data.categories, out=tmp_path / "latent")
    pixel_a, image_a = _split(a.records)
    pixel_b, image_b = _split(b.records)
    assert pixel_a and pixel_a == pixel_b  # the localisation is the same map
    score_a = np.array([s["score"] for s in a.samples])
    score_b = np.array([s["score"] for s in b.samples])
    assert not np.allclose(score_a, score_b)
    saved_a, saved_b = np.load(tmp_path / "map" / "maps.npz"), np.load(tmp_path / "latent" / "maps.npz")
    np.testing.assert_array_equal(saved_a["maps"], saved_b["maps"])
    assert list(saved_a["keys"]) == [s["key"] for s in a.samples]
    np.testing.assert_allclose(saved_a["scores"], score_a, rtol=1e-6)
    np.testing.assert_allclose(saved_a["scores"], saved_a["maps"].reshape(len(score_a), -1).max(1), rtol=1e-6)
    np.testing.assert_allclose(saved_b["scores"], score_b, rtol=1e-6)
    # the latent part is clipped and scaled to [0, 1] and blurred: its maximum is no map's maximum here
    assert (score_b >= 0).all() and (score_b <= 1).all()
    assert not np.allclose(score_b, saved_b["maps"].reshape(len(score_b), -1).max(1))
    # re-scoring the latent run's saved maps gives the run's own image metrics
    truth = truth_from_batches(loader_of_test_split(latent, data), latent.metrics.image_label)
    again = score_maps(tmp_path / "latent" / "maps.npz", truth, data.manifest.dataset)
    assert _split(again.records)[1] == pytest.approx(image_b)


@pytest.mark.parametrize(
    "overrides, why",
    [
        (["method=vae-recon", "infer.combination=pixel", "infer.pixel_reference=input"], "vae-recon does not have"),
        (["infer.combination=pixel"], "combination=pixel leaves out"),
    ],
)
def test_a_latent_image_map_without_a_latent_part_is_refused(overrides, why):
    with pytest.raises(ConfigError, match=f"infer.image_map=latent scores the latent part.*{why}"):
        build_config("tiny", [*overrides, "infer.image_map=latent"])
