"""How long training runs and how the learning rate moves over it.

Length: `train.epochs` epochs, each as many optimizer steps as the rank with the most samples
needs (feed.py), cut short by `train.max_steps`. Learning rate, as multipliers of the
base rate (LambdaLR):
- `published`: linear warm-up over `warmup` epochs, then cosine over 1.5 x epochs, stepped once
  per epoch (so it never reaches the minimum), as in the authors' code;
- `cosine`: linear warm-up over `warmup` optimizer steps, then cosine to `min_lr` at the last
  step, stepped every optimizer step;
- `constant` (after the warm-up).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from decodiff.harness.config import TrainSection


def lr_lambda(kind: str, warmup: int, total: int, lr: float, min_lr: float) -> Callable[[int], float]:
    floor = min_lr / lr if lr > 0 else 0.0

    def warm(i: int) -> float | None:
        return (i + 1) / warmup if warmup and i < warmup else None

    if kind == "constant":
        return lambda i: warm(i) or 1.0
    if kind not in ("published", "cosine"):
        raise ValueError(f"unknown lr schedule {kind!r}")
    length = int(1.5 * total) if kind == "published" else total

    def f(i: int) -> float:
        w = warm(i)
        if w is not None:
            return w
        progress = min(1.0, (i - warmup) / max(1, length - warmup))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


@dataclass
class Plan:
    total: int  # optimizer steps of the whole run
    per_epoch: int  # steps of the first epoch (later ones may differ by a step when shards are uneven)
    epochs: int


def plan_steps(feed: Any, t: TrainSection) -> Plan:
    """The run's length from the shard counts (`feed.planned_steps(epoch)` for each epoch)."""
    first = feed.planned_steps(0)
    if t.max_steps is not None and t.max_steps <= first:
        return Plan(t.max_steps, first, 1)
    total = 0
    for epoch in range(t.epochs):
        total += feed.planned_steps(epoch) if epoch else first
        if t.max_steps is not None and total >= t.max_steps:
            return Plan(t.max_steps, first, epoch + 1)
    return Plan(total, first, t.epochs)


def make_scheduler(optimizer: torch.optim.Optimizer, t: TrainSection, plan: Plan) -> torch.optim.lr_scheduler.LambdaLR:
    per_epoch = t.lr_schedule == "published"
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(t.lr_schedule, t.warmup, t.epochs if per_epoch else plan.total, t.lr, t.min_lr)
    )
