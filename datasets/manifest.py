"""manifest.json of a shard set: what it holds and the checksums that make runs traceable, and
the check of the shards on disk against it."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from decodiff.datasets.files import read_json, sha256_file, write_json_atomic
from decodiff.datasets.imageio import DataError

FORMAT = "decodiff-shards/1"
MANIFEST = "manifest.json"


@dataclass
class ShardInfo:
    name: str
    split: str
    category: str
    count: int
    bytes: int
    sha256: str


@dataclass
class Manifest:
    dataset: str
    categories: list[str]
    shards: list[ShardInfo]
    counts: dict[str, dict[str, dict[str, Any]]]  # split -> category -> {normal, anomalous, defects{}}
    image_size: list[int] | None  # [H, W] when all images share it
    args: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    has_masks: bool = True
    image_sizes: dict[str, int] = field(default_factory=dict)  # "HxW" -> number of images
    format: str = FORMAT

    @property
    def checksum(self) -> str:
        """One digest over all shard digests: the data set's identity for caches and reports."""
        h = hashlib.sha256()
        for s in sorted(self.shards, key=lambda s: s.name):
            h.update(f"{s.name}:{s.sha256}\n".encode())
        return h.hexdigest()

    def shard_names(self, split: str, categories: list[str] | None = None) -> list[str]:
        return [s.name for s in self.shards if s.split == split and (categories is None or s.category in categories)]

    def count(self, split: str, categories: list[str] | None = None) -> int:
        return sum(
            s.count for s in self.shards if s.split == split and (categories is None or s.category in categories)
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["checksum"] = self.checksum
        return d

    def save(self, folder: Path) -> None:
        write_json_atomic(Path(folder) / MANIFEST, self.to_json())

    @classmethod
    def load(cls, folder: Path) -> Manifest:
        path = Path(folder) / MANIFEST
        missing = f"{path}: no shard manifest (run `decodiff data shard` first)"
        d = read_json(path, DataError, missing, f"{path}: not a valid shard manifest")
        return cls.from_json(d, str(path))

    @classmethod
    def from_json(cls, d: Any, where: str) -> Manifest:
        """A manifest from its parsed JSON; `where` names the file or URL in errors."""
        try:
            if not isinstance(d, dict):
                raise TypeError("not a JSON object")
            d = dict(d)
            d.pop("checksum", None)
            if d.get("format") != FORMAT:
                raise DataError(f"{where}: format {d.get('format')!r}, expected {FORMAT!r}")
            d["shards"] = [ShardInfo(**s) for s in d["shards"]]
            return cls(**d)
        except DataError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{where}: not a valid shard manifest ({exc})") from None


SHA256_DIFFERS = "sha256 differs from the manifest's"  # the shard is whole-sized: its samples can still be read


def shard_problem(folder: Path, shard: ShardInfo, *, sha256: bool = True) -> str | None:
    """What is wrong with one shard on disk against its manifest entry (None: nothing): missing,
    another size, another sha256 (`sha256=False`: a stat only). `data inspect` and the readers share it."""
    p = Path(folder) / shard.name
    if not p.is_file():
        return f"missing (listed in {MANIFEST})"
    size = p.stat().st_size
    if size != shard.bytes:
        return f"{size} bytes, the manifest says {shard.bytes} (truncated or replaced)"
    if sha256 and sha256_file(p) != shard.sha256:
        return SHA256_DIFFERS
    return None


def verify_shards(
    folder: Path, manifest: Manifest | None = None, *, sha256: bool = True, names: Sequence[str] | None = None
) -> list[str]:
    """Problems with the shards on disk against the manifest, one line each naming the file
    (`names`: these shards only)."""
    folder = Path(folder)
    manifest = manifest or Manifest.load(folder)
    wanted = set(names) if names is not None else None
    problems = []
    for s in manifest.shards:
        if wanted is not None and s.name not in wanted:
            continue
        what = shard_problem(folder, s, sha256=sha256)
        if what:
            problems.append(f"{folder / s.name}: {what}")
    return problems
