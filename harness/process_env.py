"""Environment defaults every decodiff process sets before torch loads: nothing downloaded or
sent, and idle OpenMP threads that sleep instead of spinning.

libgomp (torch's OpenMP runtime on Linux) lets a thread that runs out of work spin about 300,000
times before it sleeps. Alone on a machine that saves a wake-up; with a second job on the same cores
the spinning threads of each job take the cores from the other's threads that have work, and both
crawl (README "Speed: a shared machine": measured by benchmarks/thread_wait.py). The policy is read
once, when the runtime loads with `import torch`, so it is set here, before that; a user's own
OMP_WAIT_POLICY or GOMP_SPINCOUNT wins (GOMP_SPINCOUNT=300000 is libgomp's unset default).
"""

from __future__ import annotations

import os

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",  # nothing is downloaded at run time
    "MLFLOW_DISABLE_TELEMETRY": "true",  # nor sent
}
WAIT_POLICY = "PASSIVE"
# what decides the OpenMP wait: forwarded to processes we start elsewhere (Ray workers)
THREAD_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def set_process_defaults() -> None:
    """Set the defaults in os.environ (children inherit them); values already set are kept."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not any(k in os.environ for k in THREAD_WAIT_VARIABLES):
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
