"""Best and second best, as the paper marks them: ranked on the value as displayed (percent, one
decimal), so that two numbers that print the same share their rank; missing values take none."""

from __future__ import annotations

import math
from collections.abc import Sequence

BEST, SECOND = 1, 2


def displayed(value: float | None, digits: int = 1) -> float | None:
    """The number a reader sees: percent rounded to `digits` (None for a missing value)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(100.0 * float(value), digits)


def ranks(values: Sequence[float | None], digits: int = 1, higher_is_better: bool = True) -> list[int | None]:
    """1 for the best displayed value(s), 2 for the next distinct one, None otherwise. With fewer
    than two values present nothing is ranked (a lone number is not "best" of anything)."""
    shown = [displayed(v, digits) for v in values]
    distinct = sorted({v for v in shown if v is not None}, reverse=higher_is_better)
    if sum(v is not None for v in shown) < 2:
        return [None] * len(shown)
    order = {v: i + 1 for i, v in enumerate(distinct[:2])}
    return [order.get(v) if v is not None else None for v in shown]
