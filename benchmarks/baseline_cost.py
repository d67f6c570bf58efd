"""What the baselines (infer.baselines: vae-recon, latent-nn) add to an evaluation, measured side by
side on the same test batches: per batch, DeCo-Diff's own work (encode, 5 correction steps, two
decodes, the map) and then the baselines' maps on its result, alternating over rounds so that
machine load hits both alike; plus the one-off building of the latent-nn banks. One JSON line.

The model is the config's cached training (run `decodiff bench --config demo` first; a model that
is not cached yet is trained, which takes minutes). The baselines do not depend on the UNet, so a
short training (train.max_steps=40) measures the same cost.

    .venv/bin/python benchmarks/baseline_cost.py [--config demo] [--batches 2] [--rounds 3] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data, test_loader
from decodiff.harness.evaluation.baselines import baselines_for
from decodiff.harness.evaluation.evaluate import conditioned
from decodiff.harness.methods import make_process, map_settings, reconstruction_settings
from decodiff.harness.training.distributed import device_for
from decodiff.harness.training.model_cache import trained_model
from decodiff.harness.training.vae_fit import get_vae
from decodiff.models.anomaly_map import scored_maps
from decodiff.models.reconstruction import reconstruct


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="demo")
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = build_config(args.config, [*args.overrides, "tracking.enabled=false"])
    data = prepare_data(cfg)
    vae = get_vae(cfg, data)
    model, classes, _, _ = trained_model(cfg, data, vae)
    device = device_for(cfg)
    model, vae = model.to(device).eval(), vae.to(device)
    settings, recon, process = map_settings(cfg), reconstruction_settings(cfg), make_process(cfg)
    ids = {c: i for i, c in enumerate(classes)}
    t = time.perf_counter()
    bases = baselines_for(cfg, data, vae, device, settings)
    bank_seconds = time.perf_counter() - t
    batches = []
    for b in test_loader(cfg, data):
        batches.append(b)
        if len(batches) == args.batches:
            break
    own: list[float] = []
    extra: list[float] = []
    for _ in range(args.rounds):
        for b in batches:
            x = b["image"].to(device)
            cls = torch.tensor([ids[c] for c in b["category"]], device=device)
            t = time.perf_counter()
            rec = reconstruct(x, vae, conditioned(model, cls), process, recon, keys=b["key"])
            scored_maps(rec.x_rec, rec.x_ref, rec.z0_hat, rec.z, settings)
            own.append(time.perf_counter() - t)
            t = time.perf_counter()
            bases.maps(x, rec, list(b["category"]), recon.pixel_reference)
            extra.append(time.perf_counter() - t)
    images = sum(len(b["key"]) for b in batches)
    own_s, extra_s = statistics.median(own), statistics.median(extra)
    print(
        json.dumps(
            {
                "config": args.config,
                "overrides": args.overrides,
                "batch_size": cfg.infer.batch_size,
                "batches": len(batches),
                "rounds": args.rounds,
                "images_per_round": images,
                "test_images": data.manifest.count("test", data.categories),
                "deco_diff_seconds_per_batch_median": round(own_s, 3),
                "baselines_seconds_per_batch_median": round(extra_s, 3),
                "ratio_baselines_to_deco_diff": round(extra_s / own_s, 3),
                "bank_seconds": round(bank_seconds, 2),
                "per_baseline_seconds_all_rounds": {k: round(v, 2) for k, v in bases.seconds.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
