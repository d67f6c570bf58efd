"""Test-wide settings: offline, quiet, and no writes outside the test's own folders."""

import os

from decodiff.harness.process_env import set_process_defaults

set_process_defaults()  # as every `decodiff` process: offline, no telemetry, sleeping idle OpenMP threads
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
