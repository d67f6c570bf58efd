"""Progress lines on stderr (stdout stays parseable): stage, count, rate and ETA, throttled so
that CI logs stay short, and a final line per stage."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def log(msg: str, stream: TextIO | None = None) -> None:
    print(f"[decodiff] {msg}", file=stream or sys.stderr, flush=True)


def _fmt_time(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """`with Progress("train", total=1000, unit="step") as p: p.update(1, loss=0.1)`."""

    def __init__(
        self,
        stage: str,
        total: int | None = None,
        unit: str = "it",
        every: float = 5.0,
        stream: TextIO | None = None,
        initial: int = 0,
    ):
        """`initial`: units done before (a resumed run counts on from there; the rate is of this run's)."""
        self.stage, self.total, self.unit, self.every = stage, total, unit, every
        self.stream = stream or sys.stderr
        self.initial = initial
        self.n = initial
        self.start = time.monotonic()
        self._last = 0.0
        self.extra: dict[str, float | str] = {}

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self._print(final=True)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def update(self, n: int = 1, **extra: float | str) -> None:
        self.n += n
        self.extra.update(extra)
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._print()

    def _print(self, final: bool = False) -> None:
        el = self.elapsed
        rate = (self.n - self.initial) / el if el > 0 else 0.0
        parts = [f"{self.stage}:"]
        parts.append(f"{self.n}/{self.total} {self.unit}" if self.total else f"{self.n} {self.unit}")
        parts.append(f"{rate:.1f} {self.unit}/s")
        if final:
            parts.append(f"done in {_fmt_time(el)}")
        elif self.total and rate > 0:
            parts.append(f"ETA {_fmt_time((self.total - self.n) / rate)}")
        for k, v in self.extra.items():
            parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
        log(" ".join(parts), self.stream)
