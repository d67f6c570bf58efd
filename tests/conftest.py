"""Test-wide settings: offline, quiet, and no writes outside the test's own folders."""

import os

from decodiff.harness.process_env import set_process_defaults

set_process_defaults()  # as every `decodiff` process: offline, no telemetry
# the suite runs servers, Ray and several processes at once on few cores: idle OpenMP threads sleep
# (tests/harness/test_process_env.py checks the choice a `decodiff` command makes by itself)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
