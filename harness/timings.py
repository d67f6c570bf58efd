"""Where a run's time went: wall and CPU seconds per phase (data, VAE, latent cache, training,
evaluation, report), written as `timings.json` in the run folder and logged as one line, so
that a slow run says which phase was slow. CPU seconds (all threads of this process) are
what other load on a shared machine inflates least."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from decodiff.datasets.files import write_json_atomic
from decodiff.harness.allocator import allocator_line
from decodiff.harness.process_env import CHOICE_VARIABLE


class Timings:
    """Phases in the order they ran; `rates` holds throughputs (steps/s, images/s)."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self.rates: dict[str, float] = {}
        self.notes: dict[str, Any] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - wall, time.process_time() - cpu)

    def add(self, name: str, wall: float, cpu: float = 0.0) -> None:
        p = self.phases.setdefault(name, {"seconds": 0.0, "cpu_seconds": 0.0})
        p["seconds"] = round(p["seconds"] + max(wall, 0.0), 2)
        p["cpu_seconds"] = round(p["cpu_seconds"] + max(cpu, 0.0), 2)

    def split(self, name: str, part: str, wall: float, cpu: float = 0.0) -> None:
        """Move `wall`/`cpu` seconds of phase `name` into phase `part` (e.g. the latent cache,
        built inside the training call), keeping the total."""
        p = self.phases.get(name)
        if p is None or wall <= 0:
            return
        wall, cpu = min(wall, p["seconds"]), min(cpu, p["cpu_seconds"])
        p["seconds"], p["cpu_seconds"] = round(p["seconds"] - wall, 2), round(p["cpu_seconds"] - cpu, 2)
        self.add(part, wall, cpu)

    def to_dict(self) -> dict[str, Any]:
        total = sum(p["seconds"] for p in self.phases.values())
        wait = os.environ.get(CHOICE_VARIABLE)  # the OpenMP wait policy this process chose as it started
        extra = {"thread_wait": wait} if wait else {}
        extra["allocator"] = allocator_line()  # glibc's allocator policy (harness.allocator)
        return {"phases": self.phases, "total_seconds": round(total, 2), "rates": self.rates, **extra, **self.notes}

    def line(self) -> str:
        parts = [f"{n} {p['seconds']:.1f}s" for n, p in self.phases.items()]
        rates = [f"{k} {v:.3g}" for k, v in self.rates.items()]
        return ", ".join(parts) + (f" ({', '.join(rates)})" if rates else "")

    def write(self, run_dir: Path) -> Path:
        path = Path(run_dir) / "timings.json"
        write_json_atomic(path, self.to_dict())
        return path
