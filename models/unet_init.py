"""Putting weights from elsewhere into our UNet, checked tensor by tensor: what loaded, what is
missing, what has another shape, what in the file fits nothing. Nothing partial is silent.

The class table is matched per category: by name where the source names its rows (a checkpoint
of ours), else by position (row i -> our i-th category). Categories without a row keep the
row the model was built with (its own initialisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

CLASS_KEY = "class_tokens.weight"
SHOWN = 10  # names per list in the one-line message (all of them are in the report)


@dataclass
class LoadReport:
    source: str  # what was read (a path) and its format, for messages
    total: int  # tensors of our model
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # ours, with nothing in the file
    mismatched: list[str] = field(default_factory=list)  # "ours (from the file's name): file (..) vs model (..)"
    unused: list[str] = field(default_factory=list)  # the file's, fitting none of ours
    ignored: int = 0  # tensors of other components (VAE, EMA copy), left out on purpose
    class_rows: dict[str, int | None] = field(default_factory=dict)  # category -> source row (None: new row)
    class_rows_in_file: int = 0

    @property
    def full(self) -> bool:
        return not (self.missing or self.mismatched or self.unused)

    def counts(self) -> dict[str, int]:
        return {
            "tensors": self.total,
            "loaded": len(self.loaded),
            "missing": len(self.missing),
            "mismatched": len(self.mismatched),
            "unused": len(self.unused),
            "ignored": self.ignored,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            **self.counts(),
            "missing_names": self.missing,
            "mismatched_names": self.mismatched,
            "unused_names": self.unused,
            "class_rows": self.class_rows,
            "class_rows_in_file": self.class_rows_in_file,
        }

    def rows_line(self) -> str:
        if not self.class_rows:
            return "no class table"
        pairs = [f"{c}<-row {r}" if r is not None else f"{c}<-new row" for c, r in self.class_rows.items()]
        return f"class table ({self.class_rows_in_file} rows in the file): " + ", ".join(pairs)

    def line(self) -> str:
        """One line: the counts, then the names of what did not load."""
        parts = [f"{self.source}: {len(self.loaded)} of {self.total} tensors loaded"]
        for label, names in (
            ("missing", self.missing),
            ("shape mismatch", self.mismatched),
            ("unused in the file", self.unused),
        ):
            if names:
                more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
                parts.append(f"{label} ({len(names)}): {', '.join(names[:SHOWN])}{more}")
        if self.ignored:
            parts.append(f"{self.ignored} tensors of other components ignored")
        return "; ".join(parts)


@dataclass
class WeightsPlan:
    """What `apply_weights` copies: tensors under our names, the class table and its rows."""

    tensors: dict[str, torch.Tensor]
    report: LoadReport
    class_table: torch.Tensor | None = None


def class_rows(categories: list[str], rows_in_file: int, names: list[str] | None) -> dict[str, int | None]:
    if names is not None:
        return {c: names.index(c) if c in names else None for c in categories}
    return {c: i if i < rows_in_file else None for i, c in enumerate(categories)}


def match_weights(
    own: dict[str, torch.Tensor],
    tensors: dict[str, torch.Tensor],
    *,
    source: str,
    origin: dict[str, str] | None = None,
    unused: list[str] = (),
    ignored: int = 0,
    class_table: torch.Tensor | None = None,
    class_names: list[str] | None = None,
    categories: list[str] = (),
) -> WeightsPlan:
    """Match file tensors (already under our names; `origin` gives the file's name of each) to
    our model's state `own` (shapes only are read: a meta-device model will do). `categories`
    label our class-table rows; `class_names` the file's, where it names them."""
    origin = origin or {}
    rep = LoadReport(source=source, total=len(own), unused=list(unused), ignored=ignored)
    take: dict[str, torch.Tensor] = {}
    for k, mine in own.items():
        if k == CLASS_KEY:
            continue
        v = tensors.get(k)
        if v is None:
            rep.missing.append(k)
        elif tuple(v.shape) != tuple(mine.shape):
            named = f"{k} (file: {origin[k]})" if origin.get(k, k) != k else k
            rep.mismatched.append(f"{named}: file {tuple(v.shape)} vs model {tuple(mine.shape)}")
        else:
            take[k] = v
            rep.loaded.append(k)
    rep.unused += sorted(origin.get(k, k) for k in tensors if k not in own)
    table = None
    if CLASS_KEY in own:
        mine = own[CLASS_KEY]
        if class_table is None:
            rep.missing.append(CLASS_KEY)
        elif class_table.shape[1:] != mine.shape[1:]:
            rep.mismatched.append(
                f"{CLASS_KEY}: file {tuple(class_table.shape)} vs model {tuple(mine.shape)} (token width differs)"
            )
        else:
            rows = mine.shape[0]
            labels = list(categories) if len(categories) == rows else [f"row {i}" for i in range(rows)]
            rep.class_rows = class_rows(labels, int(class_table.shape[0]), class_names)
            rep.class_rows_in_file = int(class_table.shape[0])
            table = class_table
            rep.loaded.append(CLASS_KEY)
    return WeightsPlan(take, rep, table)


@torch.no_grad()
def apply_weights(model: nn.Module, plan: WeightsPlan) -> None:
    """Copy in place (parameters keep their identity: an optimizer built before still holds them)."""
    own = model.state_dict()
    for k, v in plan.tensors.items():
        own[k].copy_(v.to(own[k].dtype))
    if plan.class_table is not None:
        for i, row in enumerate(plan.report.class_rows.values()):
            if row is not None:
                own[CLASS_KEY][i].copy_(plan.class_table[row].to(own[CLASS_KEY].dtype))
