"""Eq. 15 on small hand-built inputs, and the blur against scipy's gaussian_filter."""
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from decodiff.models.anomaly_map import MapSettings, anomaly_map, image_score, latent_discrepancy, pixel_discrepancy
from decodiff.models.blur import gaussian_blur


@pytest.mark.parametrize("sigma", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("shape", [(8, 8), (32, 20), (3, 5)])
def test_blur_equals_scipy(sigma, shape):
    x = np.random.default_rng(0).random(shape)
    got = gaussian_blur(torch.from_numpy(x), sigma).numpy()
    np.testing.assert_allclose(got, gaussian_filter(x, sigma), atol=1e-12)


def test_pixel_part_golden_values():
    """|x_rec - x_ref| max over RGB, clipped at gamma_p = 0.4 and scaled by 1/0.4; no blur."""
    x_ref = torch.zeros(1, 3, 2, 2)
    x_rec = torch.zeros(1, 3, 2, 2)
    x_rec[0, 0, 0, 0] = 0.2  # R differs by 0.2
    x_rec[0, 2, 0, 0] = -0.1  # B by 0.1 -> max is 0.2
    x_rec[0, 1, 1, 1] = 1.0  # clipped at 0.4
    d = pixel_discrepancy(x_rec, x_ref, MapSettings(sigma_pixel=0))
    torch.testing.assert_close(d, torch.tensor([[[0.5, 0.0], [0.0, 1.0]]]))


def test_latent_part_golden_values():
    """|z0_hat - z| mean over channels, clipped at gamma_l = 0.2, scaled by 1/0.2; no blur, no resize."""
    z = torch.zeros(1, 4, 2, 2)
    z0 = torch.zeros(1, 4, 2, 2)
    z0[0, :, 0, 1] = torch.tensor([0.1, 0.1, 0.1, 0.1])  # mean 0.1 -> 0.5
    z0[0, 0, 1, 0] = 2.0  # mean 0.5 -> clipped 1.0
    d = latent_discrepancy(z0, z, (2, 2), MapSettings(sigma_latent=0))
    torch.testing.assert_close(d, torch.tensor([[[0.0, 0.5], [1.0, 0.0]]]))


def test_geometric_arithmetic_and_single_parts():
    x_ref = torch.zeros(1, 3, 2, 2)
    x_rec = torch.full((1, 3, 2, 2), 0.1)  # pixel part 0.25 everywhere
    z = torch.zeros(1, 4, 2, 2)
    z0 = torch.full((1, 4, 2, 2), 0.1)  # latent part 0.5 everywhere
    s = dict(sigma_pixel=0, sigma_latent=0)
    geo = anomaly_map(x_rec, x_ref, z0, z, MapSettings(combination="geometric", **s))
    torch.testing.assert_close(geo, torch.full((1, 2, 2), (0.25 * 0.5) ** 0.5))
    ari = anomaly_map(x_rec, x_ref, z0, z, MapSettings(combination="arithmetic", **s))
    torch.testing.assert_close(ari, torch.full((1, 2, 2), 0.375))
    pix = anomaly_map(x_rec, x_ref, z0, z, MapSettings(combination="pixel", **s))
    torch.testing.assert_close(pix, torch.full((1, 2, 2), 0.25))
    none = anomaly_map(x_rec, x_ref, z0, z, MapSettings(combination="pixel", gamma_p=None, **s))
    torch.testing.assert_close(none, torch.full((1, 2, 2), 0.1))


def test_latent_part_is_resized_to_image_size():
    z = torch.zeros(2, 4, 4, 4)
    z0 = torch.zeros(2, 4, 4, 4)
    z0[:, :, 1, 1] = 1.0
    x = torch.zeros(2, 3, 32, 32)
    m = anomaly_map(x, x, z0, z, MapSettings(combination="latent"))
    assert m.shape == (2, 32, 32)
    assert m[0, 8:16, 8:16].mean() > m[0, 24:, 24:].mean()


def test_image_scores():
    maps = torch.zeros(2, 16, 16)
    maps[0, 3, 3] = 1.0
    maps[1, :4, :4] = 0.5
    assert image_score(maps, MapSettings(image_score="max")).tolist() == [1.0, 0.5]
    top = image_score(maps, MapSettings(image_score="topk_mean", topk=16)).tolist()
    assert top == pytest.approx([1 / 16, 0.5])
    pooled = image_score(maps, MapSettings(image_score="avgpool_max", pool=4)).tolist()
    assert pooled == pytest.approx([1 / 16, 0.5])
