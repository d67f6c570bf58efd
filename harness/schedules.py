"""Learning-rate schedules as multipliers of the base rate (for LambdaLR)."""
from __future__ import annotations

import math
from collections.abc import Callable


def lr_lambda(kind: str, warmup: int, total: int, lr: float, min_lr: float) -> Callable[[int], float]:
    """`published`: linear warm-up then cosine over 1.5 x total, stepped per epoch (so it never
    reaches the minimum, as in the authors' code); `cosine`: warm-up then cosine to `min_lr`
    over `total` (per step); `constant`."""
    floor = min_lr / lr if lr > 0 else 0.0

    def warm(i: int) -> float | None:
        return (i + 1) / warmup if warmup and i < warmup else None

    if kind == "constant":
        return lambda i: warm(i) or 1.0
    length = int(1.5 * total) if kind == "published" else total
    if kind not in ("published", "cosine"):
        raise ValueError(f"unknown lr schedule {kind!r}")

    def f(i: int) -> float:
        w = warm(i)
        if w is not None:
            return w
        progress = min(1.0, (i - warmup) / max(1, length - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f
