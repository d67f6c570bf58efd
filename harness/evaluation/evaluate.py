"""Evaluation: stream the test shards, correct each latent, decode, build anomaly maps and
image scores, and hand them batch by batch to the metrics."""

from __future__ import annotations

import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from decodiff.datasets.files import write_atomic
from decodiff.datasets.shard_record import decode_record
from decodiff.datasets.stream import ShardStream, collate
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, preprocess_for
from decodiff.harness.evaluation.baselines import baselines_for
from decodiff.harness.evaluation.reference_cache import reference_cache_for
from decodiff.harness.evaluation.uncertainty import PixelStats
from decodiff.harness.methods import make_process, map_settings, reconstruction_settings
from decodiff.harness.metrics import MetricSuite
from decodiff.harness.metrics.labels import image_label
from decodiff.harness.progress import Progress, log
from decodiff.harness.training.distributed import (
    all_sum,
    broadcast_from_main,
    device_for,
    gather_to_main,
    rank_and_world,
)
from decodiff.models.anomaly_map import scored_maps
from decodiff.models.layout import to_layout, use_channels_last
from decodiff.models.reconstruction import reconstruct
from decodiff.models.sampler import EtaModel
from decodiff.models.unet import DeviationUNet
from decodiff.models.vae import FrozenVAE


@dataclass
class EvalResult:
    records: list[dict[str, Any]]  # the long table (results contract)
    samples: list[dict[str, Any]]  # per test image: key, category, defect, label, score
    seconds: float
    images_per_second: float
    maps_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    pixel_stats: Any = None  # uncertainty.PixelStats: per-image pixel histograms for the bootstrap (main process)
    # infer.baselines scored on the same images: records as `records`, each with "method" (evaluation/baselines.py)
    baseline_records: list[dict[str, Any]] = field(default_factory=list)
    baseline_seconds: dict[str, float] = field(default_factory=dict)  # per baseline, bank building included


def inference_layout(cfg: Config, model: DeviationUNet | None, vae: FrozenVAE, device: torch.device) -> bool:
    """Put the UNet and the VAE in the inference memory layout (infer.channels_last; in place), with
    the config's images per VAE call (vae.micro_batch)."""
    channels_last = use_channels_last(cfg.infer.channels_last, device, cfg.infer.precision != "fp32")
    for net in (model, vae):
        if net is not None:
            to_layout(net, channels_last)
    vae.micro_batch = cfg.vae.micro_batch
    return channels_last


@torch.no_grad()
def evaluate(
    cfg: Config,
    data: PreparedData,
    model: DeviationUNet | None,
    vae: FrozenVAE,
    class_names: list[str],
    out: Path | None = None,
) -> EvalResult:
    """Evaluate on the test split. Under several processes (`accelerate launch`), each rank
    scores its share of the test shards in batches and sends the per-image results to the main
    process, which puts them back into the single-process order (shard order, then position in
    the shard) before they reach the metrics: the same numbers as one process. Every rank
    returns the same records and samples; only the main process writes the maps. `cfg.method`
    chooses the reconstruction (models/reconstruction.py); vae-recon has no model (None)."""
    rank, world = rank_and_world()
    main = rank == 0
    device = device_for(cfg)
    model = model.to(device).eval() if model is not None else None
    vae = vae.to(device)
    channels_last = inference_layout(cfg, model, vae, device)
    refs = reference_cache_for(cfg, data, vae, device, channels_last)
    process = make_process(cfg)
    settings = map_settings(cfg)
    recon = reconstruction_settings(cfg)
    ids = {c: i for i, c in enumerate(class_names)}
    missing = [c for c in data.categories if c not in ids]
    if missing:
        raise ValueError(f"the model was trained without categories {missing} (it knows {class_names})")
    suite = MetricSuite(
        data.manifest.dataset,
        aupro_protocol=cfg.metrics.aupro_protocol,
        fpr_limit=cfg.metrics.fpr_limit,
        device=device.type,
    )
    bases = baselines_for(cfg, data, vae, device, settings)
    base_suites = {
        n: MetricSuite(
            data.manifest.dataset,
            aupro_protocol=cfg.metrics.aupro_protocol,
            fpr_limit=cfg.metrics.fpr_limit,
            device=device.type,
        )
        for n in (bases.names if bases else [])
    }
    samples: list[dict[str, Any]] = []
    saved: dict[str, np.ndarray] = {}
    stats = PixelStats() if main and out is not None else None
    urls = data.urls("test")
    order = _InOrder(urls, _counts(data, urls)) if main else None  # releases results in one-process order
    positions: dict[str, int] = {}
    total = data.manifest.count("test", data.categories)
    start = time.time()
    counts = _counts(data, urls)
    batches = _shard_batches(
        _ranked_test_loader(cfg, urls, counts, rank, world), dict(zip(urls, counts)), cfg.infer.batch_size
    )
    with Progress("evaluate", total=total, unit="img", stream=None if main else io.StringIO()) as prog:
        while True:
            batch = next(batches, None)
            items: list[dict[str, Any]] = []
            if batch is not None:
                x = batch["image"].to(device)
                cls = torch.tensor([ids[c] for c in batch["category"]], device=device)
                # a batch never mixes shards and starts at a multiple of the batch size (_shard_batches)
                url, keys, first = batch["url"][0], list(batch["key"]), positions.get(batch["url"][0], -1) + 1
                cached = refs.lookup(url, first, keys, device) if refs is not None else None
                rec = reconstruct(x, vae, conditioned(model, cls), process, recon, keys=keys, reference=cached)
                if refs is not None and cached is None:
                    refs.add(url, first, keys, rec.z, rec.x_ref)
                maps, scores = scored_maps(rec.x_rec, rec.x_ref, rec.z0_hat, rec.z, settings)
                maps_np, scores_np = maps.float().cpu().numpy(), scores.float().cpu().numpy()
                base = {
                    n: (m.float().cpu().numpy(), sc.float().cpu().numpy())
                    for n, (m, sc) in (
                        bases.maps(x, rec, list(batch["category"]), recon.pixel_reference).items() if bases else []
                    )
                }
                for i, key in enumerate(batch["key"]):
                    url = batch["url"][i]
                    index = positions[url] = positions.get(url, -1) + 1
                    mask = batch["mask"][i].numpy() if bool(batch["has_mask"][i]) else None
                    items.append(
                        {
                            "url": url,
                            "index": index,
                            "key": key,
                            "category": batch["category"][i],
                            "defect": batch["defect"][i],
                            "label": image_label(cfg.metrics.image_label, int(batch["label"][i]), mask),
                            "score": scores_np[i],
                            "map": maps_np[i],
                            "base": {n: (sc[i], m[i]) for n, (m, sc) in base.items()},
                            "mask": mask,
                        }
                    )
            if world > 1:
                if all_sum([int(batch is not None)])[0] == 0:
                    break
                parts = gather_to_main(items)
            elif batch is None:
                break
            else:
                parts = [items]
            if order is None or parts is None:
                continue
            for part in parts:
                order.add(part)
            ready = order.pop_ready()
            # per run of one category: the suite keeps each category's state apart
            for run in _category_runs(ready):
                ok = all(it["mask"] is not None for it in run)
                suite.update(
                    run[0]["category"],
                    np.array([it["score"] for it in run]),
                    np.array([it["label"] for it in run]),
                    np.stack([it["map"] for it in run]),
                    np.stack([it["mask"] for it in run]) if ok else None,
                    keys=[it["key"] for it in run],
                )
                t0 = time.perf_counter()
                for n, bsuite in base_suites.items():
                    bsuite.update(
                        run[0]["category"],
                        np.array([it["base"][n][0] for it in run]),
                        np.array([it["label"] for it in run]),
                        np.stack([it["base"][n][1] for it in run]),
                        np.stack([it["mask"] for it in run]) if ok else None,
                        keys=[it["key"] for it in run],
                    )
                if bases is not None:
                    bases.seconds["metrics"] = bases.seconds.get("metrics", 0.0) + time.perf_counter() - t0
                if stats is not None:
                    stats.update(
                        run[0]["category"],
                        [it["key"] for it in run],
                        np.array([it["label"] for it in run]),
                        np.stack([it["map"] for it in run]),
                        np.stack([it["mask"] for it in run]) if ok else None,
                    )
            for it in ready:
                samples.append(
                    {
                        "key": it["key"],
                        "category": it["category"],
                        "defect": it["defect"],
                        "label": it["label"],
                        "score": float(it["score"]),
                    }
                )
                if cfg.infer.save_maps and out is not None:
                    saved[it["key"]] = it["map"].astype(np.float32)
            prog.update(len(ready))
    seconds = time.time() - start
    if order is not None and order.missing():
        raise RuntimeError(
            f"evaluation: {order.missing()} test images did not come back from the ranks "
            f"(a shard shorter than its manifest count?)"
        )
    records = suite.compute() if main else None
    base_records = []
    if main and bases is not None:
        t0 = time.perf_counter()
        base_records = [{**r, "method": n} for n, bsuite in base_suites.items() for r in bsuite.compute()]
        bases.seconds["metrics"] = bases.seconds.get("metrics", 0.0) + time.perf_counter() - t0
    maps_file = None
    if main and saved and out is not None:
        maps_file = out / "maps.npz"
        # uncompressed: float maps compress by ~12 % (demo: 9.3 of 10.6 MB) for 0.5 s, 5 % of the demo's evaluation
        write_atomic(
            maps_file,
            lambda p: np.savez(
                p,
                keys=np.array(list(saved)),
                maps=np.stack(list(saved.values())),
                # the run's image scores, in the maps' order: not always a map's maximum (infer.image_map)
                scores=np.array([s["score"] for s in samples], dtype=np.float64),
            ),
        )
    if stats is not None:
        stats.save(out / "pixel_stats.npz")
    records, samples, base_records = broadcast_from_main((records, samples, base_records) if main else None)
    base_seconds = {k: round(v, 3) for k, v in (bases.seconds if bases else {}).items()}
    if main:
        log(f"evaluate: {len(samples)} images in {seconds:.1f}s" + (f" on {world} processes" if world > 1 else ""))
        if refs is not None and world == 1:
            log(
                f"reference cache: {refs.hits} of {refs.hits + refs.misses} images' z and Decoder(z) read from "
                f"{refs.folder}" + ("" if refs.misses == 0 else f", {refs.misses} computed and kept")
            )
        if base_seconds:
            log(
                f"baselines: {sum(base_seconds.values()):.1f}s in all ("
                + ", ".join(f"{k} {v:.1f}s" for k, v in base_seconds.items())
                + "; bank building and metrics included)"
            )
    return EvalResult(
        records,
        samples,
        seconds,
        len(samples) / max(seconds, 1e-9),
        maps_file,
        pixel_stats=stats,
        baseline_records=base_records,
        baseline_seconds=base_seconds,
    )


def conditioned(model: DeviationUNet | None, cls: torch.Tensor) -> EtaModel | None:
    """The model as (z_t, t) -> prediction for this batch's classes (None: no model)."""
    if model is None:
        return None
    return lambda zt, tt: model(zt, tt, cls)


def _decode_with_url(rec: dict[str, Any]) -> dict[str, Any]:
    return {**decode_record(rec), "url": rec.get("__url__", "")}


class _WithUrl:
    """The evaluation pre-processing, keeping the shard each sample came from (for the order)."""

    def __init__(self, pre: Any) -> None:
        self.pre = pre

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        return {**self.pre(sample), "url": sample["url"]}


def _ranked_test_loader(cfg: Config, urls: list[str], counts: list[int], rank: int, world: int) -> DataLoader:
    stream = ShardStream(
        urls,
        counts=counts,
        decode=_decode_with_url,
        transform=_WithUrl(preprocess_for(cfg, False)),
        rank=rank,
        world_size=world,
    )
    return DataLoader(stream, batch_size=None, num_workers=cfg.data.num_workers, collate_fn=_identity)


def _identity(x: Any) -> Any:
    return x


def _shard_batches(
    samples: Iterable[dict[str, Any]], counts: dict[str, int], batch_size: int
) -> Iterator[dict[str, Any]]:
    """Batches that never mix shards and start at each shard's first sample: an image lands in
    the same batch (same size, same neighbours) however many ranks and workers read the shards,
    so its numbers do not change in the last bits with the process count."""
    pending: dict[str, list[dict[str, Any]]] = {}
    seen: dict[str, int] = {}
    for sample in samples:
        url = sample["url"]
        seen[url] = seen.get(url, 0) + 1
        part = pending.setdefault(url, [])
        part.append(sample)
        if len(part) == batch_size or seen[url] == counts[url]:
            yield collate(pending.pop(url))
    for part in pending.values():  # only when a shard is shorter than its manifest count
        yield collate(part)


class _InOrder:
    """Results from any rank, released in the single-process order: shard by shard (the
    manifest's order), each shard's samples in their order within it."""

    def __init__(self, urls: list[str], counts: list[int]) -> None:
        self.rank_of = {u: i for i, u in enumerate(urls)}
        self.counts = counts
        self.buffer: dict[tuple[int, int], dict[str, Any]] = {}
        self.shard, self.index = 0, 0

    def add(self, items: list[dict[str, Any]]) -> None:
        for it in items:
            self.buffer[(self.rank_of[it["url"]], it["index"])] = it

    def pop_ready(self) -> list[dict[str, Any]]:
        out = []
        while self.shard < len(self.counts):
            if self.index >= self.counts[self.shard]:
                self.shard, self.index = self.shard + 1, 0
                continue
            it = self.buffer.pop((self.shard, self.index), None)
            if it is None:
                break
            out.append(it)
            self.index += 1
        return out

    def missing(self) -> int:
        """Samples not released yet (0 once every shard's samples came in)."""
        return sum(self.counts[self.shard :]) - self.index if self.shard < len(self.counts) else 0


def _counts(data: PreparedData, urls: list[str]) -> list[int]:
    """Manifest sample counts of the test shards, in `urls` order (data.urls keeps the manifest's)."""
    names = data.manifest.shard_names("test", data.categories)
    by_name = {s.name: s.count for s in data.manifest.shards}
    if len(names) != len(urls):
        raise ValueError(f"{len(urls)} test shard URLs for {len(names)} manifest shards")
    return [by_name[n] for n in names]


def _category_runs(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    runs: list[list[dict[str, Any]]] = []
    for it in items:
        if runs and runs[-1][0]["category"] == it["category"]:
            runs[-1].append(it)
        else:
            runs.append([it])
    return runs
