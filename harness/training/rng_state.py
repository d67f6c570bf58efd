"""The random state of one process (Python, numpy, torch CPU and CUDA, and the training
generator), as tensors plus JSON: what an exact resume restores on every rank."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) of this process's random state; nothing needs pickling."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {
        "torch": torch.get_rng_state(),
        "generator": generator.get_state(),
        "numpy_keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state()
    version, state, gauss = random.getstate()
    meta = {"numpy": [name, int(pos), int(has_gauss), float(cached)], "python": [version, list(state), gauss]}
    return tensors, meta


def restore(generator: torch.Generator, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Put a captured state back (raises KeyError/ValueError on a malformed one)."""
    torch.set_rng_state(tensors["torch"].to(torch.uint8))
    generator.set_state(tensors["generator"].to(torch.uint8))
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"].to(torch.uint8))
    name, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state(
        (name, tensors["numpy_keys"].numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached))
    )
    version, state, gauss = meta["python"]
    random.setstate((int(version), tuple(int(x) for x in state), gauss))
