"""The main job: data -> shards -> VAE -> training -> deviation correction -> metrics ->
MLflow run and Markdown report. Each stage is also a library call of its own."""

from __future__ import annotations

import time

import torch

from decodiff.harness.config import Config
from decodiff.harness.data import prepare_data
from decodiff.harness.evaluation.evaluate import evaluate
from decodiff.harness.finishing import RunResult, finish_run, report_extras
from decodiff.harness.progress import log
from decodiff.harness.runs import check_folders, new_run_dir
from decodiff.harness.timings import Timings
from decodiff.harness.tracking import check_tracking
from decodiff.harness.training.budget import fit_to_budget, plan_line, settle_budget
from decodiff.harness.training.distributed import accelerator_if_launched, builders_first
from decodiff.harness.training.init_weights import source_files
from decodiff.harness.training.model_cache import trained_model
from decodiff.harness.training.vae_fit import get_vae


def bench(cfg: Config) -> RunResult | None:
    """The whole job. Under several launched processes (`accelerate launch ... bench`) every rank
    trains and evaluates its share; the main process alone writes the run folder, report and
    MLflow run and gets the result, the others get None."""
    t0 = time.time()
    check_folders(cfg)
    check_tracking(cfg)  # an unreachable server fails now, not after the training
    if cfg.model.init_from:  # a missing initialisation fails now, not after the VAE
        source_files(cfg.model.init_from)
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    acc = accelerator_if_launched(cfg)
    main = acc is None or acc.is_main_process
    world = acc.num_processes if acc is not None else 1
    timings = Timings()
    budget = None
    with builders_first(acc):
        with timings.phase("data"):
            data = prepare_data(cfg)
    if cfg.run.time_budget:  # measured and decided before the VAE, the latent cache and the training
        with timings.phase("budget"):
            cfg, budget = fit_to_budget(cfg, data, t0, main, world)
        timings.notes["budget"] = budget
        if main:
            log(plan_line(budget))
    with builders_first(acc):
        with timings.phase("vae"):
            vae = get_vae(cfg, data)
    if budget is not None:  # an earlier run's steps (its model reused), or planned again after the VAE fit
        with timings.phase("budget"):
            cfg, budget = settle_budget(cfg, data, vae, budget, t0, main, world)
        timings.notes["budget"] = budget
    with timings.phase("training"):
        model, classes, train_info, reused = trained_model(cfg, data, vae, accelerator=acc)
    if not reused:  # the latent cache is built inside the training call: its own phase
        timings.split(
            "training",
            "cache",
            train_info.get("latent_cache_seconds") or 0.0,
            train_info.get("latent_cache_cpu_seconds") or 0.0,
        )
        for key in ("steps_per_second", "samples_per_second"):
            if train_info.get(key):
                timings.rates[f"train_{key}"] = train_info[key]
    timings.notes["model_reused"] = reused
    if budget is not None:
        train_info = {**train_info, "budget": budget}  # the plan, in summary.json beside the steps it chose
    if acc is not None:
        acc.free_memory()  # the DDP wrapper and optimizer state of the training: not needed to evaluate
    run_dir = new_run_dir(cfg, "bench") if main else None  # made once there is a model: a failed training leaves none
    if run_dir is not None:
        log(f"run folder {run_dir}")
    with timings.phase("evaluation"):
        result = evaluate(cfg, data, model, vae, classes, out=run_dir)
    if run_dir is None:
        return None
    timings.rates["eval_images_per_second"] = round(result.images_per_second, 3)
    with timings.phase("report"):
        unc, qual = report_extras(cfg, data, model, vae, classes, result)
        out = finish_run(
            cfg, run_dir, data, vae, train_info, result, kind="bench", started=t0, uncertainty=unc, qualitative=qual
        )
    if budget is not None:
        used = time.time() - t0
        timings.notes["budget"] = {**budget, "actual_seconds": round(used, 1)}
        log(f"budget {budget['budget_minutes']:g} min: the run took {used / 60:.1f} min")
    timings.write(run_dir)
    log(f"timings: {timings.line()} ({run_dir / 'timings.json'})")
    return out
