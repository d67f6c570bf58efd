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


def count_normals(sorted_normal: np.ndarray, queries: np.ndarray, *, backend: Backend = "numpy",
                  device: str = "cpu") -> Counts:
    """Binary-search `queries` in the ascending `sorted_normal` (same dtype, so that numpy
    never converts the big array). Ascending queries search fastest."""
    if queries.dtype != sorted_normal.dtype:
        raise TypeError(f"queries are {queries.dtype}, normal scores {sorted_normal.dtype}: pass one dtype")
    if backend == "numpy":
        below = np.searchsorted(sorted_normal, queries, side="left").astype(np.int64, copy=False)
        at_or_below = np.searchsorted(sorted_normal, queries, side="right").astype(np.int64, copy=False)
        return Counts(below, at_or_below, int(sorted_normal.size))
    return _torch_counts(sorted_normal, queries, device, sort=False)


def sort_and_count(normal: np.ndarray, queries: np.ndarray, *, backend: Backend = "numpy",
                   device: str = "cpu") -> Counts:
    """`count_normals` on unsorted normal scores; on torch the sorted array stays on the device."""
    if queries.dtype != normal.dtype:
        raise TypeError(f"queries are {queries.dtype}, normal scores {normal.dtype}: pass one dtype")
    if backend == "numpy":
        return count_normals(np.sort(normal), queries)
    return _torch_counts(normal, queries, device, sort=True)


def _torch_counts(normal: np.ndarray, queries: np.ndarray, device: str, sort: bool) -> Counts:
    import torch

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
