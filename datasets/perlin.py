"""Perlin gradient noise, and the irregular blob masks cut from it.

Defect regions in real inspection images are ragged, not ellipses or rectangles; DRAEM
showed that thresholded Perlin noise gives shapes a detector cannot learn to spot by their
outline alone. Here the noise roughens a localised envelope so that one defect is one blob.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _fade(t: np.ndarray) -> np.ndarray:
    # Perlin's quintic: zero first and second derivatives at the lattice points (no grid seams).
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def perlin_noise(shape: tuple[int, int], periods: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient noise in about [-1, 1] with `periods` lattice cells along (rows, cols)."""
    h, w = shape
    py, px = max(1, int(periods[0])), max(1, int(periods[1]))
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(py + 1, px + 1))
    gy, gx = np.sin(angles), np.cos(angles)

    ys = np.arange(h) * (py / h)
    xs = np.arange(w) * (px / w)
    yi, xi = ys.astype(np.int64)[:, None], xs.astype(np.int64)[None, :]
    yf, xf = (ys - np.floor(ys))[:, None], (xs - np.floor(xs))[None, :]

    def corner(dy: int, dx: int) -> np.ndarray:
        return gy[yi + dy, xi + dx] * (yf - dy) + gx[yi + dy, xi + dx] * (xf - dx)

    u, v = _fade(xf), _fade(yf)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    # The raw range of 2-D Perlin noise is +-sqrt(1/2); scale it to about +-1.
    return ((top * (1 - v) + bottom * v) * np.sqrt(2.0)).astype(np.float32)


def fractal_noise(
    shape: tuple[int, int], rng: np.random.Generator, *, base_period: int = 2, octaves: int = 4
) -> np.ndarray:
    """Perlin noise summed over octaves (each twice as fine, half as strong), in about [-1, 1]."""
    total = np.zeros(shape, np.float32)
    norm = 0.0
    for octave in range(octaves):
        period = base_period * 2**octave
        amplitude = 0.5**octave
        total += amplitude * perlin_noise(shape, (period, period), rng)
        norm += amplitude
    return total / norm


def perlin_blob(
    shape: tuple[int, int],
    rng: np.random.Generator,
    area: float,
    centre: tuple[float, float],
    *,
    aspect: float = 1.0,
    angle: float = 0.0,
    roughness: float = 0.5,
) -> np.ndarray:
    """One connected ragged region of about `area` (a fraction of the image) around `centre`.

    An elliptical envelope (`aspect` = long/short axis, rotated by `angle` radians) plus
    `roughness` times fractal noise is thresholded at the quantile that gives the area; only
    the component holding the most pixels is kept, so the result may fall a little short.
    """
    h, w = shape
    target = float(np.clip(area, 1.0 / (h * w), 1.0)) * h * w
    radius = np.sqrt(target / np.pi)  # of the equal-area circle
    a, b = radius * np.sqrt(aspect), radius / np.sqrt(aspect)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    c, s = np.cos(angle), np.sin(angle)
    along, across = dx * c + dy * s, -dx * s + dy * c
    envelope = 1.0 - (along / a) ** 2 - (across / b) ** 2  # 0 on the ellipse, 1 at the centre

    period = max(2, int(round(min(h, w) / max(radius, 1.0) / 1.5)))
    field = envelope + roughness * fractal_noise(shape, rng, base_period=period, octaves=3)
    n = int(round(target))
    threshold = np.partition(field.ravel(), field.size - n)[field.size - n]
    region = field >= threshold

    labels, count = ndimage.label(region)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        region = labels == (1 + int(np.argmax(sizes)))
    return region
