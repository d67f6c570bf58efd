"""AUROC, average precision and F1max, exact over every distinct threshold, ties included.

Definitions follow scikit-learn: a threshold t marks every score >= t as anomalous; equal
scores form one threshold group, so a group holding both normal and anomalous scores moves
the ROC curve diagonally (counted as half in AUROC) and enters the precision-recall curve as
one step. Average precision is the step-wise sum  sum_t (R_t - R_{t-1}) * P_t  (not a
trapezoid), F1max the largest F1 over all thresholds.

All three come from the counts of `ranks.py`: per anomalous score, the number of normal
scores below it and at or below it. The plain functions take (scores, labels) arrays; the
streaming accumulators call `ranking_metrics` with counts they computed from one sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decodiff.harness.metrics.ranks import Backend, Counts, sort_and_count


class UndefinedMetric(ValueError):
    """A metric that has no value on these inputs; the message is the reason."""


@dataclass(frozen=True)
class RankingMetrics:
    auroc: float
    auprc: float
    f1max: float


def split_scores(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(normal scores, anomalous scores) from scores and 0/1 labels, with the checks the
    metrics rely on: same length, finite scores, binary labels."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} differ in shape")
    scores = scores.ravel()
    labels = labels.ravel()
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    if labels.dtype != bool:
        if not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be 0/1 (or bool)")
        labels = labels.astype(bool)
    return scores[~labels], scores[labels]


def check_defined(n_normal: int, n_anomalous: int, constant: bool, what: str = "scores") -> None:
    """Raise UndefinedMetric for the cases where no ranking metric means anything."""
    if n_anomalous == 0:
        raise UndefinedMetric(f"no anomalous {what}")
    if n_normal == 0:
        raise UndefinedMetric(f"no normal {what}")
    if constant:
        raise UndefinedMetric(f"all {what} are equal (a constant score ranks nothing)")


def ranking_metrics(anomalous_sorted: np.ndarray, counts: Counts) -> RankingMetrics:
    """AUROC, AP and F1max from the ascending anomalous scores and, per anomalous score, the
    counts of normal scores below / at-or-below it. Needs >= 1 normal and >= 1 anomalous."""
    p = anomalous_sorted.size
    n = counts.n_normal
    below, at_or_below = counts.below, counts.at_or_below
    # AUROC = P(normal < anomalous) + 1/2 P(tie): the Mann-Whitney form of the trapezoid ROC area.
    u2 = np.add.reduce(below, dtype=np.float64) + np.add.reduce(at_or_below, dtype=np.float64)
    auroc = u2 / (2.0 * p * n)
    # Threshold groups among the anomalous scores (descending): one point per distinct value.
    # Normal-only thresholds add no recall (AP) and cannot beat the anomalous value just above
    # them (F1), so these points suffice for both.
    last = np.flatnonzero(np.diff(anomalous_sorted) != 0)  # ascending: last index of each run but the top
    first_of_run = np.concatenate(([0], last + 1))  # ascending index where each distinct value starts
    tp = (p - first_of_run).astype(np.float64)  # anomalous >= value
    fp = (n - below[first_of_run]).astype(np.float64)  # normal >= value
    d_tp = tp - np.append(tp[1:], 0.0)  # anomalous scores equal to the value (the recall step)
    auprc = float(np.sum(d_tp * (tp / (tp + fp))) / p)
    f1max = float(np.max(2.0 * tp / (tp + fp + p)))
    return RankingMetrics(float(auroc), auprc, f1max)


def binary_metrics(
    scores: np.ndarray, labels: np.ndarray, *, backend: Backend = "numpy", device: str = "cpu", what: str = "scores"
) -> RankingMetrics:
    """AUROC, AP and F1max of (scores, labels) from one sort; UndefinedMetric where none exists."""
    normal, anomalous = split_scores(scores, labels)
    constant = normal.size + anomalous.size > 0 and np.ptp(np.concatenate((normal, anomalous))) == 0
    check_defined(normal.size, anomalous.size, bool(constant), what)
    anomalous = np.sort(anomalous)
    return ranking_metrics(anomalous, sort_and_count(normal, anomalous, backend=backend, device=device))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve; equals sklearn's roc_auc_score, ties included."""
    return binary_metrics(scores, labels).auroc


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Step-wise average precision; equals sklearn's average_precision_score, ties included."""
    return binary_metrics(scores, labels).auprc


def f1max(scores: np.ndarray, labels: np.ndarray) -> float:
    """The largest F1 over every distinct threshold (not a grid)."""
    return binary_metrics(scores, labels).f1max
