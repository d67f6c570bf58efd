"""Contiguous (NCHW) against channels-last (NHWC) weights for inference, side by side in one process
(issue 16): the demo UNet's 5 correction calls on a batch of latents and one decode of the shipped
demo VAE, rounds interleaved, best of N in wall and CPU seconds, and the largest difference of the
outputs (same maths, other rounding).

    python benchmarks/layout_speed.py                       # demo UNet (batch 32, 16x16) + demo VAE
    python benchmarks/layout_speed.py --size XS --latent 32 --batch 8 --rounds 4
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from pathlib import Path

import torch

from decodiff.models.layout import to_layout
from decodiff.models.unet import build_unet
from decodiff.models.vae import load_vae

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="demo")
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    unet = build_unet(args.size, num_classes=4, sample_size=args.latent).eval()
    vae = load_vae(ROOT / "models" / "weights" / "demo-vae")
    nets = {
        "contiguous": (unet, vae),
        "channels_last": (to_layout(copy.deepcopy(unet), True), to_layout(copy.deepcopy(vae), True)),
    }
    g = torch.Generator().manual_seed(0)
    z = torch.randn(args.batch, 4, args.latent, args.latent, generator=g)
    ids = torch.randint(0, 4, (args.batch,), generator=g)

    @torch.no_grad()
    def unet5(net: torch.nn.Module) -> torch.Tensor:
        out = z
        for step in (8, 6, 4, 2, 0):
            out = net(z, torch.full((args.batch,), step), ids)
        return out

    @torch.no_grad()
    def decode(v: torch.nn.Module) -> torch.Tensor:
        return v.decode(z)

    outputs = {name: (unet5(u), decode(v)) for name, (u, v) in nets.items()}  # also the warm-up
    times: dict[str, list[tuple[float, float]]] = {}
    for r in range(args.rounds):
        for name in list(nets) if r % 2 == 0 else list(nets)[::-1]:
            u, v = nets[name]
            for part, fn in (("unet_5_steps", lambda u=u: unet5(u)), ("vae_decode", lambda v=v: decode(v))):
                wall, cpu = time.perf_counter(), time.process_time()
                fn()
                times.setdefault(f"{name}/{part}", []).append((time.perf_counter() - wall, time.process_time() - cpu))
    best = {
        k: {"wall": round(min(t[0] for t in v), 4), "cpu": round(min(t[1] for t in v), 4)} for k, v in times.items()
    }
    ratios = {
        part: {m: round(best[f"contiguous/{part}"][m] / best[f"channels_last/{part}"][m], 2) for m in ("wall", "cpu")}
        for part in ("unet_5_steps", "vae_decode")
    }
    diff = {
        "unet_5_steps": (outputs["channels_last"][0] - outputs["contiguous"][0]).abs().max().item(),
        "vae_decode": (outputs["channels_last"][1] - outputs["contiguous"][1]).abs().max().item(),
    }
    print(
        json.dumps(
            {
                "size": args.size,
                "batch": args.batch,
                "latent": args.latent,
                "threads": args.threads,
                "rounds": args.rounds,
                "best_seconds": best,
                "channels_last_speedup": ratios,
                "max_abs_difference": diff,
                "loadavg": os.getloadavg(),
            }
        )
    )


if __name__ == "__main__":
    main()
