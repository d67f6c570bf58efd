"""`decodiff evaluate`: evaluate a trained checkpoint on the test split."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from decodiff.harness.commands.common import add_config_args, add_json_arg, config_from, headline, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a checkpoint: maps, metrics, report, MLflow run",
                       description="Run deviation correction on the test split with a trained checkpoint and write "
                                   "the per-category report and an MLflow run.")
    p.add_argument("--checkpoint", required=True, type=Path, help="checkpoint folder (from `decodiff train`)")
    add_config_args(p, default="demo")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    from decodiff.harness.bench import finish_run, report_extras
    from decodiff.harness.training.checkpoint import CheckpointError, load_model
    from decodiff.harness.data import prepare_data
    from decodiff.harness.training.distributed import accelerator_if_launched, builders_first
    from decodiff.harness.evaluation.evaluate import evaluate
    from decodiff.harness.progress import log
    from decodiff.harness.runs import check_folders, new_run_dir
    from decodiff.harness.tracking import check_tracking
    from decodiff.harness.training.vae_fit import get_vae

    t0 = time.time()
    check_folders(cfg)
    check_tracking(cfg)
    model, spec, info = load_model(args.checkpoint)
    trained_as = info.get("method", "deco-diff")
    if trained_as != cfg.method:
        raise CheckpointError(f"--checkpoint {args.checkpoint}: trained as method={trained_as}, but the config says "
                              f"method={cfg.method} (pass method={trained_as})")
    if spec.get("size") == "custom":  # an imported model of no preset's size: its own architecture
        log(f"UNet: the checkpoint's own architecture (custom: {spec.get('preset')}); model.size is not used")
    elif spec.get("size") != cfg.model.size:
        raise CheckpointError(f"--checkpoint {args.checkpoint}: a UNet of size {spec.get('size')}, but the config says "
                              f"model.size={cfg.model.size} (pass model.size={spec.get('size')})")
    imported = info.get("imported_from")
    if imported:  # weights made elsewhere: no VAE came with them
        if not cfg.vae.pretrained:
            raise CheckpointError(f"--checkpoint {args.checkpoint}: imported from {imported}, it holds no VAE of its "
                                  f"own: pass vae.pretrained= the VAE its weights were trained with (the authors': "
                                  f"sd-vae-ft-ema, as a local folder or file)")
        log(f"VAE: from the config (vae.pretrained={cfg.vae.pretrained}); the imported checkpoint has none of its own")
    where = info.get("vae_location")
    if not cfg.vae.pretrained and where and Path(where).exists():  # the VAE it was trained with, not a new one
        cfg = cfg.model_copy(update={"vae": cfg.vae.model_copy(update={"pretrained": where})})
        log(f"VAE: the checkpoint's own ({where})")
    acc = accelerator_if_launched(cfg)  # several launched processes: each scores a share of the test set
    with builders_first(acc):
        data = prepare_data(cfg)
        vae = get_vae(cfg, data)
    trained_with = info.get("vae_fingerprint")
    if trained_with and vae.fingerprint and trained_with != vae.fingerprint:
        raise CheckpointError(f"--checkpoint {args.checkpoint}: trained with another VAE ({info.get('vae')}; weights "
                              f"{trained_with[:12]}) than this config gives ({vae.source}; weights {vae.fingerprint[:12]})"
                              + (f": pass vae.pretrained={where}" if where else ": pass the VAE it was trained with"))
    if spec.get("latent_channels") != vae.latent_channels:
        raise CheckpointError(f"--checkpoint {args.checkpoint}: a UNet for {spec.get('latent_channels')}-channel "
                              f"latents, but the VAE ({vae.source}) gives {vae.latent_channels}")
    run_dir = new_run_dir(cfg, "evaluate") if acc is None or acc.is_main_process else None
    result = evaluate(cfg, data, model, vae, spec["classes"], out=run_dir)
    if run_dir is None:  # the main process reports
        return 0
    info = {**info, "checkpoint": str(args.checkpoint), "reused": True}
    unc, qual = report_extras(cfg, data, model, vae, spec["classes"], result)  # intervals, examples, trajectories
    res = finish_run(cfg, run_dir, data, vae, info, result, kind="evaluate", started=t0, uncertainty=unc,
                     qualitative=qual)
    log(f"report: {res.report}")
    log(f"mean: {headline(res.records)}")
    if args.json:
        print_json(res.summary)
    else:
        print(res.report)
    return 0
