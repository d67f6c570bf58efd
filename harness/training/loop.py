"""DeCo-Diff training with Accelerate: the whole loop on one screen.

set-up (processes, seeds) -> data (latent cache or images + frozen VAE) -> model, optimizer,
schedule, EMA (or all of them restored from a checkpoint) -> loop (masked forward process,
eta target, MSE, backward, step, log, checkpoint; stop cleanly on preemption) -> final model.

Helpers: feed.py (the epoch's steps, balanced over ranks), checkpoint.py (exact resume),
distributed.py (processes), schedules.py, ema.py, preemption.py.
"""

from __future__ import annotations

import io
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator

from decodiff.datasets.locks import FileLock
from decodiff.harness.config import Config, ConfigError
from decodiff.harness.data import PreparedData, image_size
from decodiff.harness.methods import make_process
from decodiff.harness.progress import Progress, log
from decodiff.harness.provenance import code_version
from decodiff.harness.training.checkpoint import (
    Position,
    Trainables,
    build_from_spec,
    clear_training_states,
    latest_state,
    model_spec,
    restore_training,
    save_model,
    save_training,
)
from decodiff.harness.training.distributed import (
    barrier,
    make_accelerator,
    same_weights_on_all_ranks,
    seed_everything,
    tf32_for_training,
)
from decodiff.harness.training.ema import EMA
from decodiff.harness.training.feed import Throughput, TrainFeed
from decodiff.harness.training.init_weights import init_plan, init_record, row_labels
from decodiff.harness.training.latent_cache import latent_cache_for
from decodiff.harness.training.optimizer import make_optimizer
from decodiff.harness.training.preemption import Preempted, PreemptionWatch, mark_preempted
from decodiff.harness.training.schedules import make_scheduler, plan_steps
from decodiff.harness.training.spec import training_spec
from decodiff.models.ddim_recon import NoiseProcess
from decodiff.models.deviation import DeviationProcess
from decodiff.models.layout import to_layout
from decodiff.models.unet import initialise
from decodiff.models.unet_init import WeightsPlan, apply_weights
from decodiff.models.vae import FrozenVAE

TRAIN_LOCK = ".train.lock"


@dataclass
class TrainResult:
    checkpoint: Path
    steps: int
    epochs: int
    seconds: float
    final_loss: float
    samples_per_second: float  # after the first step (start-up excluded), this process's run only
    resumed_from: int | None = None
    weights_sha256: str = ""  # of the trained weights, the same on every rank (checked)
    timed_samples: int = 0  # samples (all ranks) behind samples_per_second
    timed_cpu_seconds: float = 0.0  # CPU time of this rank over those steps


def backward(
    acc: Accelerator,
    model: torch.nn.Module,
    process: DeviationProcess | NoiseProcess,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    weight: float,
    gen: torch.Generator,
) -> torch.Tensor:
    """Forward and backward of this rank's micro-batches (z0, class ids) of one optimizer step:
    masked forward process, eta target, per-sample MSE; the loss is the sum over samples x
    `weight`. DDP all-reduces the gradients on the last micro-batch only. Returns the summed
    (unweighted) loss of the samples, for the log."""
    total = torch.zeros((), device=acc.device)
    for i, (z0, ids) in enumerate(batches):
        with acc.no_sync(model) if i + 1 < len(batches) else nullcontext():
            inp = process.training_input(z0, generator=gen)
            with acc.autocast():
                pred = model(inp.z_t, inp.t, ids)
            per_sample = F.mse_loss(pred.float(), inp.eta.float(), reduction="none").flatten(1).mean(1)
            acc.backward(per_sample.sum() * weight)
        total += per_sample.detach().sum() * (weight > 0)
    return total


def initial_weights(cfg: Config, spec: dict, categories: list[str], log_it: bool) -> WeightsPlan | None:
    """model.init_from as a plan matched against a weightless copy of the model (no random draws,
    so a run with an initialisation draws what one without would)."""
    if not cfg.model.init_from:
        return None
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        skeleton = build_from_spec(spec)
    labels = row_labels(categories, cfg.model.conditional)
    plan = init_plan(cfg.model.init_from, cfg.model.init_partial, skeleton, labels)
    if log_it:
        partial = "" if plan.report.full else " (PARTIAL, model.init_partial=true)"
        log(f"init{partial}: model.init_from={plan.report.line()}; {plan.report.rows_line()}")
    return plan


def training_folder_lock(out: Path, wait: bool = False) -> FileLock:
    """The lock of a training folder: one training writes there at a time (the main process holds it)."""
    return FileLock(
        Path(out) / TRAIN_LOCK,
        what=f"training folder {out}",
        wait=wait,
        hint="wait for it to finish, or choose another --out",
    )


def train(
    cfg: Config,
    data: PreparedData,
    vae: FrozenVAE,
    out: Path,
    accelerator: Accelerator | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train into `out` (final model in out/checkpoint, training states in out/train_state);
    `resume` continues from the newest training state there (the config must match). A second
    training into the same folder is refused while this one runs."""
    if cfg.method == "vae-recon":
        raise ConfigError("method=vae-recon has no model to train (it scores the VAE's own reconstruction)")
    acc = accelerator or make_accelerator(cfg)
    with training_folder_lock(out) if acc.is_main_process else nullcontext(), tf32_for_training(cfg):
        return _train(cfg, data, vae, Path(out), acc, resume)


def _train(cfg: Config, data: PreparedData, vae: FrozenVAE, out: Path, acc: Accelerator, resume: bool) -> TrainResult:
    t = cfg.train
    # ---- set-up --------------------------------------------------------------------------------
    rank, world = acc.process_index, acc.num_processes
    seed_everything(cfg.run.seed)  # the same initial weights on every rank
    gen = torch.Generator().manual_seed(cfg.run.seed * 1000 + rank)  # masks, noise, latent draws of this rank

    # ---- data ----------------------------------------------------------------------------------
    latent = vae.latent_size(image_size(cfg, data.manifest))
    bad = [p for p in cfg.process.patch_sizes if latent % p] if cfg.method == "deco-diff" else []
    if bad:  # the published code crashes mid-training here; say so before any work
        raise ConfigError(
            f"process.patch_sizes {bad} do not divide the {latent}x{latent} latent "
            f"(image size {image_size(cfg, data.manifest)} / VAE factor {vae.factor})"
        )
    spec = model_spec(
        cfg.model.size,
        len(data.categories),
        cfg.model.conditional,
        vae.latent_channels,
        latent,
        cfg.model.dropout,
        data.categories,
    )
    init = initial_weights(cfg, spec, data.categories, log_it=acc.is_main_process)  # checked before any work
    cache_wall, cache_cpu = time.perf_counter(), time.process_time()
    cache = latent_cache_for(acc, cfg, data, vae) if t.latent_cache else None  # no VAE in the loop
    cache_wall, cache_cpu = time.perf_counter() - cache_wall, time.process_time() - cache_cpu
    feed = TrainFeed(
        cfg, data, vae if cache else vae.to(acc.device), rank=rank, world=world, device=acc.device, latent_cache=cache
    )
    plan = plan_steps(feed, t)

    # ---- model, optimizer, schedule, EMA; or all of them from a checkpoint -------------------------
    net = build_from_spec(spec)  # the plain module (weights, EMA, checkpoints)
    initialise(net, cfg.model.init)  # from scratch; init_from's weights and a resumed run overwrite these
    if init is not None:  # a resumed run then restores its own weights over these
        apply_weights(net, init)
        init.tensors, init.class_table = {}, None  # the report stays; the file's tensors need not
    net = to_layout(net.to(acc.device), t.channels_last)  # in the training memory layout
    optimizer = make_optimizer(net, t, acc.device)
    scheduler = make_scheduler(optimizer, t, plan)
    ema = EMA(net, t.ema) if t.ema and acc.is_main_process else None
    meta = {
        "training_spec": training_spec(cfg, data, vae),
        "model_spec": spec,
        "layout": {"num_workers": cfg.data.num_workers},
    }
    trainables = Trainables(net, optimizer, scheduler, ema, acc.scaler, gen)
    pos, resumed_from, state = Position(), None, latest_state(out) if resume else None
    if state is not None:
        pos = restore_training(state, trainables, expect=meta, rank=rank, world=world)
        resumed_from = pos.step
    else:
        if acc.is_main_process:
            clear_training_states(out)
        seed_everything(cfg.run.seed + rank)  # dropout differs per rank
    model, optimizer = acc.prepare(net, optimizer)  # DDP (and torch.compile) wrap `net`
    trainables.optimizer = optimizer  # saved through accelerate's wrapper (its state_dict is the optimizer's)
    process = make_process(cfg)
    if acc.is_main_process:
        log(
            f"train: UNet {cfg.model.size} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), "
            f"{len(data.categories)} classes, latent {vae.latent_channels}x{latent}x{latent}, "
            f"{'latent cache' if cache else 'images + VAE'}; {plan.total} steps ({plan.per_epoch} per epoch) of global "
            f"batch {t.batch_size} over {world} process(es) on {acc.device}"
            + (f" (samples per rank in epoch 0: {feed.rank_counts(0)})" if world > 1 else "")
            + (f"; resumed at step {pos.step} (epoch {pos.epoch})" if resumed_from is not None else "")
        )

    def checkpoint(reason: str) -> Path:
        pos.loss_sum, pos.seconds = float(run_loss), prior_seconds + time.time() - started
        return save_training(
            out,
            pos,
            trainables,
            meta=meta,
            rank=rank,
            world=world,
            keep=t.keep_checkpoints,
            barrier=barrier,
            reason=reason,
        )

    # ---- loop ----------------------------------------------------------------------------------
    per_epoch = t.lr_schedule == "published"
    latent_shape = (vae.latent_channels, latent, latent)
    run_loss = torch.tensor(pos.loss_sum, device=acc.device)  # this rank's loss since the last log
    start_step, prior_seconds, started = pos.step, pos.seconds, time.time()
    speed = Throughput(acc.device)
    model.train()
    with (
        PreemptionWatch() as watch,
        Progress(
            "train",
            total=plan.total,
            unit="step",
            initial=pos.step,
            stream=None if acc.is_main_process else io.StringIO(),
        ) as prog,
    ):
        while pos.step < plan.total and pos.epoch < t.epochs:
            for step in feed.steps(pos.epoch, skip=pos.consumed, stop=lambda: watch.requested is not None):
                if step.stop:
                    stop = Preempted(
                        watch.requested or "a signal on another rank", pos.step, str(checkpoint("preempted"))
                    )
                    mark_preempted(str(stop))
                    raise stop
                # DDP averages gradients over ranks; this weight makes that the mean over the step's samples
                weight = world / step.n_global if step.micro else 0.0
                batches = [feed.latents(b, gen) for b in step.micro] or [feed.placeholder(latent_shape)]
                run_loss += backward(acc, model, process, batches, weight, gen)
                if t.grad_clip:
                    acc.clip_grad_norm_(model.parameters(), t.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if not per_epoch:
                    scheduler.step()
                if ema is not None:
                    ema.update(net)
                pos.step, pos.consumed, pos.loss_n = (
                    pos.step + 1,
                    pos.consumed + step.n_local,
                    pos.loss_n + step.n_local,
                )
                speed.add(step.n_global)
                if pos.step % t.log_every == 0 or pos.step == plan.total:
                    pos.loss, pos.loss_n = (
                        float(run_loss) / max(pos.loss_n, 1),
                        0,
                    )  # this rank's mean since the last log
                    run_loss.zero_()
                prog.update(
                    1,
                    **({"loss": pos.loss} if pos.loss is not None else {}),
                    lr=optimizer.param_groups[0]["lr"],
                    epoch=pos.epoch,
                )
                if pos.step % t.checkpoint_every == 0:
                    checkpoint("periodic")
                if pos.step >= plan.total:
                    break
            else:  # the epoch is over on every rank
                pos.epoch, pos.consumed = pos.epoch + 1, 0
                if per_epoch:
                    scheduler.step()
    rate, cpu = speed.rate(), speed.cpu_seconds()
    seconds = time.time() - started
    pos.seconds = prior_seconds + seconds

    # ---- final model and state -------------------------------------------------------------------
    if pos.step > start_step:
        checkpoint("final")
    digest = same_weights_on_all_ranks(net)
    ckpt = out / "checkpoint"
    if acc.is_main_process:
        info = {
            "method": cfg.method,
            "steps": pos.step,
            "epochs": pos.epoch,
            "seconds": round(pos.seconds, 1),
            "final_loss": pos.loss,
            "code_version": code_version(),
            "data_checksum": data.manifest.checksum,
            "vae": vae.source,
            "vae_fingerprint": vae.fingerprint,
            "vae_location": vae.location,
            "vae_scale": vae.scale,
            "config_digest": cfg.digest(),
            "processes": world,
            "ema": t.ema,
            "weights_sha256": digest,
            "resumed_from": resumed_from,
            "latent_cache_seconds": round(cache_wall, 2),
            "latent_cache_cpu_seconds": round(cache_cpu, 2),
            "samples_per_second": round(rate, 3),
            "steps_per_second": round(rate / t.batch_size, 4),
            "timed_cpu_seconds": round(cpu, 2),
            "config": cfg.to_dict(),
        }  # the resolved config: `decodiff predict` preprocesses and scores as trained
        if init is not None:
            info["init"] = init_record(cfg.model.init_from, init)
        save_model(ckpt, net, spec, info, state=ema.averaged_state(net) if ema is not None else None)
    barrier()
    return TrainResult(
        ckpt,
        pos.step,
        pos.epoch,
        seconds,
        float(pos.loss if pos.loss is not None else float("nan")),
        rate,
        resumed_from,
        digest,
        speed.samples,
        cpu,
    )
