"""Getting a config's data ready: the demo set generated, native layouts sharded into the
cache, and loaders over the shards for training and evaluation."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from decodiff.datasets.demo import generate_demo
from decodiff.datasets.files import mark_used
from decodiff.datasets.imageio import DataError
from decodiff.datasets.locks import FileLock
from decodiff.datasets.manifest import Manifest
from decodiff.datasets.shards import shard_dataset
from decodiff.datasets.stream import ShardStream, check_shards, collate, load_manifest, shard_counts, shard_urls
from decodiff.datasets.transforms import Preprocess
from decodiff.harness.config import Config, ConfigError
from decodiff.harness.progress import Progress, log


@dataclass
class PreparedData:
    location: str  # shard set folder or URL prefix
    manifest: Manifest
    categories: list[str]  # selected categories, in class-id order
    source: str  # where the data came from (for the report)

    @property
    def class_ids(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.categories)}

    def urls(self, split: str) -> list[str]:
        return shard_urls(self.location, self.manifest, split, self.categories)

    def counts(self, split: str) -> list[int]:
        """Samples per shard of `urls(split)`: lets streams balance ranks by samples, not shards."""
        return shard_counts(self.manifest, split, self.categories)


def preprocess_for(cfg: Config, train: bool) -> Preprocess:
    d, t = cfg.data, cfg.train
    return Preprocess(
        resize=d.resize,
        crop=d.crop,
        translate=t.translate if train else 0,
        rotate180=t.rotate180 if train else False,
    )


def image_size(cfg: Config, manifest: Manifest) -> int:
    if cfg.data.crop:
        return cfg.data.crop
    if cfg.data.resize:
        return cfg.data.resize
    if manifest.image_size and manifest.image_size[0] == manifest.image_size[1]:
        return manifest.image_size[0]
    raise DataError("images differ in size or are not square: set data.resize (and data.crop)")


def prepare_data(cfg: Config) -> PreparedData:
    """Shards for the config, made (once, cached) where only a native layout is given."""
    d = cfg.data
    cache = Path(cfg.run.cache_dir)
    if d.shards:
        location = d.shards
        source = f"shards {location}"
        mark_used(location, cache)  # shards of the cache given by path (a sweep's trials, a validation split)
    else:
        if d.dataset == "demo":
            params = d.demo.model_dump()
            tag = hashlib.sha256(repr(sorted(params.items())).encode()).hexdigest()[:10]
            root = Path(d.root) if d.root else cache / f"demo-{tag}"
            with FileLock(lock_path(root), what=f"demo data set {root}"):  # another run may be making it
                if not (root / "demo.json").is_file():
                    log(f"generating the demo data set in {root}")
                generate_demo(
                    root,
                    size=d.demo.size,
                    n_train=d.demo.n_train,
                    n_test_good=d.demo.n_test_good,
                    n_test_per_defect=d.demo.n_test_per_defect,
                    categories=d.demo.categories,
                    seed=0,
                )
            if not d.root:  # the cache's demo set, not a user's folder
                mark_used(root)
        else:
            if not d.root:
                raise DataError(
                    f"data.root is not set: give the {d.dataset} folder (data.root=DIR) or shards (data.shards=DIR)"
                )
            root = Path(d.root)
            if not root.is_dir():
                raise DataError(f"{root}: data folder not found (data.root)")
        options = dict(d.options)
        if "split_csv" in options:  # a file relative to the working folder, not to root
            options["split_csv"] = str(Path(str(options["split_csv"])).expanduser().resolve())
        # another layout option, other shards (512 and "512" are one option)
        opts = f":{sorted((k, str(v)) for k, v in options.items())}" if options else ""
        if d.masks_optional:  # other shards: anomalous images without masks kept
            opts += ":masks_optional"
        if d.dataset == "demo":  # a demo folder regenerated with other settings is another data set
            opts += f":{tag}"
        else:  # files added, removed or changed in the folder: other shards, never stale ones
            opts += f":{source_fingerprint(root)}"
        tag = hashlib.sha256(f"{d.dataset}:{root.resolve()}{opts}".encode()).hexdigest()[:10]
        location = str(cache / "shards" / f"{d.dataset}-{tag}")
        source = f"{d.dataset} at {root}"
        if (Path(location) / "manifest.json").is_file():
            mark_used(location)
        else:  # finished shards are reused without the lock
            with FileLock(lock_path(Path(location)), what=f"shards {location}"):  # one run shards, the others reuse
                if not (Path(location) / "manifest.json").is_file():
                    log(f"sharding {root} into {location}")
                    with Progress("shard", unit="img") as p:
                        shard_dataset(
                            d.dataset,
                            root,
                            location,
                            options=options or None,
                            log=log,
                            masks_optional=d.masks_optional,
                            progress=lambda n, total: (setattr(p, "total", total), p.update(n - p.n)),
                        )
    manifest = load_manifest(location)
    cats = list(d.categories) if d.categories else sorted(manifest.categories)
    unknown = [c for c in cats if c not in manifest.categories]
    if unknown:
        raise ConfigError(
            f"bad config value 'data.categories': unknown {unknown}; the data set has {sorted(manifest.categories)}"
        )
    check_shards(location, manifest, ("train", "test"), cats, sha256=d.verify)  # a shorter test set never passes
    return PreparedData(location=location, manifest=manifest, categories=cats, source=source)


def lock_path(target: Path) -> Path:
    """The lock file beside a folder that runs build in a shared cache."""
    return target.parent / f".{target.name}.lock"


def source_fingerprint(root: Path) -> str:
    """Count, total size and newest modification time of the files under a native layout: a
    cheap identity (stat only, no reads) that changes whenever the folder's content does."""
    n = size = newest = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            n, size, newest = n + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return f"{n}:{size}:{newest}"


class _Transformed:
    """Applies a Preprocess with a per-sample RNG (augmentation) inside loader workers."""

    def __init__(self, pre: Preprocess, seed: int | None):
        self.pre = pre
        self.rng = random.Random(seed) if seed is not None else None

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return self.pre(sample, self.rng)


def test_loader(cfg: Config, data: PreparedData, rank: int = 0, world_size: int = 1) -> DataLoader:
    stream = ShardStream(
        data.urls("test"),
        counts=data.counts("test"),
        transform=_Transformed(preprocess_for(cfg, False), None),
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(stream, batch_size=cfg.infer.batch_size, num_workers=cfg.data.num_workers, collate_fn=collate)


def train_image_loader(
    cfg: Config,
    data: PreparedData,
    batch_size: int,
    seed: int,
    augment: bool = True,
    rank: int = 0,
    world_size: int = 1,
    shuffle: bool = True,
) -> tuple[ShardStream, DataLoader]:
    pre = preprocess_for(cfg, augment)
    stream = ShardStream(
        data.urls("train"),
        counts=data.counts("train"),
        transform=_Transformed(pre, seed if augment else None),
        shuffle_buffer=cfg.data.shuffle_buffer if shuffle else 0,
        seed=seed,
        rank=rank,
        world_size=world_size,
    )
    loader = DataLoader(stream, batch_size=batch_size, num_workers=cfg.data.num_workers, collate_fn=collate)
    return stream, loader
