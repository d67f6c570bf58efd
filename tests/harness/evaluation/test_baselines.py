"""The baselines scored beside DeCo-Diff: vae-recon equals method=vae-recon's map without a second decode."""

import pytest
import torch

from decodiff.harness.config import build_config
from decodiff.harness.evaluation.baselines import Baselines, baselines_for
from decodiff.models.anomaly_map import MapSettings, anomaly_map, image_score
from decodiff.models.deviation import DeviationProcess
from decodiff.models.reconstruction import ReconstructionSettings, reconstruct
from decodiff.models.vae import FrozenVAE, build_small_vae


class CountingVAE(FrozenVAE):
    decodes = 0

    def decode(self, z):
        CountingVAE.decodes += 1
        return super().decode(z)


@pytest.mark.parametrize("reference", ["vae", "input"])
def test_vae_recon_baseline_is_the_vae_recon_method_and_reuses_the_decode(reference):
    torch.manual_seed(0)
    vae = CountingVAE(build_small_vae("f8-tiny"), scale=0.5, source="test")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    settings = MapSettings(gamma_p=None, sigma_pixel=1.0)
    ref = reconstruct(x, vae, None, None, ReconstructionSettings(method="vae-recon", pixel_reference="input"))
    expected = anomaly_map(
        ref.x_rec, ref.x_ref, ref.z0_hat, ref.z, MapSettings(combination="pixel", gamma_p=None, sigma_pixel=1.0)
    )
    rec = reconstruct(
        x,
        vae,
        lambda zt, t: torch.zeros_like(zt),
        DeviationProcess(),
        ReconstructionSettings(method="deco-diff", pixel_reference=reference),
    )
    bases = Baselines(["vae-recon"], MapSettings(combination="pixel", gamma_p=None, sigma_pixel=1.0), vae)
    CountingVAE.decodes = 0
    maps, scores = bases.maps(x, rec, ["a", "a"], reference)["vae-recon"]
    torch.testing.assert_close(maps, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scores, image_score(expected, settings))
    assert CountingVAE.decodes == (0 if reference == "vae" else 1)  # Decoder(z) is reused where DeCo-Diff made it
    assert bases.seconds["vae-recon"] >= 0


def test_baselines_keep_the_published_clipping_when_the_run_tunes_its_own():
    """A run's gamma_p / gamma_l balance DeCo-Diff's two parts; the baselines' maps keep 0.4 / 0.2 (and
    the run's blurs and image score), so tuning DeCo-Diff does not move its yardstick."""
    cfg = build_config("tiny", ["infer.baselines=[vae-recon]"])
    vae = FrozenVAE(build_small_vae("f8-tiny"), scale=0.5, source="test")
    run = MapSettings(gamma_p=0.2, gamma_l=0.8, sigma_pixel=2.0, image_score="topk_mean")
    b = baselines_for(cfg, None, vae, torch.device("cpu"), run)
    assert b.names == ["vae-recon"]
    assert (b.settings.gamma_p, b.settings.gamma_l) == (MapSettings().gamma_p, MapSettings().gamma_l) == (0.4, 0.2)
    assert (b.settings.sigma_pixel, b.settings.image_score, b.settings.combination) == (2.0, "topk_mean", "pixel")
