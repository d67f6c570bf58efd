"""The benchmark harness: configs, data and runs around the library (models, datasets, reports).

Run-level modules (the floor; they import no sub-package): `allocator`, `process_env`, `config`, `recipes`,
`errors`, `progress`, `provenance`, `runs`, `tracking`, `timings`, `data`, `methods`, `report_inputs`, `caches`.
Sub-packages: `training`, `evaluation`, `metrics`, `sweep`, `commands`. Run entry points (one library
call per command, over training and evaluation): `bench`, `checkpoint_run`, `score_run`, sharing
`finishing`. Cluster side (above `sweep`): `planning`, `submission`. `cli` and `commands` sit on top.
The README's "For developers" map says the same, with what each may import.
"""
