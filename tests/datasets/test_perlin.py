import numpy as np
from scipy import ndimage

from decodiff.datasets.perlin import fractal_noise, perlin_blob, perlin_noise


def test_perlin_noise_is_seeded_bounded_and_smooth():
    a = perlin_noise((64, 96), (4, 6), np.random.default_rng(1))
    b = perlin_noise((64, 96), (4, 6), np.random.default_rng(1))
    c = perlin_noise((64, 96), (4, 6), np.random.default_rng(2))
    assert a.shape == (64, 96) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() <= 1.0 + 1e-5 and a.std() > 0.1
    # Gradient noise has no jumps between neighbouring pixels (16 pixels per lattice cell).
    assert np.abs(np.diff(a, axis=0)).max() < 0.3 and np.abs(np.diff(a, axis=1)).max() < 0.3


def test_fractal_noise_range():
    n = fractal_noise((128, 128), np.random.default_rng(0), base_period=2, octaves=4)
    assert np.abs(n).max() <= 1.0 + 1e-5 and n.std() > 0.05


def test_perlin_blob_is_one_ragged_region_of_about_the_area():
    rng = np.random.default_rng(0)
    for area in (0.01, 0.03, 0.08):
        region = perlin_blob((128, 128), rng, area, (64.0, 64.0), aspect=2.0, angle=0.3, roughness=0.6)
        assert region.dtype == bool
        assert ndimage.label(region)[1] == 1
        assert 0.6 * area <= region.mean() <= area + 1e-3
        ys, xs = np.nonzero(region)
        assert abs(ys.mean() - 64) < 20 and abs(xs.mean() - 64) < 20
