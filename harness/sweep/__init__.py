"""Sweeps: grids of configs x data sets x seeds, run as Ray Tune trials, and their report.

- `spec`: sweep files read and checked before anything starts, `plan_sweep` (validated, no side effects);
- `run`: `run_sweep`, the driver;
- `cost`: what a sweep will cost before it runs; `trial`: what runs inside a Ray worker;
- `ray_tune`: the local or remote Ray and one Tune run per phase; `report`: the combined tables.

May import: the run entry points (`finishing`), `training`, `evaluation`, `metrics`, the run-level
modules, `decodiff.jobs` (the cost model); never `commands`, `planning` or `submission`.
"""
