"""Sweeps: grids of configs x data sets x seeds, run as Ray Tune trials, and their report.

- `spec`: sweep files read and checked before anything starts;
- `run`: `plan_sweep` (validated, no side effects) and `run_sweep`;
- `cost`: what a sweep will cost before it runs; `trial`: what runs inside a Ray worker;
- `ray_tune`: the local or remote Ray and one Tune run per phase; `report`: the combined tables.

May import: `decodiff.harness.bench`, `training`, `evaluation`, `metrics` and the run-level
modules; never `commands`.
"""
