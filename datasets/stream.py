"""Streaming samples out of shard sets (local folders or URLs WebDataset can open).

Each shard is read by exactly one reader per epoch: shards are dealt round-robin over
(rank, loader worker) pairs. Training shuffles shard order per epoch and samples through a
buffer; evaluation keeps the manifest's order.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from decodiff.datasets.imageio import DataError
from decodiff.datasets.manifest import MANIFEST, Manifest
from decodiff.datasets.shards import decode_record


def is_url(location: str) -> bool:
    return "://" in location or location.startswith("pipe:")


def load_manifest(location: str | Path) -> Manifest:
    """The manifest of a shard set, from a folder or a URL prefix (http(s)://, pipe:...)."""
    loc = str(location)
    if not is_url(loc):
        return Manifest.load(Path(loc))
    with wds.gopen(_join(loc, MANIFEST), "rb") as f:
        d = json.loads(f.read())
    d.pop("checksum", None)
    from decodiff.datasets.manifest import ShardInfo

    d["shards"] = [ShardInfo(**s) for s in d["shards"]]
    return Manifest(**d)


def _join(base: str, name: str) -> str:
    if base.startswith("pipe:"):
        raise DataError(f"{base}: pipe: locations name single shards; give a folder or http(s)/s3 prefix")
    return base.rstrip("/") + "/" + name


def shard_urls(location: str | Path, manifest: Manifest, split: str, categories: Sequence[str] | None = None) -> list[str]:
    names = manifest.shard_names(split, list(categories) if categories else None)
    loc = str(location)
    return [_join(loc, n) if is_url(loc) else str(Path(loc) / n) for n in names]


def assigned(urls: Sequence[str], rank: int, world_size: int, worker: int, num_workers: int) -> list[str]:
    """The shards one reader owns: every reader a disjoint share, none left out.

    When shards do not divide evenly, the first readers get one shard more; a training
    loop that needs equal step counts per rank balances that itself.
    """
    readers = world_size * num_workers
    me = rank * num_workers + worker
    return list(urls[me::readers])


class ShardStream(IterableDataset):
    """Decoded samples from a list of shard URLs, split across ranks and loader workers."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        shuffle_buffer: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        decode: Callable[[dict[str, Any]], dict[str, Any]] = decode_record,
    ) -> None:
        super().__init__()
        if not urls:
            raise DataError("no shards to read (empty split or category selection)")
        self.urls = list(urls)
        self.transform = transform
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.decode = decode
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        urls = list(self.urls)
        rng = random.Random(f"{self.seed}-{self.epoch}")
        if self.shuffle_buffer:
            rng.shuffle(urls)  # the same permutation on every rank: the split stays disjoint
        mine = assigned(urls, self.rank, self.world_size, worker, workers)
        records = wds.tarfile_to_samples()(iter([{"url": u} for u in mine]))
        samples: Iterator[dict[str, Any]] = (self.decode(r) for r in records)
        if self.shuffle_buffer:
            samples = _buffer_shuffle(samples, self.shuffle_buffer, random.Random(f"{self.seed}-{self.epoch}-{self.rank}-{worker}"))
        for s in samples:
            yield self.transform(s) if self.transform else s


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
