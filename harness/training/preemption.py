"""Cluster preemption: SIGTERM or SIGUSR1 asks a training run to save a checkpoint at the next
step boundary and exit with PREEMPTED_EXIT, a code job scripts can requeue on.

SLURM sends SIGTERM before killing a preempted job (and SIGUSR1 ahead of the time limit with
`#SBATCH --signal=USR1@120`); `accelerate launch`/torchrun forwards SIGTERM to its workers. The
ranks agree on stopping through the per-step exchange (harness/training/feed.py), so every rank
stops at the same step and the checkpoint is whole. Under `accelerate launch` the launcher
itself exits 1 when a worker exits non-zero; the checkpoint folder then says why
(`train_state/latest.json`: "reason": "preempted"), and where the job script names a file in
DECODIFF_PREEMPTED_FILE, that file is written: the script requeues on either.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

PREEMPTED_EXIT = 75  # EX_TEMPFAIL: "try again later"
SIGNALS = ("SIGTERM", "SIGUSR1")
FLAG_ENV = "DECODIFF_PREEMPTED_FILE"


def mark_preempted(reason: str) -> None:
    """Tell the job script that the run checkpointed and wants to be requeued, through a file:
    a launcher between them (accelerate launch, torchrun) turns the exit code 75 into 1."""
    path = os.environ.get(FLAG_ENV)
    if not path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(reason + "\n")
    except OSError as e:  # the checkpoint is saved; exit 75 must not become a crash
        print(f"[decodiff] warning: could not write {FLAG_ENV}={path}: {e}", file=sys.stderr, flush=True)


class Preempted(SystemExit):
    """Raised after the checkpoint is written; exits the process with PREEMPTED_EXIT."""

    def __init__(self, signal_name: str, step: int, checkpoint: str) -> None:
        super().__init__(PREEMPTED_EXIT)
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint

    def __str__(self) -> str:
        return f"preempted by {self.signal_name} at step {self.step}; checkpoint {self.checkpoint}"


class PreemptionWatch:
    """`with PreemptionWatch() as watch: ... if watch.requested: save and raise Preempted`.

    Installs handlers only in the main thread (Python allows no other); restores the previous
    handlers on exit.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._old: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> PreemptionWatch:
        if threading.current_thread() is threading.main_thread():
            for name in SIGNALS:
                sig = getattr(signal, name, None)
                if sig is not None:
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)  # type: ignore[arg-type]
        self._old.clear()
