"""The training samples of an epoch, cut into optimizer steps that every rank takes together.

Data split: the epoch's shards are dealt to ranks (and loader workers) by their sample counts
(`datasets.stream`, EpochPlan), so every sample is read by exactly one rank once per epoch.
Shards rarely divide evenly, so ranks may hold different numbers of samples (at most a
shard's worth). Nothing is dropped or repeated to even them out; instead, before each step
the ranks exchange (over the CPU control channel) how many samples each brings, and:
- every rank takes the same number of steps: the epoch ends when no rank has samples left;
  a rank that has run out contributes a zero-weight placeholder so that DDP's gradient
  all-reduce still happens on every rank (no hang);
- each rank's loss is the sum of its samples' losses x world / (samples in this step over
  all ranks), so DDP's average over ranks is exactly the mean over the step's samples, however
  they were spread;
- the same exchange carries the preemption flag, so all ranks stop at the same step.
The global batch is `train.batch_size` samples per step: B // world per rank (the first
B % world ranks one more), split into `train.grad_accum` micro-batches; only the epoch's last
steps are smaller. Accumulation never crosses an epoch.

Data position and exact resume: the stream of an epoch is a pure function of (seed, epoch,
rank, world, workers); image augmentation draws from an RNG seeded by (seed, epoch, sample
key). A resumed run replays the epoch's stream and skips the samples this rank had used.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from decodiff.datasets.imageio import DataError
from decodiff.datasets.shard_record import decode_record
from decodiff.datasets.stream import ShardStream, collate
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, preprocess_for
from decodiff.harness.training.distributed import all_sum
from decodiff.harness.training.latent_cache import ExactPick, decode_latent
from decodiff.models.vae import FrozenVAE


@dataclass
class Step:
    micro: list[dict[str, Any]]  # this rank's micro-batches (collated); empty when it has run out
    n_local: int  # samples this rank brings to the step
    n_global: int  # samples of the step over all ranks
    stop: bool = False  # some rank was asked to stop (preemption): save and exit instead
    keys: list[str] = field(default_factory=list)


def split_sizes(n: int, parts: int) -> list[int]:
    """n items in `parts` near-equal parts, larger first (some may be 0)."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


class _Augment:
    """Training pre-processing with an RNG per (seed, epoch, sample): independent of rank, worker
    and position, so a replayed epoch augments each image the same way."""

    def __init__(self, pre: Callable[..., dict[str, Any]], seed: int) -> None:
        self.pre, self.seed, self.epoch = pre, seed, 0

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        out = self.pre(sample, random.Random(f"{self.seed}-{self.epoch}-{sample['key']}"))
        return {"key": out["key"], "image": out["image"], "category": out["category"]}


class Throughput:
    """Samples per second over all ranks, from the end of the first step on (start-up excluded).
    On a GPU the clock is read after the queued work has finished (two syncs per run)."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.start: float | None = None
        self.cpu_start = 0.0
        self.samples = 0

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.time()

    def add(self, n_global: int) -> None:
        if self.start is None:
            self.start, self.cpu_start = self._now(), time.process_time()
        else:
            self.samples += n_global

    def rate(self) -> float:
        return self.samples / (self._now() - self.start) if self.start is not None and self.samples else 0.0

    def cpu_seconds(self) -> float:
        """CPU time this process spent in the timed steps (all its threads): a measure that
        other load on a shared machine does not inflate."""
        return time.process_time() - self.cpu_start if self.start is not None else 0.0


def _identity(x: Any) -> Any:
    return x


class TrainFeed:
    """Steps of an epoch for this rank, and the clean latents of a micro-batch."""

    def __init__(
        self,
        cfg: Config,
        data: PreparedData,
        vae: FrozenVAE,
        *,
        rank: int,
        world: int,
        device: torch.device,
        latent_cache: tuple[str, Any] | None = None,
    ) -> None:
        t = cfg.train
        if t.batch_size < world:
            raise DataError(f"train.batch_size={t.batch_size} is smaller than the number of processes ({world})")
        self.rank, self.world, self.device = rank, world, device
        self.workers = cfg.data.num_workers
        self.class_ids = data.class_ids
        self.vae = vae
        self.batch_size = t.batch_size
        self.share = split_sizes(t.batch_size, world)[rank]  # this rank's samples per full step
        self.accum = t.grad_accum
        self.augment: _Augment | None = None
        self.pick: ExactPick | None = None
        if latent_cache is not None:
            location, manifest = latent_cache
            names = manifest.shard_names("train", data.categories)
            urls = [str(Path(location) / n) for n in names]
            by_name = {s.name: s.count for s in manifest.shards}
            self.counts = [by_name[n] for n in names]
            self.pick = ExactPick(preprocess_for(cfg, True), cfg.run.seed) if t.cache_augment == "exact" else None
            self.stream = ShardStream(
                urls,
                counts=self.counts,
                decode=self.pick or decode_latent,
                shuffle_buffer=cfg.data.shuffle_buffer,
                seed=cfg.run.seed,
                rank=rank,
                world_size=world,
            )
        else:
            names = data.manifest.shard_names("train", data.categories)
            by_name = {s.name: s.count for s in data.manifest.shards}
            self.counts = [by_name[n] for n in names]
            self.augment = _Augment(preprocess_for(cfg, True), cfg.run.seed)
            self.stream = ShardStream(
                data.urls("train"),
                counts=self.counts,
                decode=decode_record,
                transform=self.augment,
                shuffle_buffer=cfg.data.shuffle_buffer,
                seed=cfg.run.seed,
                rank=rank,
                world_size=world,
            )
        self.latent_cache = latent_cache is not None

    # ---- planning ------------------------------------------------------------------------------
    def rank_counts(self, epoch: int) -> list[int]:
        """Samples each rank reads in `epoch` (the stream's plan, from the manifest's counts)."""
        return self.stream.epoch_plan(self.workers, epoch).rank_counts()

    def planned_steps(self, epoch: int) -> int:
        """Optimizer steps of an epoch: the rank with the most samples per step share sets it."""
        shares = split_sizes(self.batch_size, self.world)
        return max(math.ceil(n / s) for n, s in zip(self.rank_counts(epoch), shares))

    # ---- the epoch -----------------------------------------------------------------------------
    def steps(self, epoch: int, skip: int = 0, stop: Callable[[], bool] = lambda: False) -> Iterator[Step]:
        """This rank's steps of `epoch`, after skipping `skip` samples it used before a resume."""
        self.stream.set_epoch(epoch)
        if self.augment is not None:
            self.augment.epoch = epoch
        if self.pick is not None:
            self.pick.epoch = epoch
        loader = DataLoader(
            self.stream,
            batch_size=None,
            num_workers=self.workers,
            collate_fn=_identity,
            generator=torch.Generator().manual_seed(epoch),
        )  # never draws from the global RNG
        samples = iter(loader)
        for i in range(skip):
            if next(samples, None) is None:
                raise DataError(
                    f"resume: rank {self.rank} had used {skip} samples of epoch {epoch}, but the epoch "
                    f"has only {i} here (did the data or data.num_workers change?)"
                )
        while True:
            chunk = list(itertools.islice(samples, self.share))
            n_global, n_stop = all_sum([len(chunk), int(bool(stop()))])
            if n_stop:
                yield Step([], len(chunk), n_global, stop=True)
                return
            if n_global == 0:
                return
            micro = []
            start = 0
            for size in split_sizes(len(chunk), self.accum):
                if size:
                    micro.append(collate(chunk[start : start + size]))
                    start += size
            yield Step(micro, len(chunk), n_global, keys=[s["key"] for s in chunk])

    # ---- latents -------------------------------------------------------------------------------
    def latents(self, batch: dict[str, Any], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean training latents z0 (a sample of the VAE's latent distribution) and class ids."""
        ids = torch.tensor([self.class_ids[c] for c in batch["category"]]).to(self.device, non_blocking=True)
        if self.latent_cache:
            lat = batch["latent"]  # [B, K, 2, C, h, w]: K augmentation variants (1: picked already), (mean, std)
            b = lat.shape[0]
            pick = torch.randint(0, lat.shape[1], (b,), generator=generator)
            rows = torch.arange(b)
            mean, std = lat[rows, pick, 0], lat[rows, pick, 1]
            z0 = mean + std * torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
            return z0.to(self.device, non_blocking=True), ids
        return self.vae.encode(batch["image"].to(self.device, non_blocking=True), sample=True, generator=generator), ids

    def placeholder(self, latent_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A zero latent for a rank that has run out of samples; its loss is weighted by 0."""
        return torch.zeros(1, *latent_shape, device=self.device), torch.zeros(1, dtype=torch.long, device=self.device)
