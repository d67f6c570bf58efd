"""Environment defaults every decodiff process sets before torch loads: nothing downloaded or
sent, and an OpenMP wait policy chosen for the machine it finds.

libgomp (torch's OpenMP runtime on Linux) lets a thread that runs out of work spin about 300,000
times before it sleeps. Alone on a machine that saves a wake-up (the demo's evaluation ran 10-20 %
faster spinning); with a second job on the same cores each job's spinning threads take the cores from
the other's threads that have work, and both crawl (2.7-5x slower; README "Speed on a shared machine",
benchmarks/thread_wait.py). So a command that runs models samples, as it starts, how busy the other processes keep the
cores, and where they keep at least half a core busy (or where it cannot tell), idle threads sleep
(OMP_WAIT_POLICY=PASSIVE). The policy is read once, when the runtime loads with `import torch`, so this
runs before that; a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins (GOMP_SPINCOUNT=300000 is
libgomp's unset default: spin; OMP_WAIT_POLICY=PASSIVE: always sleep).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from decodiff.harness.allocator import apply_allocator_policy

DEFAULTS = {
    "HF_HUB_OFFLINE": "1",  # nothing is downloaded at run time
    "MLFLOW_DISABLE_TELEMETRY": "true",  # nor sent
}
# what decides the OpenMP wait: forwarded to processes we start elsewhere (Ray workers)
THREAD_WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
CHOICE_VARIABLE = "DECODIFF_THREAD_WAIT"  # what was chosen and why, for the run's timings.json
SLEEP_CHOICE = "idle threads sleep (OMP_WAIT_POLICY=PASSIVE)"  # how a choice line that sleeps starts
SHARED_CORES = 0.5  # other processes' busy cores at start from which idle threads sleep
SAMPLE_SECONDS = 0.2


def set_process_defaults() -> None:
    """Set the defaults in os.environ (children inherit them); values already set are kept. Also
    the allocator's policy (harness.allocator, DECODIFF_ALLOCATOR)."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    apply_allocator_policy()


def cpu_jiffies(stat: str | None = None) -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot from /proc/stat's first line (None where
    there is none); steal counts as busy: another machine's work on our cores."""
    if stat is None:
        try:
            stat = Path("/proc/stat").read_text()
        except OSError:
            return None
    fields = stat.split("\n", 1)[0].split()
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal (guests are in user)
    return sum(v) - v[3] - v[4], sum(v)


def others_busy_cores(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many cores the other processes kept busy over `seconds` (None: not measurable here)."""
    before, ours_before = cpu_jiffies(), os.times()
    if before is None:
        return None
    time.sleep(seconds)
    after, ours_after = cpu_jiffies(), os.times()
    if after is None or after[1] <= before[1]:
        return None
    ours = (ours_after.user - ours_before.user + ours_after.system - ours_before.system) * os.sysconf("SC_CLK_TCK")
    busy = max(0.0, after[0] - before[0] - ours)
    return busy / (after[1] - before[1]) * (os.cpu_count() or 1)


def choose_thread_wait(others: float | None = None, *, measure: bool = True) -> str:
    """Set the OpenMP wait policy for this process and its children (before torch loads) and
    return one line saying what and why (also kept in DECODIFF_THREAD_WAIT). Several processes of
    one launched job on this machine (LOCAL_WORLD_SIZE > 1) share the cores whatever they do now;
    else `others` busy cores, sampled here."""
    given = {k: os.environ[k] for k in THREAD_WAIT_VARIABLES if k in os.environ}
    if given:
        choice = "as set: " + ", ".join(f"{k}={v}" for k, v in given.items())
        os.environ[CHOICE_VARIABLE] = choice
        return choice
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if local > 1:
        return _sleep(f"{local} processes of this job on this machine")
    if others is None and measure:
        others = others_busy_cores()
    cores = os.cpu_count() or 1
    if others is None or others >= SHARED_CORES:
        return _sleep("load unknown" if others is None else f"other processes kept {others:.1f} of {cores} cores busy")
    choice = f"idle threads spin (libgomp's default): the {cores} cores were free ({others:.1f} busy)"
    os.environ[CHOICE_VARIABLE] = choice
    return choice


def sleep_for_company(reason: str) -> str | None:
    """Make idle threads sleep in the processes started from now on (a sweep's trials several to a
    machine), unless the user chose a policy; the new choice line, None where nothing changed. For a
    process that chose before it knew what it would start: spinning stays right for itself."""
    if any(k in os.environ for k in THREAD_WAIT_VARIABLES):
        return None  # the user's choice, or ours already sleeps (the only variable we set)
    return _sleep(reason)


def _sleep(why: str) -> str:
    """The passive wait for this process and its children, and its choice line."""
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    choice = f"{SLEEP_CHOICE}: {why}"
    os.environ[CHOICE_VARIABLE] = choice
    return choice
