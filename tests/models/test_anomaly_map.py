"""Eq. 15 on small hand-built inputs, and the blur against scipy's gaussian_filter."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from decodiff.models.anomaly_map import (
    MapSettings,
    anomaly_map,
    image_score,
    latent_discrepancy,
    pixel_discrepancy,
    scored_maps,
)
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


def test_full_geometric_map_equals_the_published_recipe_in_numpy():
    """Eq. 15 with blur and resize against an independent NumPy/SciPy/scikit-image computation of
    the published recipe: pixel part max over RGB, clip 0.4, scale, gaussian_filter(sigma 3);
    latent part mean over channels, clip 0.2, scale, gaussian_filter(sigma 1) at latent size,
    skimage bilinear resize; sqrt of the product; image score = max."""
    from skimage.transform import resize

    rng = np.random.default_rng(7)
    x_ref = rng.uniform(-1, 1, (2, 3, 32, 32))
    x_rec = x_ref + rng.normal(0, 0.2, x_ref.shape)
    x_rec[:, :, 8:14, 20:26] += 0.9  # a "defect" that survives the clipping
    z = rng.normal(0, 1, (2, 4, 8, 8))
    z0 = z + rng.normal(0, 0.05, z.shape)
    z0[:, :, 2:4, 5:7] += 0.5

    want = []
    for b in range(2):
        pix = gaussian_filter(np.clip(np.abs(x_rec[b] - x_ref[b]).max(axis=0), 0, 0.4) / 0.4, sigma=3)
        lat = gaussian_filter(np.clip(np.abs(z0[b] - z[b]).mean(axis=0), 0, 0.2) / 0.2, sigma=1)
        lat = resize(lat, (32, 32), order=1, anti_aliasing=False)
        want.append(np.sqrt(pix * lat))
    want = np.stack(want)

    t = lambda a: torch.from_numpy(a)  # noqa: E731
    got = anomaly_map(t(x_rec), t(x_ref), t(z0), t(z), MapSettings())
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    np.testing.assert_allclose(image_score(got).numpy(), want.reshape(2, -1).max(axis=1), atol=1e-6)
    # the defect is where the map peaks
    assert np.unravel_index(want[0].argmax(), want[0].shape)[0] in range(6, 16)


@pytest.mark.parametrize(
    "shape,size",
    [((8, 8), (32, 32)), ((4, 6), (32, 48)), ((32, 32), (256, 256)), ((5, 5), (64, 64)), ((16, 16), (16, 16))],
)
def test_latent_resize_equals_skimage_resize(shape, size):
    """The published code enlarges the latent part with skimage.transform.resize (bilinear,
    mirrored borders); torch's bilinear would differ in the outer half latent cell."""
    from skimage.transform import resize

    from decodiff.models.anomaly_map import bilinear_resize

    d = np.random.default_rng(3).random(shape)
    got = bilinear_resize(torch.from_numpy(d)[None], size)[0].numpy()
    np.testing.assert_allclose(got, resize(d, size), atol=1e-12)


def test_image_score_from_the_latent_part_when_the_pixel_part_is_high_everywhere():
    """infer.image_map=latent: on a texture the VAE blurs, the pixel discrepancy is high all over
    every image and the geometric map's maximum ranks a normal image above a defective one; the
    latent part's maximum does not. The map itself (the localisation) is the same either way."""
    x_ref = torch.zeros(2, 3, 32, 32)
    x_rec = x_ref.clone()
    x_rec[0] += 0.3  # the normal image (0): the decoded correction differs everywhere (a blurred texture)
    x_rec[1] += 0.02  # the defective one (1): the decoder smooths its change away
    z = torch.zeros(2, 4, 4, 4)
    z0_hat = z.clone()
    z0_hat[0] += 0.1  # a slight correction all over the normal image
    z0_hat[1, :, 1:3, 1:3] += 0.9  # a strong one at the defect's latent cells
    s = MapSettings(gamma_p=0.2, gamma_l=0.8)
    maps = anomaly_map(x_rec, x_ref, z0_hat, z, s)
    maps_a, by_map = scored_maps(x_rec, x_ref, z0_hat, z, s)
    maps_b, by_latent = scored_maps(x_rec, x_ref, z0_hat, z, MapSettings(gamma_p=0.2, gamma_l=0.8, image_map="latent"))
    assert torch.equal(maps_a, maps) and torch.equal(maps_b, maps)  # the localisation either way
    assert torch.equal(by_map, image_score(maps, s))  # the published score, unchanged
    assert torch.equal(by_latent, image_score(latent_discrepancy(z0_hat, z, (32, 32), s), s))
    assert by_map[0] > by_map[1] and by_latent[1] > by_latent[0]
    # a pixel-only map with the score from the latent part still computes the latent part
    pixel_only = MapSettings(gamma_p=0.2, gamma_l=0.8, combination="pixel", image_map="latent")
    assert torch.equal(scored_maps(x_rec, x_ref, z0_hat, z, pixel_only)[1], by_latent)
    with pytest.raises(ValueError, match="image_map must be one of"):
        scored_maps(x_rec, x_ref, z0_hat, z, MapSettings(image_map="pixel"))
