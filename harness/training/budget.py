"""`run.time_budget`: size the training to the minutes the user can give, from rates measured on
this machine before any heavy work, and say the plan (with an ETA) in one line.

The main process times a few optimizer steps of the run's UNet on random latents of the run's
shape, the VAE's encode/decode of a batch (the latent cache and the evaluation), a few VAE
training steps when the VAE must be trained, and the UNet's no-grad forward (the evaluation's
reverse steps); what the phases then cost follows from the image counts. The steps that fit go
into `train.max_steps` of the config the run records, with the budget cleared, so the recorded
config reproduces the run without it. Weights do not change the speed, so random ones serve.

Where the run fits its VAE, the plan is made again once that is done (`settle_budget`): the fit's
estimate is the plan's largest error (0.4-2.3x on this project's runs), and by then its real cost is
known. The steps chosen are kept in the cache by the config, data, VAE and budget, so that a rerun
trains the same steps, and so reuses the model, instead of planning anew on a machine whose speed
and cached VAE now give another count."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import statistics
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from decodiff.datasets.files import mark_used, write_json_atomic
from decodiff.harness.config import Config, ConfigError
from decodiff.harness.data import PreparedData, image_size
from decodiff.harness.methods import make_process
from decodiff.harness.progress import log
from decodiff.harness.training.checkpoint import build_from_spec, model_spec
from decodiff.harness.training.distributed import broadcast_from_main, device_for, tf32_for_training
from decodiff.harness.training.latent_cache import encodings_per_image
from decodiff.harness.training.optimizer import make_optimizer
from decodiff.harness.training.spec import training_spec
from decodiff.harness.training.vae_fit import resolve_pretrained, vae_cache_key
from decodiff.models.vae import FrozenVAE, build_small_vae, load_vae

MIN_STEPS = 100  # the least training worth running; also at least 2 x train.warmup
TIMED_STEPS = 3  # timed after two untimed warm-up steps
# of the time left for training: the rest absorbs the estimates' error and the machine's moods; 0.92 until stop 24,
# when an idle 2-core machine trained 17 % slower than its plan measured, within one 30-minute run (31.8 min)
TRAIN_SHARE = 0.82
# What the timed kernels leave out, from one demo run beside its own measurement on the shared 2-core
# machine (train.max_steps=150, load 2.4-3.7): the latent cache took 6.1x its encodes (augmentation, shard
# writing), the evaluation 5.5x its encode + reverse steps + decode (maps, blurs, metrics, baselines), the
# report 0.7x the evaluation; the tiny preset's VAE fit took 25 s beyond its steps (loaders, generic crops,
# the latent scale); the own preset's 2,000-step VAE fit on the demo images laid out as a folder ran at
# 0.30-0.36 s per step against 0.168 s timed (loader, generic crops): 2.2x. Training in the loop ran at
# 2.0 s per step against 3.2 s timed (demo) and 2.5 s against 2.2 s (own preset, load ~3): no factor.
# The evaluation factor was 5.5 from that run until stop 21; since then (micro-batched VAE calls, tiled
# latent-nn) the evaluation took 1.0-1.4x its timed work on the demo (idle: 6.5-9 s against 0.039 s x 162
# images), and the README's two own-data runs 1.5x and 1.1x (12 s against ~43 s and 24 s against ~122 s
# estimated at 5.5): 2.0 keeps a margin for load that comes after the plan.
CACHE_FACTOR = 6.0
EVAL_FACTOR = 2.0
REPORT_FACTOR = 0.7
REPORT_SECONDS = 5.0
VAE_FIT_SECONDS = 25.0
VAE_FACTOR = 2.2
# the training feed's start per epoch, beyond the timed steps: 0.8 s (tiny: 4.7 s for 5 epochs of 4 steps) until
# stop 24, when budgeted runs on an idle machine took 0.009 s (tiny, 550 steps in 137 epochs: 15.1 s against
# 0.0252 s timed per step) and 0.045 s (the own preset on the demo images as a folder, 3,550 steps in 444 epochs:
# 1,157 s against 0.320 s timed): 0.8 s had those plans leave 88 % and 28 % of the budget unused; 0.1 keeps a margin
EPOCH_SECONDS = 0.1
BASELINE_SHARE = 0.15  # the baselines' cost relative to DeCo-Diff's evaluation work (measured 0.107 on the demo)


def minimum_steps(cfg: Config) -> int:
    return max(MIN_STEPS, 2 * cfg.train.warmup)


def round_steps(n: float) -> int:
    """Down to a coarse grid, so that a rerun on the same machine usually picks the same count
    (and reuses the trained model) despite small differences in the measured rate."""
    grid = 10 if n < 500 else 50 if n < 5000 else 500
    return int(n // grid * grid)


def _timed(fn: Any, repeats: int, device: torch.device | None = None) -> float:
    """Median seconds per call of `fn` over `repeats` calls after two untimed ones (allocations,
    lazy initialisation, and an occasional slow second call seen on CPU): the median, not the
    mean, so that one call slowed by other load does not size the whole run. On a GPU each call
    is waited for: kernels are queued, and the clock would otherwise time their launch only."""
    wait = torch.cuda.synchronize if device is not None and device.type == "cuda" else lambda: None
    fn()
    fn()
    times = []
    for _ in range(repeats):
        wait()
        t = time.perf_counter()
        fn()
        wait()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _vae_for_timing(cfg: Config, data: PreparedData, size: int) -> tuple[FrozenVAE, bool]:
    """The run's VAE when loading it is cheap (pretrained or already trained and cached), else the
    architecture it will have (random weights); True when it still has to be trained."""
    if cfg.vae.pretrained:
        return load_vae(
            resolve_pretrained(cfg.vae.pretrained),
            image_size=size,
            scale=cfg.vae.scale,
            micro_batch=cfg.vae.micro_batch,
        ), False
    folder = Path(cfg.run.cache_dir) / "vae" / vae_cache_key(cfg, data)
    if (folder / "decodiff.json").is_file():
        return load_vae(folder, image_size=size, scale=cfg.vae.scale, micro_batch=cfg.vae.micro_batch), False
    return FrozenVAE(build_small_vae(cfg.vae.small).eval(), 1.0, "timing", micro_batch=cfg.vae.micro_batch), True


def measure(cfg: Config, data: PreparedData, world: int = 1) -> dict[str, float]:
    """Seconds per unit of each phase on this machine: a training step, a VAE training step (0
    when none is needed), the encoding of one image, the evaluation of one image."""
    device = device_for(cfg)
    size = image_size(cfg, data.manifest)
    torch.manual_seed(cfg.run.seed)
    vae, must_fit = _vae_for_timing(cfg, data, size)
    vae = vae.to(device)
    latent, ch = vae.latent_size(size), vae.latent_channels
    n_cls = len(data.categories)
    spec = model_spec(cfg.model.size, n_cls, cfg.model.conditional, ch, latent, cfg.model.dropout, data.categories)
    net = build_from_spec(spec).to(device).train()
    opt = make_optimizer(net, cfg.train, device)
    process = make_process(cfg)
    gen = torch.Generator().manual_seed(cfg.run.seed)
    t = cfg.train
    micro = max(1, t.batch_size // (world * t.grad_accum))  # this rank's micro-batch

    # the training's arithmetic: its mixed precision and TF32 setting on a GPU (a CPU trains in float32)
    half = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.mixed_precision)
    autocast = torch.autocast("cuda", dtype=half) if device.type == "cuda" and half else contextlib.nullcontext()

    def train_step() -> None:
        for _ in range(t.grad_accum):
            z0 = torch.randn(micro, ch, latent, latent).to(device)
            ids = torch.randint(0, n_cls, (micro,)).to(device)
            inp = process.training_input(z0, generator=gen)
            with autocast:
                pred = net(inp.z_t, inp.t, ids)
            F.mse_loss(pred.float(), inp.eta.float()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    with tf32_for_training(cfg):
        out = {"train_step": _timed(train_step, TIMED_STEPS, device)}
    net.eval()
    bsz = max(1, min(cfg.infer.batch_size, 16))
    x = torch.rand(bsz, 3, size, size, device=device) * 2 - 1
    ids = torch.zeros(bsz, dtype=torch.long, device=device)
    tt = torch.full((bsz,), cfg.process.steps // 2, device=device)
    with torch.no_grad():
        encode = _timed(lambda: vae.encode(x), 3, device) / bsz

        def evaluate_batch() -> None:
            z = vae.encode(x)
            for _ in range(cfg.infer.reverse_steps):
                net(z, tt, ids)
            vae.decode(z)

        out["encode_image"] = encode
        share = 1 + (BASELINE_SHARE if cfg.infer.baselines else 0)
        out["eval_image"] = _timed(evaluate_batch, 3, device) / bsz * share
    out["vae_step"] = 0.0
    if must_fit:
        small = build_small_vae(cfg.vae.small).to(device).train()
        vopt = torch.optim.AdamW(small.parameters(), lr=cfg.vae.lr)
        crop = cfg.vae.crop or size
        xv = torch.rand(cfg.vae.batch_size, 3, crop, crop, device=device) * 2 - 1

        def vae_step() -> None:
            post = small.encode(xv).latent_dist
            rec = small.decode(post.sample()).sample
            (F.l1_loss(rec, xv) + F.mse_loss(rec, xv) + post.kl().mean()).backward()
            vopt.step()
            vopt.zero_grad(set_to_none=True)

        out["vae_step"] = _timed(vae_step, 3, device)
    return out


def plan(
    cfg: Config, data: PreparedData, elapsed: float, rates: dict[str, float], at_least: bool = False
) -> dict[str, Any]:
    """The training steps that fit in the budget after the other phases' estimated cost.
    Raises ConfigError (one line) when not even the minimum training fits, unless `at_least`:
    then the minimum, marked `over_budget` (a plan made again once the VAE is paid for)."""
    budget = float(cfg.run.time_budget) * 60
    n_train = data.manifest.count("train", data.categories)
    n_test = data.manifest.count("test", data.categories)
    variants = encodings_per_image(cfg)  # 81 per image for the exact cache, not 1
    evaluation = rates["eval_image"] * n_test * EVAL_FACTOR
    other = {
        "vae": rates["vae_step"] * cfg.vae.steps * VAE_FACTOR + VAE_FIT_SECONDS if rates["vae_step"] else 0.0,
        "cache": rates["encode_image"] * n_train * variants * CACHE_FACTOR if cfg.train.latent_cache else 0.0,
        "evaluation": evaluation,
        "report": evaluation * REPORT_FACTOR + REPORT_SECONDS,
    }
    left = budget - elapsed - sum(other.values())
    per_epoch = max(1, math.ceil(n_train / cfg.train.batch_size))
    step = rates["train_step"] + EPOCH_SECONDS / per_epoch
    need = minimum_steps(cfg)
    steps = round_steps(max(left, 0.0) * TRAIN_SHARE / step)
    over = steps < need and at_least
    if over:
        steps = need
    elif steps < need:
        least = (elapsed + sum(other.values()) + need * step / TRAIN_SHARE) / 60
        raise ConfigError(
            f"run.time_budget={cfg.run.time_budget:g} min is too small for the minimum training of {need} steps "
            f"(max({MIN_STEPS}, 2 x train.warmup)) at {1 / step:.2g} steps/s on this machine after "
            f"~{sum(other.values()) + elapsed:.0f} s of the other phases: give at least {math.ceil(least)} min"
        )
    train_s = steps * step
    eta = datetime.now() + timedelta(seconds=train_s + sum(other.values()))
    return {
        "budget_minutes": cfg.run.time_budget,
        "steps": steps,
        "steps_per_second": round(1 / step, 3),
        "estimated_seconds": {"training": round(train_s, 1), **{k: round(v, 1) for k, v in other.items()}},
        "elapsed_before_plan": round(elapsed, 1),
        "measured_seconds_per": {k: round(v, 5) for k, v in rates.items()},
        "eta": eta.strftime("%H:%M"),
        "eta_iso": eta.isoformat(timespec="seconds"),
        **({"over_budget": True} if over else {}),
    }


def _mmss(s: float) -> str:
    return f"{int(s // 60)} min {int(s % 60)} s" if s >= 60 else f"{s:.0f} s"


def plan_line(p: dict[str, Any]) -> str:
    e = p["estimated_seconds"]
    parts = [f"training {p['steps']:,} steps at {p['steps_per_second']:.2g} steps/s = {_mmss(e['training'])}"]
    if e["vae"]:
        parts.append(f"VAE fit {_mmss(e['vae'])}")
    if e["cache"]:
        parts.append(f"latent cache ~{_mmss(e['cache'])}")
    parts += [f"evaluation ~{_mmss(e['evaluation'])}", f"report ~{_mmss(e['report'])}"]
    return f"budget {p['budget_minutes']:g} min: " + ", ".join(parts) + f", ETA {p['eta']}"


def fit_to_budget(cfg: Config, data: PreparedData, started: float, main: bool, world: int = 1) -> tuple[Config, dict]:
    """The config with `train.max_steps` set to the steps that fit in `run.time_budget` (which it
    clears), and the plan. The main process measures and decides, every rank gets its answer."""
    answer: Any = None
    if main:
        try:
            rates = measure(cfg, data, world)
            answer = plan(cfg, data, time.time() - started, rates)
        except ConfigError as e:
            answer = e
    answer = broadcast_from_main(answer)
    if isinstance(answer, ConfigError):
        raise answer
    sized = cfg.model_copy(deep=True)
    sized.train.max_steps = answer["steps"]
    sized.run.time_budget = None
    return sized, answer


PLANS = "budgets"  # <run.cache_dir>/budgets/<key>.json: the steps a budget chose, for reruns


def plan_key(cfg: Config, data: PreparedData, vae: FrozenVAE, minutes: float, world: int) -> str:
    """What a budget's plan depends on: the training but its steps, the VAE, the minutes, the ranks."""
    spec = training_spec(cfg, data, vae)
    spec["train"].pop("max_steps", None)
    blob = json.dumps({"training": spec, "budget_minutes": minutes, "world": world}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _earlier_steps(path: Path) -> int | None:
    try:
        steps = json.loads(path.read_text())["steps"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none, or unreadable: plan anew
    return steps if isinstance(steps, int) and steps > 0 else None


def _replan(cfg: Config, data: PreparedData, first: dict[str, Any], started: float, world: int) -> dict[str, Any]:
    """The plan again after the VAE fit, from rates measured now (the VAE is trained: encodes and
    evaluation time the real one) and the time really spent so far."""
    budgeted = cfg.model_copy(deep=True)
    budgeted.run.time_budget = first["budget_minutes"]
    rates = measure(budgeted, data, world)
    elapsed = time.time() - started
    again = plan(budgeted, data, elapsed, rates, at_least=True)
    if again.get("over_budget"):  # the fit took longer than planned: the least training, said so
        log(
            f"budget {first['budget_minutes']:g} min: will be exceeded ({_mmss(elapsed)} spent before the training, "
            f"the VAE fit estimated at {_mmss(first['estimated_seconds']['vae'])}); training the minimum of "
            f"{again['steps']} steps"
        )
    again["first_plan"] = {k: first[k] for k in ("steps", "estimated_seconds", "eta")}
    again["replanned_after"] = "the VAE fit"
    return again


def settle_budget(
    cfg: Config, data: PreparedData, vae: FrozenVAE, first: dict[str, Any], started: float, main: bool, world: int = 1
) -> tuple[Config, dict[str, Any]]:
    """After the VAE: the steps an earlier run of this config, data, VAE and budget chose (a rerun
    reuses its model), else, where this run fitted its VAE, the plan made again with the fit's real
    cost; the steps are kept for reruns. The main process decides, every rank gets its answer."""
    answer: Any = None
    if main:
        folder = Path(cfg.run.cache_dir) / PLANS
        path = folder / f"{plan_key(cfg, data, vae, first['budget_minutes'], world)}.json"
        steps = _earlier_steps(path)
        if steps is not None:
            mark_used(path)
            answer = {**first, "steps": steps, "earlier_plan": str(path), "planned_steps": first["steps"]}
            log(
                f"budget {first['budget_minutes']:g} min: {steps:,} training steps, as an earlier run of this config, "
                f"data and VAE chose ({path}), so that its model is reused; remove that file to plan anew"
            )
        else:
            answer = _replan(cfg, data, first, started, world) if first["estimated_seconds"]["vae"] else first
            if answer is not first:
                log("after the VAE fit, " + plan_line(answer))
            try:
                write_json_atomic(path, {"steps": answer["steps"], "plan": answer})
            except OSError as e:  # a read-only cache: the run goes on, a rerun plans again
                log(f"budget: cannot keep the plan under {folder} ({e})")
    answer = broadcast_from_main(answer)
    sized = cfg.model_copy(deep=True)
    sized.train.max_steps = answer["steps"]
    return sized, answer
