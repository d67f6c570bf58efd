"""Scoring: DeCo-Diff's evaluation of test shards and everything that turns maps into numbers.

- `evaluate`: the correction sampler over the test shards, anomaly maps, image scores, metrics;
- `baselines`: simple methods scored beside DeCo-Diff on the same images;
- `uncertainty`: bootstrap intervals; `qualitative`: the examples a report shows;
- `validation`: a split of normal training images for choosing settings without the test set;
- `predict`: new images through a trained checkpoint; `score`: maps made by any method.

May import: `decodiff.harness.training` (models, checkpoints, the VAE), `decodiff.harness.metrics`,
the run-level modules, `decodiff.models`, `decodiff.datasets`; never `sweep`, `commands` or `bench`.
"""
