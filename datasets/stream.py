"""Streaming samples out of shard sets, from local folders or remote locations.

Locations (the shard set's folder; manifest.json is read from the same place):
- a local folder;
- http(s)://host/prefix: read with curl by WebDataset;
- s3://bucket/prefix: read through a pipe, `aws s3 cp s3://bucket/prefix/<shard> -`
  (set DECODIFF_S3_CMD to another command with {url}, e.g. "s5cmd cat {url}");
- pipe:COMMAND with {name} where the file name goes, e.g. "pipe:ssh data cat /shards/{name}".

Who reads what: every sample exactly once per epoch, the remainder included
--------------------------------------------------------------------------
Readers are (rank, loader worker) pairs. With split_by="shards" (the default) whole shards are
dealt out by their sample counts from the manifest: first to ranks, largest shard first,
each to the rank with the fewest samples so far (ties: the epoch's shard order, then the
lower rank); then, within a rank, to its loader workers the same way. Each shard is read by
one reader only, so no sample is read twice and none is lost when the shards do not divide
evenly over ranks x workers: the remainder shards go to the readers that have the fewest
samples. The ranks' sample counts then differ by at most the largest shard's count, and they
are known before the epoch starts (`EpochPlan`, `ShardStream.rank_counts()`): they depend
only on the shard counts and the number of ranks, not on the epoch or the loader workers.
A DDP trainer that needs the same number of steps on every rank takes
`plan.min_batches(batch_size)` steps per epoch: the surplus samples of the larger ranks are
then not used in that epoch, and which ones they are changes with the epoch's shuffle.
Write shards small enough (many per reader) to keep that surplus small.

With split_by="samples" every reader opens every shard and keeps every R-th sample (rank =
g mod world_size, worker = (g div world_size) mod workers, g the sample's position in the
epoch's shard order): counts differ by at most one sample, at the price of reading every shard
on every reader. It suits small sets, e.g. one category evaluated on many GPUs.

Training shuffles the shard order per epoch (the same permutation on every rank) and samples
through a buffer; evaluation keeps the manifest's order.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import random
import shlex
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from decodiff.datasets.imageio import DataError
from decodiff.datasets.manifest import MANIFEST, Manifest, verify_shards
from decodiff.datasets.shard_record import decode_record
from decodiff.datasets.tar_records import open_records

SplitBy = Literal["shards", "samples"]


# ---- locations ------------------------------------------------------------------------------


def is_url(location: str | Path) -> bool:
    loc = str(location)
    return "://" in loc or loc.startswith("pipe:")


def resolve(location: str | Path, name: str) -> str:
    """What WebDataset opens for file `name` of the shard set at `location`."""
    loc = str(location)
    if loc.startswith("pipe:"):
        if "{name}" not in loc:
            raise DataError(
                f"{loc}: a pipe: location needs {{name}} where the file name goes, "
                "e.g. pipe:ssh host cat /data/shards/{name}"
            )
        return loc.replace("{name}", shlex.quote(name))
    if loc.startswith("s3://"):
        url = loc.rstrip("/") + "/" + name
        cmd = os.environ.get("DECODIFF_S3_CMD", "aws s3 cp {url} -")
        if "{url}" not in cmd:
            raise DataError(f"DECODIFF_S3_CMD={cmd!r}: needs {{url}} where the s3:// URL goes")
        return "pipe:" + cmd.replace("{url}", shlex.quote(url))
    if "://" in loc:
        return loc.rstrip("/") + "/" + name
    return str(Path(loc) / name)


def load_manifest(location: str | Path) -> Manifest:
    """The manifest of a shard set, from a folder or a remote location (see the module doc)."""
    if not is_url(location):
        return Manifest.load(Path(location))
    url = resolve(location, MANIFEST)
    try:
        with wds.gopen(url, "rb") as f:
            raw = f.read()
        d = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise DataError(f"{url}: could not read the shard manifest ({exc})") from None
    return Manifest.from_json(d, url)


def check_shards(
    location: str | Path,
    manifest: Manifest,
    splits: Sequence[str] = ("train", "test"),
    categories: Sequence[str] | None = None,
    *,
    sha256: bool = False,
) -> None:
    """Before a run reads a local shard set: every shard it will read is there at the manifest's size
    (and, with `sha256`, has its digest); stops with one line naming the first shard that differs.
    Remote locations are checked as they are read (sample counts, see ShardStream)."""
    if is_url(location):
        return
    names = [n for split in splits for n in manifest.shard_names(split, list(categories) if categories else None)]
    problems = verify_shards(Path(location), manifest, sha256=sha256, names=names)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataError(problems[0] + more)


def shard_urls(
    location: str | Path, manifest: Manifest, split: str, categories: Sequence[str] | None = None
) -> list[str]:
    return [resolve(location, n) for n in manifest.shard_names(split, list(categories) if categories else None)]


def shard_counts(manifest: Manifest, split: str, categories: Sequence[str] | None = None) -> list[int]:
    """Sample counts of the shards `shard_urls` lists, in the same order."""
    cats = list(categories) if categories else None
    return [s.count for s in manifest.shards if s.split == split and (cats is None or s.category in cats)]


# ---- the epoch's plan -----------------------------------------------------------------------


def _deal(items: Sequence[int], weights: Sequence[int], bins: int) -> list[list[int]]:
    """Greedy balance: items (in tie order) largest first, each to the lightest bin (then lowest)."""
    heap = [(0, b) for b in range(bins)]
    out: list[list[int]] = [[] for _ in range(bins)]
    for i in sorted(items, key=lambda i: -weights[i]):  # stable: ties keep the given order
        load, b = heapq.heappop(heap)
        out[b].append(i)
        heapq.heappush(heap, (load + weights[i], b))
    return out


@dataclass(frozen=True)
class EpochPlan:
    """Which shards each (rank, worker) reads in one epoch and how many samples it yields."""

    world_size: int
    num_workers: int
    split_by: SplitBy
    order: tuple[int, ...]  # the epoch's shard order
    shards: tuple[tuple[tuple[int, ...], ...], ...]  # [rank][worker] -> shard indices, in read order
    counts: tuple[tuple[int, ...], ...]  # [rank][worker] -> samples

    def rank_counts(self) -> list[int]:
        return [sum(c) for c in self.counts]

    def batches(self, rank: int, batch_size: int, drop_last: bool = False) -> int:
        """Batches a DataLoader over this rank yields (each worker batches its own samples)."""
        f = (lambda n: n // batch_size) if drop_last else (lambda n: math.ceil(n / batch_size))
        return sum(f(n) for n in self.counts[rank])

    def min_batches(self, batch_size: int, drop_last: bool = False) -> int:
        """Steps every rank can take in this epoch (the smallest rank's batch count)."""
        return min(self.batches(r, batch_size, drop_last) for r in range(self.world_size))

    @property
    def total(self) -> int:
        return sum(self.rank_counts())


def plan_epoch(
    counts: Sequence[int],
    world_size: int = 1,
    num_workers: int = 1,
    *,
    order: Sequence[int] | None = None,
    split_by: SplitBy = "shards",
) -> EpochPlan:
    """Deal shards (with these sample counts) over ranks x workers; see the module doc."""
    if world_size < 1 or num_workers < 1:
        raise ValueError(f"world_size {world_size} and num_workers {num_workers} must be >= 1")
    n = len(counts)
    order = list(range(n)) if order is None else list(order)
    if sorted(order) != list(range(n)):
        raise ValueError("order must be a permutation of the shard indices")
    if split_by == "samples":
        total = sum(counts)
        per_rank = [(total - r + world_size - 1) // world_size for r in range(world_size)]
        cnt = tuple(
            tuple((per_rank[r] - w + num_workers - 1) // num_workers for w in range(num_workers))
            for r in range(world_size)
        )
        every = tuple(order)
        return EpochPlan(
            world_size,
            num_workers,
            split_by,
            tuple(order),
            tuple(tuple(every for _ in range(num_workers)) for _ in range(world_size)),
            cnt,
        )
    if split_by != "shards":
        raise ValueError(f"split_by {split_by!r}: expected 'shards' or 'samples'")
    pos = {s: i for i, s in enumerate(order)}
    shards, cnt = [], []
    for rank_items in _deal(order, counts, world_size):
        tie_order = sorted(rank_items, key=pos.__getitem__)
        per_worker = [sorted(w, key=pos.__getitem__) for w in _deal(tie_order, counts, num_workers)]
        shards.append(tuple(tuple(w) for w in per_worker))
        cnt.append(tuple(sum(counts[i] for i in w) for w in per_worker))
    return EpochPlan(world_size, num_workers, split_by, tuple(order), tuple(shards), tuple(cnt))


def assigned(
    urls: Sequence[str], rank: int, world_size: int, worker: int, num_workers: int, counts: Sequence[int] | None = None
) -> list[str]:
    """The shards one reader owns in manifest order (counts: samples per shard; default 1 each)."""
    plan = plan_epoch(list(counts) if counts is not None else [1] * len(urls), world_size, num_workers)
    return [urls[i] for i in plan.shards[rank][worker]]


# ---- the stream -----------------------------------------------------------------------------


class ShardStream(IterableDataset):
    """Decoded samples from a list of shard URLs, split across ranks and loader workers.

    `counts` (samples per shard, from the manifest) lets the split balance samples rather
    than shards and makes `rank_counts`/`epoch_plan` available; `ShardStream.from_manifest`
    fills it in.
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        counts: Sequence[int] | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        decode: Callable[[dict[str, Any]], dict[str, Any]] = decode_record,
        split_by: SplitBy = "shards",
    ) -> None:
        super().__init__()
        if not urls:
            raise DataError("no shards to read (empty split or category selection)")
        if counts is not None and len(counts) != len(urls):
            raise ValueError(f"{len(counts)} counts for {len(urls)} shards")
        if split_by == "samples" and counts is None:
            raise DataError("split_by='samples' needs the shards' sample counts (use ShardStream.from_manifest)")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.urls = list(urls)
        self.counts = list(counts) if counts is not None else None
        self.transform = transform
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.decode = decode
        self.split_by = split_by
        self.epoch = 0

    @classmethod
    def from_manifest(
        cls,
        location: str | Path,
        split: str,
        categories: Sequence[str] | None = None,
        *,
        manifest: Manifest | None = None,
        **kw: Any,
    ) -> ShardStream:
        """The stream of one split (all categories, or the given ones) of the shard set at `location`."""
        manifest = manifest or load_manifest(location)
        if categories:
            unknown = [c for c in categories if c not in manifest.categories]
            if unknown:
                raise DataError(f"{location}: unknown categories {unknown}; the shard set has {manifest.categories}")
        return cls(
            shard_urls(location, manifest, split, categories), counts=shard_counts(manifest, split, categories), **kw
        )

    def set_epoch(self, epoch: int) -> None:
        """Call before each epoch's iteration (loader workers copy the stream when they start, so a
        DataLoader with persistent_workers=True would not see the new epoch)."""
        self.epoch = epoch

    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.urls)))
        if self.shuffle_buffer:
            random.Random(f"{self.seed}-{epoch}").shuffle(order)  # the same permutation on every rank
        return order

    def epoch_plan(self, num_workers: int = 0, epoch: int | None = None) -> EpochPlan:
        """The plan of an epoch for a DataLoader with `num_workers` (0: read in the main process)."""
        weights = self.counts if self.counts is not None else [1] * len(self.urls)
        return plan_epoch(
            weights,
            self.world_size,
            max(1, num_workers),
            order=self._order(self.epoch if epoch is None else epoch),
            split_by=self.split_by,
        )

    def rank_counts(self) -> list[int]:
        """Samples each rank reads in an epoch (the same in every epoch, for any number of workers)."""
        if self.counts is None:
            raise DataError("the shards' sample counts are unknown (build the stream with ShardStream.from_manifest)")
        return self.epoch_plan().rank_counts()

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        plan = self.epoch_plan(workers)
        mine = plan.shards[self.rank][worker]
        records: Iterator[dict[str, Any]] = (rec for i in mine for rec in self._shard_records(i))
        if self.split_by == "samples":
            records = self._every_rth(records, worker, workers)
        samples: Iterator[dict[str, Any]] = (self.decode(r) for r in records)
        if self.shuffle_buffer:
            rng = random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}")
            samples = _buffer_shuffle(samples, self.shuffle_buffer, rng)
        for s in samples:
            yield self.transform(s) if self.transform else s

    def _shard_records(self, i: int) -> Iterator[dict[str, Any]]:
        """The records of shard i, checked against the manifest's sample count once it has been read
        to its end: a truncated or replaced shard stops the read instead of yielding a smaller set."""
        n = 0
        for rec in open_records(self.urls[i]):
            n += 1
            yield rec
        if self.counts is not None and n != self.counts[i]:
            raise DataError(
                f"{self.urls[i]}: {n} samples, the shard manifest says {self.counts[i]} (a truncated or "
                "replaced shard; shard the data again)"
            )

    def _every_rth(self, records: Iterator[dict[str, Any]], worker: int, workers: int) -> Iterator[dict[str, Any]]:
        for g, rec in enumerate(records):
            if g % self.world_size == self.rank and (g // self.world_size) % workers == worker:
                yield rec


def category_streams(
    location: str | Path,
    split: str,
    categories: Sequence[str] | None = None,
    *,
    manifest: Manifest | None = None,
    **kw: Any,
) -> dict[str, ShardStream]:
    """One stream per category (one-class runs, per-category evaluation), in manifest order."""
    manifest = manifest or load_manifest(location)
    cats = [c for c in (categories or manifest.categories) if manifest.shard_names(split, [c])]
    return {c: ShardStream.from_manifest(location, split, [c], manifest=manifest, **kw) for c in cats}


def _buffer_shuffle(items: Iterator[Any], size: int, rng: random.Random) -> Iterator[Any]:
    buf: list[Any] = []
    for item in items:
        buf.append(item)
        if len(buf) >= size:
            i = rng.randrange(len(buf))
            buf[i], buf[-1] = buf[-1], buf[i]
            yield buf.pop()
    rng.shuffle(buf)
    yield from buf


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, keep strings and metadata as lists."""
    out: dict[str, Any] = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else vals
    return out
