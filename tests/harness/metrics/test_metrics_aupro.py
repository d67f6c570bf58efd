"""AUPRO against slow, plain reference implementations written here: the MVTec-AD definition
(a pass per distinct threshold, exact integration with interpolation at the limit) and the
DeCo-Diff code's variant (200 thresholds, rescaled FPR axis); 8-connected regions."""

import numpy as np
import pytest
from skimage import measure
from sklearn.metrics import auc

from decodiff.harness.metrics import CONNECTIVITY, UndefinedMetric, aupro, label_regions


def flood_regions(mask, connectivity=8):
    """Regions of one 2-D mask as lists of (y, x), by an explicit flood fill."""
    steps = [(-1, 0), (1, 0), (0, -1), (0, 1)]
    if connectivity == 8:
        steps += [(-1, -1), (-1, 1), (1, -1), (1, 1)]
    seen = np.zeros_like(mask, dtype=bool)
    regions = []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, region = [(y, x)], []
        seen[y, x] = True
        while stack:
            cy, cx = stack.pop()
            region.append((cy, cx))
            for dy, dx in steps:
                ny, nx = cy + dy, cx + dx
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
        regions.append(region)
    return regions


def reference_aupro(maps, masks, limit, connectivity=8):
    """The MVTec-AD definition, one pass per distinct threshold."""
    regions = [(i, tuple(np.array(r).T)) for i, m in enumerate(masks) for r in flood_regions(m, connectivity)]
    normal = maps[~masks]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        fpr = np.mean(normal >= t)
        pro = np.mean([np.mean(maps[i][r] >= t) for i, r in regions])
        points.append((fpr, pro))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            if x0 < limit:
                y_lim = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
                area += (limit - x0) * (y0 + y_lim) / 2
            break
    return area / limit


def reference_deco_diff_code(maps, masks, limit=0.3, steps=200):
    """The DeCo-Diff code's protocol as described in the paper facts, written out plainly."""
    lo, hi = maps.min(), maps.max()
    fprs, pros = [], []
    for th in np.arange(lo, hi, (hi - lo) / steps):
        above = maps > th
        overlaps = []
        for a, m in zip(above, masks):
            for region in measure.regionprops(measure.label(m)):
                overlaps.append(a[region.coords[:, 0], region.coords[:, 1]].sum() / region.area)
        fprs.append(np.logical_and(above, ~masks).sum() / (~masks).sum())
        pros.append(np.mean(overlaps))
    fprs, pros = np.array(fprs), np.array(pros)
    keep = fprs < limit
    x = fprs[keep] / fprs[keep].max()
    return auc(x, pros[keep])


def blobs(rng, n, h, w, levels=None, p_anomalous=0.7):
    masks = np.zeros((n, h, w), dtype=bool)
    for i in range(n):
        if rng.random() < p_anomalous:
            for _ in range(int(rng.integers(1, 4))):
                y, x = rng.integers(0, h - 3), rng.integers(0, w - 3)
                masks[i, y : y + rng.integers(1, 6), x : x + rng.integers(1, 6)] = True
    maps = rng.random((n, h, w)) + 0.6 * masks * rng.random((n, 1, 1))
    if levels is not None:  # quantised: many ties, inside and across classes
        maps = np.floor(maps * levels) / levels
    return maps.astype(np.float32), masks


@pytest.mark.parametrize("seed,levels", [(0, None), (1, 7), (2, 25), (3, 3)])
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_mvtec_protocol_equals_plain_reference(seed, levels, limit):
    rng = np.random.default_rng(seed)
    maps, masks = blobs(rng, 5, 14, 14, levels)
    assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(reference_aupro(maps, masks, limit), abs=1e-6)


def test_limit_inside_a_tie_group_is_interpolated():
    # 10 normal pixels, one region of 2 pixels; one normal pixel ties with a region pixel at the top.
    maps = np.array([[[0.9, 0.9, 0.5, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.1, 0.1, 0.2]]], dtype=np.float32)
    masks = np.zeros_like(maps, dtype=bool)
    masks[0, 0, 0] = masks[0, 0, 2] = True
    # curve: (0,0) -> (0.1, 0.5) [tie at 0.9, diagonal] -> (0.1, 1.0) [0.5] -> (0.2, 1.0) [0.2] -> ...
    # up to 0.15: the diagonal's area is 0.1 * 0.25 = 0.025, then 1.0 * 0.05
    assert aupro(maps, masks, fpr_limit=0.15) == pytest.approx(0.075 / 0.15, abs=1e-12)
    # up to 0.05: inside the diagonal, PRO(0.05) = 0.25
    assert aupro(maps, masks, fpr_limit=0.05) == pytest.approx((0.05 * 0.25 / 2) / 0.05, abs=1e-12)
    assert aupro(maps, masks, fpr_limit=0.15) == pytest.approx(reference_aupro(maps, masks, 0.15), abs=1e-12)


def test_regions_are_8_connected_like_the_mvtec_code():
    assert CONNECTIVITY == 8
    mask = np.zeros((6, 6), dtype=bool)
    mask[1, 1] = mask[2, 2] = mask[3, 3] = True  # a diagonal: one region with 8-, three with 4-connectivity
    mask[5, 0] = True
    labels, n = label_regions(mask[None])
    assert n == len(flood_regions(mask, 8)) == 2
    assert len(flood_regions(mask, 4)) == 4
    # the choice matters to the value, and ours is the 8-connected one
    rng = np.random.default_rng(5)
    maps = rng.random((1, 6, 6)).astype(np.float32)
    masks = mask[None]
    ours = aupro(maps, masks)
    assert ours == pytest.approx(reference_aupro(maps, masks, 0.3, connectivity=8), abs=1e-12)
    assert ours != pytest.approx(reference_aupro(maps, masks, 0.3, connectivity=4), abs=1e-6)


def test_regions_never_join_across_images():
    masks = np.ones((3, 4, 4), dtype=bool)
    labels, n = label_regions(masks)
    assert n == 3 and [set(np.unique(labels[i])) for i in range(3)] == [{1}, {2}, {3}]


@pytest.mark.parametrize("seed,levels", [(0, None), (1, 9), (4, None)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_deco_diff_code_protocol_equals_its_plain_description(seed, levels, dtype):
    rng = np.random.default_rng(seed)
    maps, masks = blobs(rng, 4, 16, 16, levels)
    maps = maps.astype(dtype)
    ours = aupro(maps, masks, protocol="deco-diff-code")
    assert ours == pytest.approx(reference_deco_diff_code(maps, masks), abs=1e-9)


def test_the_two_protocols_differ_and_are_not_mixed_up():
    rng = np.random.default_rng(8)
    maps, masks = blobs(rng, 4, 16, 16)
    assert aupro(maps, masks, protocol="mvtec") != pytest.approx(
        aupro(maps, masks, protocol="deco-diff-code"), abs=1e-4
    )
    with pytest.raises(ValueError, match="protocol"):
        aupro(maps, masks, protocol="anomalib")
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(maps, masks, fpr_limit=0.0)


def test_undefined_cases_raise_with_a_reason():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 8, 8)).astype(np.float32)
    with pytest.raises(UndefinedMetric, match="no anomalous"):
        aupro(maps, np.zeros((2, 8, 8), dtype=bool))
    masks = np.zeros((2, 8, 8), dtype=bool)
    masks[0, 2:4, 2:4] = True
    with pytest.raises(UndefinedMetric, match="equal"):
        aupro(np.full((2, 8, 8), 0.3, dtype=np.float32), masks)
    with pytest.raises(UndefinedMetric, match="equal"):
        aupro(np.full((2, 8, 8), 0.3, dtype=np.float32), masks, protocol="deco-diff-code")
    with pytest.raises(UndefinedMetric, match="no normal"):
        aupro(maps, np.ones((2, 8, 8), dtype=bool))
    # deco-diff-code: a map whose normal pixels are almost all at the top keeps < 2 thresholds
    flat = np.ones((1, 8, 8), dtype=np.float32)
    flat[0, 0, 0] = 0.0
    m = np.zeros((1, 8, 8), dtype=bool)
    m[0, 4, 4] = True
    with pytest.raises(UndefinedMetric, match="fewer than 2"):
        aupro(flat, m, protocol="deco-diff-code")
