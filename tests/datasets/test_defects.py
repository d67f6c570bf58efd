import numpy as np
import pytest
from scipy import ndimage

from decodiff.datasets.defects import (
    CHANGE_THRESHOLD,
    DEFECT_KINDS,
    MAX_AREA,
    MIN_AREA,
    apply_change,
    synthesize_defect,
)
from decodiff.datasets.demo import foreign_textures, normal_image


def _normals(size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {c: normal_image(c, rng, size) for c in ("grass", "brick", "coins", "coffee")}


def _check(clean: np.ndarray, out: np.ndarray, mask: np.ndarray) -> None:
    assert out.shape == clean.shape and out.dtype == np.uint8
    assert mask.shape == clean.shape[:2] and mask.dtype == bool
    diff = np.abs(out.astype(int) - clean.astype(int)).reshape(*mask.shape, -1).max(axis=-1)
    # The mask is exactly the changed pixels, and every change is at least the threshold.
    assert np.array_equal(mask, diff > 0)
    assert diff[mask].min() >= CHANGE_THRESHOLD
    assert MIN_AREA <= mask.mean() <= MAX_AREA


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("size", [64, 128])
def test_every_kind_has_an_exact_mask_within_the_area_bounds(kind, size):
    for category, clean in _normals(size).items():
        rng = np.random.default_rng([size, len(kind)])
        for _ in range(6):
            out, mask = synthesize_defect(clean, kind, rng, foreign_textures(category))
            _check(clean, out, mask)


def test_defects_are_deterministic_given_the_generator():
    clean = _normals(64)["coffee"]
    pool = foreign_textures("coffee")
    for kind in DEFECT_KINDS:
        a = synthesize_defect(clean, kind, np.random.default_rng(3), pool)
        b = synthesize_defect(clean, kind, np.random.default_rng(3), pool)
        c = synthesize_defect(clean, kind, np.random.default_rng(4), pool)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        assert not np.array_equal(a[1], c[1])


def test_scratches_are_thin():
    clean = _normals(128)["brick"]
    rng = np.random.default_rng(0)
    for _ in range(10):
        _, mask = synthesize_defect(clean, "scratch", rng)
        # Half width (distance to the nearest unmasked pixel) of a 1-3 px line with soft edges.
        assert ndimage.distance_transform_edt(mask).max() <= 3.0


def test_defects_are_visible_on_average():
    """Not invisible: the mean change inside the mask is well above the threshold."""
    normals = _normals(128)
    for kind in DEFECT_KINDS:
        rng = np.random.default_rng(1)
        changes = []
        for category, clean in normals.items():
            for _ in range(4):
                out, mask = synthesize_defect(clean, kind, rng, foreign_textures(category))
                diff = np.abs(out.astype(int) - clean.astype(int)).reshape(*mask.shape, -1).max(axis=-1)
                changes.append(diff[mask].mean())
        assert np.mean(changes) >= 12, kind


def test_subtle_defects_have_lower_contrast():
    normals = _normals(128)

    def mean_change(kind, subtle):
        rng = np.random.default_rng(2)
        changes = []
        for category, clean in normals.items():
            for _ in range(3):
                out, mask = synthesize_defect(clean, kind, rng, foreign_textures(category), subtle=subtle)
                changes.append(np.abs(out.astype(int) - clean.astype(int))[mask].mean())
        return np.mean(changes)

    for kind in ("scratch", "stain"):
        assert mean_change(kind, 1.0) < 0.6 * mean_change(kind, 0.0)


def test_image_shapes_are_kept():
    rng = np.random.default_rng(0)
    grey = normal_image("grass", rng, 64)
    pool = foreign_textures("grass")
    for image in (grey, grey[..., None], np.repeat(grey[..., None], 3, axis=-1)):
        out, mask = synthesize_defect(image, "foreign_texture", rng, pool)
        assert out.shape == image.shape
        _check(image, out, mask)


def test_bad_arguments_are_named():
    img = np.zeros((64, 64), np.uint8)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="unknown defect kind 'dent'"):
        synthesize_defect(img, "dent", rng)
    with pytest.raises(ValueError, match="source texture"):
        synthesize_defect(img, "foreign_texture", rng)
    with pytest.raises(ValueError, match="uint8"):
        synthesize_defect(img.astype(np.float32), "scratch", rng)


def test_apply_change_reverts_tiny_changes_and_fills_core_holes():
    clean = np.full((8, 8, 1), 100, np.uint8)
    painted = clean.astype(np.float32).copy()
    painted[0, 0] += 2.4  # rounds to +2: imperceptible, reverted
    painted[1, 1] += 7.0  # counted
    core = np.zeros((8, 8), bool)
    core[4:6, 4:6] = True  # core left as it was: moved 3 grey levels away
    out, mask = apply_change(clean, painted, core)
    assert out[0, 0, 0] == 100 and not mask[0, 0]
    assert out[1, 1, 0] == 107 and mask[1, 1]
    assert (out[4:6, 4:6] == 103).all() and mask[4:6, 4:6].all()
    assert np.array_equal(mask, (out != clean).any(-1))
    # Near white the nudge goes down, so it never saturates to no change.
    out, mask = apply_change(np.full((2, 2, 3), 254, np.uint8), np.full((2, 2, 3), 254.0), np.ones((2, 2), bool))
    assert (out == 251).all() and mask.all()
