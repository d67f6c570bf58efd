"""DeCo-Diff training with Accelerate: the whole loop on one screen.

set-up (processes, seeds) -> data (latent cache or images + frozen VAE) -> model, optimizer,
schedule -> loop (masked forward process, eta target, MSE, backward, step, log) -> checkpoint.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader

from decodiff.datasets.stream import ShardStream, collate
from decodiff.harness.checkpoint import model_spec, save_model
from decodiff.harness.config import Config
from decodiff.harness.data import PreparedData, image_size, train_image_loader
from decodiff.harness.latent_cache import build_latent_cache, decode_latent
from decodiff.harness.progress import Progress, log
from decodiff.harness.provenance import code_version
from decodiff.harness.schedules import lr_lambda
from decodiff.models.deviation import DeviationProcess
from decodiff.models.unet import build_unet, count_parameters
from decodiff.models.vae import FrozenVAE


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    epochs: int
    seconds: float
    final_loss: float
    samples_per_second: float


def make_process(cfg: Config) -> DeviationProcess:
    p = cfg.process
    return DeviationProcess(p.steps, p.schedule, p.patch_sizes, p.patch_probs, p.r_mask, p.r_shuffle)


def train(cfg: Config, data: PreparedData, vae: FrozenVAE, out: Path, accelerator: Accelerator | None = None) -> TrainResult:
    t = cfg.train
    # ---- set-up -------------------------------------------------------------------------------
    acc = accelerator or Accelerator(cpu=cfg.run.device == "cpu", mixed_precision=t.mixed_precision,
                                     gradient_accumulation_steps=t.grad_accum)
    set_seed(cfg.run.seed + acc.process_index)  # torch, numpy and random on every rank
    if torch.cuda.is_available() and t.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    world = acc.num_processes
    micro = t.batch_size // (t.grad_accum * world)
    if micro < 1:
        raise ValueError(f"train.batch_size {t.batch_size} is smaller than grad_accum x processes ({t.grad_accum * world})")
    gen = torch.Generator().manual_seed(cfg.run.seed * 1000 + acc.process_index)

    # ---- data ---------------------------------------------------------------------------------
    size = image_size(cfg, data.manifest)
    latent_size = vae.latent_size(size)
    if t.latent_cache:
        if acc.is_main_process:
            loc, lman = build_latent_cache(cfg, data, vae)
        acc.wait_for_everyone()
        if not acc.is_main_process:
            loc, lman = build_latent_cache(cfg, data, vae)
        urls = [str(Path(loc) / n) for n in lman.shard_names("train", data.categories)]
        stream = ShardStream(urls, decode=decode_latent, shuffle_buffer=cfg.data.shuffle_buffer, seed=cfg.run.seed,
                             rank=acc.process_index, world_size=world)
        loader = DataLoader(stream, batch_size=micro, num_workers=cfg.data.num_workers, collate_fn=collate)
    else:
        stream, loader = train_image_loader(cfg, data, micro, seed=cfg.run.seed, rank=acc.process_index, world_size=world)
        vae = vae.to(acc.device)
    n_train = data.manifest.count("train", data.categories)
    steps_per_epoch = max(1, math.ceil(n_train / t.batch_size))
    total_steps = min(t.max_steps or steps_per_epoch * t.epochs, steps_per_epoch * t.epochs)
    class_ids = data.class_ids

    # ---- model, optimizer, schedule -------------------------------------------------------------
    model = build_unet(cfg.model.size, num_classes=len(data.categories), conditional=cfg.model.conditional,
                       latent_channels=vae.latent_channels, sample_size=latent_size, dropout=cfg.model.dropout)
    fused = acc.device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=fused or None)
    per_epoch = t.lr_schedule == "published"
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(t.lr_schedule, t.warmup, t.epochs if per_epoch else total_steps, t.lr, t.min_lr))
    model, optimizer = acc.prepare(model, optimizer)
    process = make_process(cfg)
    if acc.is_main_process:
        log(f"train: model {cfg.model.size} ({count_parameters(model) / 1e6:.2f}M parameters), {len(data.categories)} "
            f"classes, latent {vae.latent_channels}x{latent_size}x{latent_size}, {n_train} images, "
            f"{total_steps} steps of global batch {t.batch_size} on {world} process(es), {acc.device}")

    # ---- loop ---------------------------------------------------------------------------------
    step, epoch, loss_ema = 0, 0, None
    start = time.time()
    model.train()
    with Progress("train", total=total_steps, unit="step", stream=None) as prog:
        while step < total_steps:
            stream.set_epoch(epoch)
            for batch in loader:
                with acc.accumulate(model):
                    ids = torch.tensor([class_ids[c] for c in batch["category"]], device=acc.device)
                    if t.latent_cache:
                        lat = batch["latent"]  # [B, K, 2, C, h, w]
                        pick = torch.randint(0, lat.shape[1], (lat.shape[0],), generator=gen)
                        mean, std = lat[torch.arange(lat.shape[0]), pick, 0], lat[torch.arange(lat.shape[0]), pick, 1]
                        z0 = (mean + std * torch.randn(mean.shape, generator=gen)).to(acc.device)
                    else:
                        z0 = vae.encode(batch["image"].to(acc.device), sample=True, generator=None)
                    inp = process.training_input(z0, generator=gen)
                    with acc.autocast():
                        pred = model(inp.z_t, inp.t, ids)
                    loss = F.mse_loss(pred.float(), inp.eta.float())
                    acc.backward(loss)
                    if acc.sync_gradients and t.grad_clip:
                        acc.clip_grad_norm_(model.parameters(), t.grad_clip)
                    optimizer.step()
                    if acc.sync_gradients and not per_epoch:
                        scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                if acc.sync_gradients:
                    step += 1
                    val = float(loss.detach())
                    loss_ema = val if loss_ema is None else 0.98 * loss_ema + 0.02 * val
                    if acc.is_main_process:
                        prog.update(1, loss=loss_ema, lr=optimizer.param_groups[0]["lr"], epoch=epoch)
                    if step >= total_steps:
                        break
            epoch += 1
            if per_epoch:
                scheduler.step()
    seconds = time.time() - start

    # ---- checkpoint ---------------------------------------------------------------------------
    ckpt = out / "checkpoint"
    if acc.is_main_process:
        spec = model_spec(cfg.model.size, len(data.categories), cfg.model.conditional, vae.latent_channels,
                          latent_size, cfg.model.dropout, data.categories)
        info = {"steps": step, "epochs": epoch, "seconds": round(seconds, 1), "final_loss": loss_ema,
                "code_version": code_version(), "data_checksum": data.manifest.checksum, "vae": vae.source,
                "config_digest": cfg.digest()}
        save_model(ckpt, acc.unwrap_model(model), spec, info)
    acc.wait_for_everyone()
    rate = step * t.batch_size / max(seconds, 1e-9)
    return TrainResult(ckpt, step, epoch, seconds, float(loss_ema or float("nan")), rate)


