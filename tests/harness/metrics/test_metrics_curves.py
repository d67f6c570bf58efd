"""AUROC / average precision equal scikit-learn's to 1e-9, ties included; F1max equals a brute
force over every threshold; undefined inputs raise UndefinedMetric; torch path == numpy path."""

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from decodiff.harness.metrics import UndefinedMetric, auroc, average_precision, binary_metrics, f1max


def brute_f1max(scores, labels):
    best = 0.0
    p = labels.sum()
    for t in np.unique(scores):
        pred = scores >= t
        tp = np.sum(pred & labels)
        fp = np.sum(pred & ~labels)
        best = max(best, 2 * tp / (2 * tp + fp + (p - tp)))
    return best


def cases(seed, n_cases=60):
    rng = np.random.default_rng(seed)
    for _ in range(n_cases):
        n = int(rng.integers(2, 400))
        labels = rng.random(n) < rng.uniform(0.05, 0.95)
        levels = int(rng.integers(2, 12))
        scores = rng.integers(0, levels, n).astype(np.float64)  # heavy ties
        scores += labels * rng.integers(0, 3)  # some signal
        if labels.all() or not labels.any() or np.ptp(scores) == 0:
            continue
        yield scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equal_to_sklearn_with_heavy_ties(seed):
    for scores, labels in cases(seed):
        m = binary_metrics(scores, labels)
        assert abs(m.auroc - roc_auc_score(labels, scores)) < 1e-9
        assert abs(m.auprc - average_precision_score(labels, scores)) < 1e-9
        assert abs(m.f1max - brute_f1max(scores, labels)) < 1e-12


def test_equal_to_sklearn_on_float32_pixels_and_their_ties():
    rng = np.random.default_rng(7)
    labels = rng.random(60_000) < 0.04
    scores = (rng.normal(size=labels.size) + 1.5 * labels).astype(np.float32)
    scores[rng.random(labels.size) < 0.2] = 0.0  # a big tie group, with both classes
    scores = np.clip(scores, -1.0, 2.5)  # and two more at the ends
    assert abs(auroc(scores, labels) - roc_auc_score(labels, scores)) < 1e-9
    assert abs(average_precision(scores, labels) - average_precision_score(labels, scores)) < 1e-9


def test_f1max_is_over_every_threshold_not_a_grid():
    rng = np.random.default_rng(3)
    labels = rng.random(3000) < 0.1
    scores = rng.random(3000) + 0.3 * labels
    assert abs(f1max(scores, labels) - brute_f1max(scores, labels)) < 1e-12


def test_signed_zeros_are_one_threshold():
    scores = np.array([-0.0, 0.0, 0.0, -0.0, 1.0, 0.5])
    labels = np.array([1, 0, 1, 0, 1, 0], dtype=bool)
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)


@pytest.mark.parametrize(
    "scores,labels,reason",
    [
        (np.array([0.1, 0.2, 0.3]), np.array([0, 0, 0]), "no anomalous"),
        (np.array([0.1, 0.2, 0.3]), np.array([1, 1, 1]), "no normal"),
        (np.array([0.5, 0.5, 0.5]), np.array([0, 1, 0]), "equal"),
    ],
)
def test_undefined_inputs_raise_with_a_reason(scores, labels, reason):
    with pytest.raises(UndefinedMetric, match=reason):
        binary_metrics(scores, labels)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match="NaN"):
        auroc(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(ValueError, match="0/1"):
        auroc(np.array([0.1, 0.2]), np.array([0, 2]))


def test_torch_path_equals_numpy_path():
    pytest.importorskip("torch")
    for scores, labels in cases(11, 20):
        a = binary_metrics(scores, labels)
        b = binary_metrics(scores, labels, backend="torch", device="cpu")
        assert a == b


def test_chunked_search_equals_numpy_searchsorted():
    from decodiff.harness.metrics.ranks import _search_sorted_queries

    rng = np.random.default_rng(4)
    for _ in range(200):
        a = np.sort(rng.integers(0, 50, int(rng.integers(0, 2000))).astype(np.float32))
        q = np.sort(rng.integers(-5, 55, int(rng.integers(0, 3000))).astype(np.float32))
        if rng.random() < 0.2:
            q = rng.permutation(q)  # unsorted queries take the plain path
        for side in ("left", "right"):
            got = _search_sorted_queries(a, q, side, chunk=int(rng.integers(1, 100)))
            assert np.array_equal(got, np.searchsorted(a, q, side))
