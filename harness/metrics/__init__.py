"""Exact anomaly-detection metrics: image AUROC / AUPRC / F1max, pixel AUROC / AUPRC / F1max /
AUPRO, per category, mean over categories and pooled, streamed batch by batch.

- `curves`: AUROC, average precision (scikit-learn's definitions) and F1max from (scores, labels);
- `aupro`: AUPRO by the MVTec-AD definition (exact) or the DeCo-Diff code's variant, regions
  8-connected;
- `ranks`: the one sort and search every metric is computed from (numpy, or torch on a GPU);
- `category`: one category's (or a pooled set's) values at both levels, each from one sort (and
  `aupro()`, one category's AUPRO from its maps and masks);
- `streaming`: one category's state, filled batch by batch;
- `suite`: `MetricSuite`, the long table of the results contract.
"""

from decodiff.harness.metrics.aupro import CONNECTIVITY, PROTOCOLS, label_regions
from decodiff.harness.metrics.category import IMAGE_METRICS, PIXEL_METRICS, aupro, image_values, pixel_values
from decodiff.harness.metrics.curves import UndefinedMetric, auroc, average_precision, binary_metrics, f1max
from decodiff.harness.metrics.streaming import CategoryAccumulator, ImageData, ScoredBatch
from decodiff.harness.metrics.suite import MEAN, POOLED, MetricSuite, mean_records, record

__all__ = [
    "CONNECTIVITY",
    "PROTOCOLS",
    "aupro",
    "label_regions",
    "UndefinedMetric",
    "auroc",
    "average_precision",
    "binary_metrics",
    "f1max",
    "IMAGE_METRICS",
    "PIXEL_METRICS",
    "image_values",
    "pixel_values",
    "CategoryAccumulator",
    "ImageData",
    "ScoredBatch",
    "MEAN",
    "POOLED",
    "MetricSuite",
    "mean_records",
    "record",
]
