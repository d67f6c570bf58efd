"""Synthetic industrial defects painted onto normal images, each with its exact pixel mask.

The demo set's test defects and (elsewhere) a validation split of held-out normal images
both need anomalies whose ground truth is known to the pixel, so every painter goes through
`apply_change`, which defines the mask from what was actually written:

    A pixel is anomalous iff its final uint8 value differs from the clean image in some
    channel. Changes of at most 2 grey levels (soft edges, blur tails) are reverted to the
    clean value, so every anomalous pixel differs by at least 3 grey levels. Inside a
    defect's core (the painted region itself, where the defect's blend weight is at least
    one half) every pixel is anomalous: a core pixel that the new content left within 2 grey
    levels of the old value, by chance, is moved 3 grey levels away from it, so that masks of
    cut/pasted regions have no speckle holes.

Defect areas (mask pixels / image pixels) always lie in [MIN_AREA, MAX_AREA]; a painting that
falls outside is thrown away and painted afresh from the same generator, so the result stays
a deterministic function of the generator's state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

from decodiff.datasets.perlin import perlin_blob

DEFECT_KINDS = ("foreign_texture", "scratch", "stain", "missing", "displaced")
MIN_AREA = 0.005  # of the image area
MAX_AREA = 0.10
CHANGE_THRESHOLD = 3  # grey levels: smaller changes are reverted and not anomalous
SUBTLE_FRACTION = 0.35  # default share of low-contrast defects
_MAX_TRIES = 50


class DefectError(RuntimeError):
    """No visible defect of the kind fits the area bounds on this image (e.g. a piece moved within a flat
    region changes nothing): a caller may paint another kind."""


_Painter = Callable[[np.ndarray, np.random.Generator, Sequence[np.ndarray], bool], tuple[np.ndarray, np.ndarray]]


def synthesize_defect(
    image: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    source_textures: Sequence[np.ndarray] = (),
    *,
    subtle: float = SUBTLE_FRACTION,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint one defect of `kind` on a uint8 HxW or HxWx3 image.

    Returns (defective image of the same shape and dtype, HxW bool mask). `source_textures`
    (uint8 grey or RGB images, any size) supply the foreign material for "foreign_texture";
    the other kinds only use the image itself. `subtle` is the probability that the defect is
    a low-contrast one (a faint stain, a shallow scratch, material matched in brightness).
    """
    if kind not in _PAINTERS:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {', '.join(DEFECT_KINDS)}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3))):
        raise ValueError(f"expected a uint8 HxW or HxWx3 image, got {image.dtype} {image.shape}")
    if kind == "foreign_texture" and not source_textures:
        raise ValueError("foreign_texture needs at least one source texture")
    if min(image.shape[:2]) < 16:
        raise ValueError(f"image too small for a defect: {image.shape[:2]}")

    clean = image.reshape(image.shape[0], image.shape[1], -1)
    clean_f = clean.astype(np.float32)
    is_subtle = bool(rng.random() < subtle)
    for _ in range(_MAX_TRIES):
        painted, core = _PAINTERS[kind](clean_f, rng, source_textures, is_subtle)
        out, mask = apply_change(clean, painted, core)
        # A core that the new content mostly left as it was would be an invisible defect.
        unchanged = core & (np.abs(np.rint(painted) - clean_f).max(axis=-1) < CHANGE_THRESHOLD)
        if MIN_AREA <= mask.mean() <= MAX_AREA and unchanged.sum() <= 0.25 * mask.sum():
            return out.reshape(image.shape), mask
    raise DefectError(f"could not paint a {kind} defect within the area bounds on a {image.shape} image")


def apply_change(clean: np.ndarray, painted: np.ndarray, core: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Round a painted HxWxC float image onto the clean uint8 one; return it and its exact mask.

    See the module docstring for the rule; afterwards `mask == (out != clean).any(-1)` holds.
    """
    out = np.clip(np.rint(painted), 0, 255).astype(np.uint8)
    diff = np.abs(out.astype(np.int16) - clean.astype(np.int16)).max(axis=-1)
    weak = core & (diff < CHANGE_THRESHOLD)
    if weak.any():
        c = clean[weak].astype(np.int16)
        out[weak] = np.where(c < 128, c + CHANGE_THRESHOLD, c - CHANGE_THRESHOLD).astype(np.uint8)
    mask = core | (diff >= CHANGE_THRESHOLD)
    out[~mask] = clean[~mask]
    return out, mask


# --------------------------------------------------------------------------- placement


def _grey(img: np.ndarray) -> np.ndarray:
    return img.mean(axis=-1) if img.shape[-1] > 1 else img[..., 0]


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def _pick_centre(img: np.ndarray, rng: np.random.Generator, margin: float, structured: bool) -> tuple[float, float]:
    """A defect centre; `structured` prefers edges and detail (a coin, not the cloth behind it)."""
    h, w = img.shape[:2]
    my = int(min(max(margin, 2), h / 2 - 1))
    mx = int(min(max(margin, 2), w / 2 - 1))
    if not structured:
        return float(rng.uniform(my, h - my)), float(rng.uniform(mx, w - mx))
    grey = ndimage.gaussian_filter(_grey(img), 1.0)
    energy = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    energy = ndimage.gaussian_filter(energy, max(h, w) / 32)[my : h - my, mx : w - mx]
    p = 0.25 / energy.size + 0.75 * energy.ravel() / max(float(energy.sum()), 1e-9)
    idx = int(rng.choice(energy.size, p=p / p.sum()))
    y, x = divmod(idx, energy.shape[1])
    return float(y + my + rng.uniform(-0.5, 0.5)), float(x + mx + rng.uniform(-0.5, 0.5))


def _blob(
    img: np.ndarray,
    rng: np.random.Generator,
    area: float,
    *,
    structured: bool,
    roughness: tuple[float, float],
    max_aspect: float,
) -> np.ndarray:
    h, w = img.shape[:2]
    radius = np.sqrt(area * h * w / np.pi)
    centre = _pick_centre(img, rng, 0.8 * radius, structured)
    return perlin_blob(
        (h, w),
        rng,
        area,
        centre,
        aspect=rng.uniform(1.0, max_aspect),
        angle=rng.uniform(0, np.pi),
        roughness=rng.uniform(*roughness),
    )


def _bbox(region: np.ndarray, pad: int = 0) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(region)
    h, w = region.shape
    return max(0, ys.min() - pad), min(h, ys.max() + 1 + pad), max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)


def _to_channels(patch: np.ndarray, channels: int) -> np.ndarray:
    patch = patch.astype(np.float32)
    if patch.ndim == 2:
        patch = patch[..., None]
    if patch.shape[-1] == 4:
        patch = patch[..., :3]
    if channels == 1 and patch.shape[-1] == 3:
        return (patch @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    if channels == 3 and patch.shape[-1] == 1:
        return np.repeat(patch, 3, axis=-1)
    return patch


# --------------------------------------------------------------------------- painters
# Each painter takes (clean HxWxC float image, rng, source textures, subtle) and returns
# (painted HxWxC float image, core HxW bool); it draws everything it randomises from `rng`.


def _paint_foreign_texture(img, rng, sources, subtle):
    """Material from another picture under a ragged mask (contamination, a wrong part)."""
    h, w, c = img.shape
    area = _log_uniform(rng, 0.015, 0.06)
    region = _blob(img, rng, area, structured=False, roughness=(0.3, 0.8), max_aspect=2.5)
    y0, y1, x0, x1 = _bbox(region, pad=3)
    bh, bw = y1 - y0, x1 - x0

    src = np.asarray(sources[int(rng.integers(len(sources)))])
    zoom = rng.uniform(0.8, 2.5)  # source pixels per image pixel
    ch, cw = min(src.shape[0], max(2, round(bh * zoom))), min(src.shape[1], max(2, round(bw * zoom)))
    sy, sx = int(rng.integers(0, src.shape[0] - ch + 1)), int(rng.integers(0, src.shape[1] - cw + 1))
    crop = np.ascontiguousarray(src[sy : sy + ch, sx : sx + cw])
    if crop.ndim == 3 and crop.shape[-1] == 4:
        crop = crop[..., :3]
    patch = np.asarray(Image.fromarray(crop).resize((bw, bh), Image.BICUBIC))
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    if rng.random() < 0.5:
        patch = patch[::-1]
    patch = _to_channels(patch, c)

    inside = region[y0:y1, x0:x1]
    here = img[y0:y1, x0:x1][inside]
    mean_here, mean_patch = here.mean(axis=0), patch[inside].mean(axis=0)
    if subtle:  # same brightness and contrast as the surface: only the structure is wrong
        std_here, std_patch = here.std(axis=0), patch[inside].std(axis=0) + 1e-3
        patch = (patch - mean_patch) * (std_here / std_patch) + mean_here
        opacity = rng.uniform(0.7, 0.9)
    else:
        patch = patch + rng.uniform(0.0, 0.6) * (mean_here - mean_patch)
        opacity = rng.uniform(0.9, 1.0)

    alpha = ndimage.gaussian_filter(region.astype(np.float32), 0.7)[y0:y1, x0:x1, None] * opacity
    out = img.copy()
    out[y0:y1, x0:x1] = img[y0:y1, x0:x1] * (1 - alpha) + patch * alpha
    return out, region


def _curve(rng: np.random.Generator, start: np.ndarray, heading: float, length: float, bend: float) -> np.ndarray:
    """Points (y, x) along a quadratic Bezier about `length` long, about 4 per pixel."""
    d = np.array([np.sin(heading), np.cos(heading)])
    normal = np.array([d[1], -d[0]])
    p0, p2 = start, start + d * length
    p1 = (p0 + p2) / 2 + normal * bend * length
    t = np.linspace(0.0, 1.0, max(8, int(length * 4)))[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _paint_scratch(img, rng, sources, subtle):
    """A thin curved line, lighter or darker, tapered at both ends; sometimes two of them."""
    h, w, c = img.shape
    size = min(h, w)
    scale = max(1.0, size / 128)
    width = rng.uniform(1.0, 3.0) * scale
    length = rng.uniform(0.45, 0.9) * size
    heading = rng.uniform(0, 2 * np.pi)
    centre = np.array(_pick_centre(img, rng, 0.15 * size, structured=True))
    start = centre - np.array([np.sin(heading), np.cos(heading)]) * length / 2
    strokes = [_curve(rng, start, heading, length, rng.uniform(-0.25, 0.25))]
    if rng.random() < 0.3:  # a second scratch alongside, as from the same tool
        offset = np.array([np.cos(heading), -np.sin(heading)]) * rng.uniform(3, 8) * scale
        strokes.append(
            _curve(
                rng,
                start + offset,
                heading + rng.uniform(-0.2, 0.2),
                length * rng.uniform(0.5, 1.0),
                rng.uniform(-0.2, 0.2),
            )
        )

    points = np.concatenate(strokes)
    # Half width along each stroke: full in the middle, tapering to nothing at the ends.
    half = np.concatenate([width / 2 * np.sin(np.linspace(0, np.pi, len(s))) ** 0.35 for s in strokes])
    yy, xx = np.mgrid[0:h, 0:w]
    pixels = np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64)
    dist, idx = cKDTree(points).query(pixels, distance_upper_bound=width + 2)
    near = np.isfinite(dist)
    alpha = np.zeros(h * w, np.float32)
    alpha[near] = np.clip(half[idx[near]] + 0.5 - dist[near], 0.0, 1.0)
    alpha = alpha.reshape(h, w)
    core = alpha >= 0.5
    if not core.any():
        return img, core

    level = _grey(img)[core].mean()
    lighter = rng.random() < 0.5 if 90 <= level <= 165 else level < 90
    amplitude = rng.uniform(30, 45) if subtle else rng.uniform(60, 120)
    # Along the scratch the depth varies a little, as a real groove catches the light unevenly.
    wobble = 1.0 + 0.15 * np.sin(np.linspace(0, rng.uniform(2, 6) * np.pi, len(points)) + rng.uniform(0, 2 * np.pi))
    depth = np.zeros(h * w, np.float32)
    depth[near] = wobble[idx[near]]
    delta = (amplitude if lighter else -amplitude) * alpha * depth.reshape(h, w)
    return img + delta[..., None], core


# Stain colours as directions in RGB (scaled by the amplitude): coffee/rust/oil/ink/chalk.
_STAIN_COLOURS = np.array(
    [[-0.3, -0.6, -1.0], [0.3, -0.4, -0.8], [-1.0, -1.0, -1.0], [-0.7, 0.1, -0.6], [-0.8, -0.4, 0.4], [0.9, 0.9, 0.9]],
    np.float32,
)


def _paint_stain(img, rng, sources, subtle):
    """A soft blob of colour or shade (a liquid mark); subtle ones are low-contrast."""
    h, w, c = img.shape
    area = _log_uniform(rng, 0.02, 0.05) if subtle else _log_uniform(rng, 0.008, 0.035)
    region = _blob(img, rng, area, structured=False, roughness=(0.2, 0.6), max_aspect=2.0)
    sigma = max(1.0, 0.25 * np.sqrt(region.sum() / np.pi))
    blurred = ndimage.gaussian_filter(region.astype(np.float32), sigma)
    # Smoothstep on the blurred region: soft edges, but no faint tail far outside the mark.
    t = np.clip((blurred / max(float(blurred.max()), 1e-6) - 0.1) / 0.8, 0, 1)
    alpha = t * t * (3 - 2 * t)
    amplitude = rng.uniform(20, 30) if subtle else rng.uniform(50, 100)
    if c == 1:
        level = _grey(img)[region].mean()
        darker = rng.random() < 0.7 if level > 60 else False
        colour = np.array([-1.0 if darker else 1.0], np.float32)
    else:
        colour = _STAIN_COLOURS[int(rng.integers(len(_STAIN_COLOURS)))]
    delta = alpha[..., None] * colour * amplitude
    # A dried liquid mark is darker at its rim.
    if not subtle and rng.random() < 0.5:
        rim = 4 * alpha * (1 - alpha)
        delta += rim[..., None] * -0.3 * amplitude
    return img + delta, alpha >= 0.5


def _paint_missing(img, rng, sources, subtle):
    """A piece gone: flat background colour, a dark hole, or smeared (blurred) content."""
    h, w, c = img.shape
    size = min(h, w)
    area = _log_uniform(rng, 0.01, 0.05)
    region = _blob(img, rng, area, structured=True, roughness=(0.15, 0.5), max_aspect=2.0)
    mode = "blur" if subtle else ("background", "hole", "blur")[int(rng.integers(3))]
    if mode == "background":  # what lies behind the part: the median colour of the frame
        frame = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
        fill = np.broadcast_to(np.median(frame, axis=0), img.shape)
        if np.abs(img[region].mean(axis=0) - fill[0, 0]).max() < 25:
            mode = "hole"
    if mode == "hole":
        level = np.percentile(_grey(img), 2)
        fill = np.broadcast_to(np.float32(max(0.0, level * 0.5 + rng.uniform(0, 10))), img.shape)
    if mode == "blur":
        sigma = size / (rng.uniform(30, 50) if subtle else rng.uniform(10, 16))
        fill = ndimage.gaussian_filter(img, (sigma, sigma, 0))
    alpha = ndimage.gaussian_filter(region.astype(np.float32), 0.5)[..., None]
    return img * (1 - alpha) + fill * alpha, region


def _paint_displaced(img, rng, sources, subtle):
    """A piece cut out and put back shifted (and, unless subtle, turned or flipped)."""
    h, w, c = img.shape
    area = _log_uniform(rng, 0.015, 0.06)
    region = _blob(img, rng, area, structured=True, roughness=(0.1, 0.35), max_aspect=1.8)
    y0, y1, x0, x1 = _bbox(region)
    bh, bw = y1 - y0, x1 - x0
    side = max(bh, bw)
    if side >= min(h, w):
        return img, region  # no room to shift: fails the area check and is painted again
    shift = side * (rng.uniform(0.2, 0.35) if subtle else rng.uniform(0.35, 0.7))
    angle = rng.uniform(0, 2 * np.pi)
    cy, cx = (y0 + y1) / 2 + shift * np.sin(angle), (x0 + x1) / 2 + shift * np.cos(angle)
    sy = int(np.clip(round(cy - side / 2), 0, h - side))
    sx = int(np.clip(round(cx - side / 2), 0, w - side))
    piece = img[sy : sy + side, sx : sx + side]
    if not subtle:
        piece = np.rot90(piece, int(rng.integers(4)))
        if rng.random() < 0.3:
            piece = piece[:, ::-1]
    oy, ox = (side - bh) // 2, (side - bw) // 2
    piece = piece[oy : oy + bh, ox : ox + bw]
    out = img.copy()
    inside = region[y0:y1, x0:x1]
    out[y0:y1, x0:x1][inside] = piece[inside]
    return out, region


_PAINTERS: dict[str, _Painter] = {
    "foreign_texture": _paint_foreign_texture,
    "scratch": _paint_scratch,
    "stain": _paint_stain,
    "missing": _paint_missing,
    "displaced": _paint_displaced,
}
