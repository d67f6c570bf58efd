"""Where each query score falls among the normal scores: the one sort every metric shares.

All exact metrics here (AUROC, average precision, F1max, AUPRO) need, for each anomalous
score s, only two counts over the normal scores: how many are strictly below s and how many
are at or below s. Sorting the normal scores once and binary-searching the (few) anomalous
scores gives both, ties included, so no metric ever needs a per-threshold pass over the
pixels. The sort is the only step whose cost grows with the number of normal pixels; it runs
with numpy (a vectorised sort on CPU) or torch (on a GPU), with the same counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Backend = Literal["numpy", "torch"]


@dataclass(frozen=True)
class Counts:
    """For each query q: `below` = #normal < q and `at_or_below` = #normal <= q (int64)."""

    below: np.ndarray
    at_or_below: np.ndarray
    n_normal: int


def count_normals(
    sorted_normal: np.ndarray, queries: np.ndarray, *, backend: Backend = "numpy", device: str = "cpu"
) -> Counts:
    """Binary-search `queries` in the ascending `sorted_normal` (same dtype, so that numpy
    never converts the big array). Ascending queries search fastest."""
    if queries.dtype != sorted_normal.dtype:
        raise TypeError(f"queries are {queries.dtype}, normal scores {sorted_normal.dtype}: pass one dtype")
    if backend == "numpy":
        n = sorted_normal.size
        below = _search_sorted_queries(sorted_normal, queries, "left")
        at_or_below = below.copy()
        if n:  # a second search only for the queries that tie with some normal score
            tie = sorted_normal[np.minimum(below, n - 1)] == queries
            if tie.any():
                at_or_below[tie] = _search_sorted_queries(sorted_normal, queries[tie], "right")
        return Counts(below, at_or_below, int(n))
    return _torch_counts(sorted_normal, queries, device, sort=False)


def _search_sorted_queries(
    a: np.ndarray, q: np.ndarray, side: Literal["left", "right"], chunk: int = 1 << 15
) -> np.ndarray:
    """np.searchsorted(a, q, side) as int64, faster for large ascending `q`: each chunk of
    queries searches only the slice of `a` its first and last query bound, which stays in
    cache (about 2x faster for millions of queries in 1e8 scores). Any `q` order is correct."""
    if q.size <= chunk or np.any(q[1:] < q[:-1]):
        return np.searchsorted(a, q, side=side).astype(np.int64, copy=False)
    out = np.empty(q.size, dtype=np.int64)
    starts = np.searchsorted(a, q[::chunk], side=side)
    for i, lo in enumerate(starts):
        hi = starts[i + 1] if i + 1 < starts.size else a.size
        s = slice(i * chunk, (i + 1) * chunk)
        out[s] = np.searchsorted(a[lo:hi], q[s], side=side)
        out[s] += lo
    return out


def sort_and_count(
    normal: np.ndarray, queries: np.ndarray, *, backend: Backend = "numpy", device: str = "cpu"
) -> Counts:
    """`count_normals` on unsorted normal scores; on torch the sorted array stays on the device."""
    if queries.dtype != normal.dtype:
        raise TypeError(f"queries are {queries.dtype}, normal scores {normal.dtype}: pass one dtype")
    if backend == "numpy":
        return count_normals(np.sort(normal), queries)
    return _torch_counts(normal, queries, device, sort=True)


def _torch_counts(normal: np.ndarray, queries: np.ndarray, device: str, sort: bool) -> Counts:
    import torch  # only the GPU backend needs it (0.7 s): `decodiff score` and reports start without it

    s = torch.from_numpy(np.ascontiguousarray(normal)).to(device)
    if sort:
        s = torch.sort(s).values
    q = torch.from_numpy(np.ascontiguousarray(queries)).to(device)
    below = torch.searchsorted(s, q, right=False).cpu().numpy().astype(np.int64, copy=False)
    at_or_below = torch.searchsorted(s, q, right=True).cpu().numpy().astype(np.int64, copy=False)
    return Counts(below, at_or_below, int(normal.size))


def round_down_to(dtype: np.dtype, values: np.ndarray) -> np.ndarray:
    """The largest `dtype` value <= each of `values` (float64). For x of that dtype,
    `x > v` holds exactly when `x > round_down_to(dtype, v)`: thresholds computed in float64
    can then be searched in float32 scores without converting the scores."""
    values = np.asarray(values, dtype=np.float64)
    q = values.astype(dtype)
    over = q.astype(np.float64) > values
    q[over] = np.nextafter(q[over], np.array(-np.inf, dtype=dtype))
    return q
