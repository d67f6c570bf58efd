"""The benchmark harness: configs, data and runs around the library (models, datasets, reports).

Run-level modules (the floor; they import no sub-package): `config`, `recipes`, `errors`,
`progress`, `provenance`, `runs`, `tracking`, `timings`, `data`, `methods`, `report_inputs`.
Sub-packages: `training`, `evaluation`, `metrics`, `sweep`, `commands`; `bench` finishes a run
from training and evaluation, `cli` and `commands` sit on top.
"""
