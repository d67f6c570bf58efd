"""Scoring anomaly maps produced by any method with the harness's metrics (issue 4, item 6).

The library side of `decodiff score`: maps are read by sample key (the image's path relative to
the data set root, without extension: shared/DESIGN.md), matched to the ground truth of the
test split, optionally resized to the mask size, and streamed into the same `MetricSuite` a
DeCo-Diff run uses, so the long table (and the reports made from it) is the same.

Maps on disk, either
- one `.npz` holding `keys` (N strings) and `maps` (N x H x W), optionally `scores` (N image
  scores; else the image score is the map's maximum) -- what `evaluate` saves as maps.npz; or
- a folder with one `.npy` or `.npz` per image at `<key>.npy` / `<key>.npz` (an `.npz` holds
  `map`, or its only array, and optionally `score`).
Every test sample must have a map (else an error naming the missing samples); maps of samples
outside the selected truth are ignored and counted. Shape mismatches (without `resize`), NaN
and inf are errors naming the sample.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decodiff.datasets.imageio import DataError
from decodiff.harness.metrics import MetricSuite
from decodiff.harness.metrics.labels import image_label


@dataclass
class TruthSample:
    """One test image's ground truth: mask None where the data set has none for it."""

    key: str
    category: str
    label: int
    mask: np.ndarray | None
    defect: str = ""


@dataclass
class ScoreResult:
    records: list[dict[str, Any]]  # the long table (results contract)
    samples: list[dict[str, Any]]  # per image: key, category, defect, label, score
    unused_maps: int = 0  # maps whose key is not among the truth samples
    notes: list[str] = field(default_factory=list)


class MapStore:
    """Anomaly maps by sample key, read lazily from one .npz or a folder of per-image files."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._files: dict[str, Path] = {}
        self._maps: np.ndarray | None = None
        self._scores: np.ndarray | None = None
        self._index: dict[str, int] = {}
        if self.path.is_file():
            if self.path.suffix != ".npz":
                raise DataError(f"{self.path}: maps must be one .npz (keys + maps) or a folder of .npy/.npz files")
            with _readable(self.path), np.load(self.path, allow_pickle=False) as z:
                if "keys" not in z or "maps" not in z:
                    raise DataError(f"{self.path}: a maps .npz needs arrays 'keys' and 'maps' (has {sorted(z.files)})")
                keys = [str(k) for k in z["keys"]]
                self._maps = z["maps"]
                self._scores = z["scores"] if "scores" in z else None
            if self._maps.ndim != 3 or self._maps.shape[0] != len(keys):
                raise DataError(
                    f"{self.path}: 'maps' must be N x H x W for the {len(keys)} keys, got {self._maps.shape}"
                )
            if self._scores is not None and self._scores.shape != (len(keys),):
                raise DataError(f"{self.path}: 'scores' must hold one value per key, got shape {self._scores.shape}")
            self._index = {k: i for i, k in enumerate(keys)}
            if len(self._index) != len(keys):
                raise DataError(f"{self.path}: duplicate keys in 'keys'")
        elif self.path.is_dir():
            for f in sorted(self.path.rglob("*")):
                if f.suffix in (".npy", ".npz") and f.is_file():
                    key = f.relative_to(self.path).with_suffix("").as_posix()
                    if key in self._files:
                        raise DataError(
                            f"{self.path}: two map files for sample {key!r} ({self._files[key].name}, {f.name})"
                        )
                    self._files[key] = f
            if not self._files:
                raise DataError(f"{self.path}: no .npy/.npz map files in this folder")
        else:
            raise DataError(f"{self.path}: maps not found")

    def keys(self) -> set[str]:
        return set(self._index) if self._maps is not None else set(self._files)

    def get(self, key: str) -> tuple[np.ndarray, float | None]:
        """(map as float32 H x W, the file's image score or None)."""
        if self._maps is not None:
            i = self._index[key]
            m = self._maps[i]
            score = None if self._scores is None else float(self._scores[i])
        else:
            f = self._files[key]
            score = None
            with _readable(f):
                if f.suffix == ".npy":
                    m = np.load(f, allow_pickle=False)
                else:
                    with np.load(f, allow_pickle=False) as z:
                        arrays = [n for n in z.files if n != "score"]
                        if "map" not in z and len(arrays) != 1:
                            raise DataError(
                                f"{f}: an .npz map needs an array 'map' (or exactly one array), has {z.files}"
                            )
                        m = z["map"] if "map" in z else z[arrays[0]]
                        score = float(z["score"]) if "score" in z else None
        m = np.asarray(m)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.ndim != 2:
            raise DataError(f"sample {key!r}: an anomaly map must be H x W, got shape {m.shape}")
        if not np.issubdtype(m.dtype, np.number):
            raise DataError(f"sample {key!r}: anomaly map of dtype {m.dtype} is not numeric")
        m = m.astype(np.float32) if m.dtype == np.float16 or not np.issubdtype(m.dtype, np.floating) else m
        if not np.isfinite(m).all():
            raise DataError(f"sample {key!r}: the anomaly map has NaN or inf values")
        return m, score


@contextmanager
def _readable(path: Path) -> Iterator[None]:
    """A file NumPy cannot read (not .npy/.npz, or one that needs pickle) as one DataError naming it."""
    try:
        yield
    except DataError:
        raise
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable NumPy {path.suffix} of plain arrays ({exc})") from None


def resize_map(m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize (torch's interpolate, align_corners=False) to `shape`."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(m, dtype=np.float32))[None, None]
    return F.interpolate(t, size=shape, mode="bilinear", align_corners=False)[0, 0].numpy()


def truth_from_batches(batches: Iterable[dict[str, Any]], label_rule: str = "metadata") -> Iterator[TruthSample]:
    """TruthSamples from test-loader batches (key, category, label, mask, has_mask, defect);
    `label_rule`: metrics.image_label (metrics/labels.py)."""
    for b in batches:
        for i, key in enumerate(b["key"]):
            has = bool(b["has_mask"][i])
            mask = np.asarray(b["mask"][i].numpy() if hasattr(b["mask"][i], "numpy") else b["mask"][i], dtype=bool)
            label = image_label(label_rule, int(b["label"][i]), mask if has else None)
            yield TruthSample(
                key=key,
                category=b["category"][i],
                label=label,
                mask=mask if has else None,
                defect=b.get("defect", [""] * len(b["key"]))[i],
            )


def score_maps(
    maps: str | Path | MapStore,
    truth: Iterable[TruthSample],
    dataset: str,
    *,
    resize: bool = False,
    image_size: tuple[int, int] | None = None,
    aupro_protocol: str = "mvtec",
    fpr_limit: float = 0.3,
    device: str = "cpu",
) -> ScoreResult:
    """The metrics of `maps` against `truth` (streamed: one map in memory at a time).

    `resize`: maps whose shape differs from the sample's mask (or `image_size` where a sample
    has no mask) are resized bilinearly to it; without it a mismatch is an error."""
    store = maps if isinstance(maps, MapStore) else MapStore(maps)
    available = store.keys()
    suite = MetricSuite(dataset, aupro_protocol=aupro_protocol, fpr_limit=fpr_limit, device=device)
    samples: list[dict[str, Any]] = []
    for t in truth:  # streamed: one map and one mask at a time
        if t.key not in available:
            raise DataError(
                f"no anomaly map for test sample {t.key!r} in {store.path} ({len(available)} maps; a map's "
                "key is its image's path relative to the data set root, without extension)"
            )
        m, score = store.get(t.key)
        target = t.mask.shape if t.mask is not None else image_size
        if target is not None and m.shape != tuple(target):
            if not resize:
                raise DataError(
                    f"sample {t.key!r}: anomaly map is {m.shape[0]}x{m.shape[1]} but its "
                    f"{'mask' if t.mask is not None else 'image'} is {target[0]}x{target[1]} "
                    "(pass --resize to score it anyway)"
                )
            m = resize_map(m, tuple(target))
        s = float(m.max()) if score is None else score
        suite.update(
            t.category,
            np.array([s]),
            np.array([t.label]),
            m[None],
            None if t.mask is None else t.mask[None],
            keys=[t.key],
        )
        samples.append({"key": t.key, "category": t.category, "defect": t.defect, "label": t.label, "score": s})
    unused = len(available) - len(samples)
    notes = [f"{unused} maps have no test sample in the selected truth and were not scored"] if unused else []
    return ScoreResult(suite.compute(), samples, unused, notes)
