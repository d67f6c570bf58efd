"""What the augmentation under the latent cache costs (issue 12, item 3), side by side in one process.

Three ways to train with the published augmentation (+-4 px translation with p = 0.5, drawn afresh
for every sample):
- `train.latent_cache=false`: the frozen VAE encodes the translated crop at every step (exact);
- `train.cache_augment=exact`: the cache holds the encoding of every distinct shift (81 per image,
  x 2 with VisA's rotations) and each sample reads the one it draws (exact);
- `train.cache_augment=variants`: the cache holds K = 4 fixed draws per image (not exact).
Their costs are VAE encodes (once per image and variant for a cache; once per sample and epoch
without one) against the UNet's training compute (forward + backward per sample and epoch), and
the cache's bytes. This script measures the encoder's and the UNet's seconds per image in
interleaved rounds (the fastest round counts: other load on a shared machine only slows rounds
down) and derives the ratios for a training of E epochs:

    encode share of the training compute = encodes per image / (E x UNet seconds per sample / encode seconds)

Two settings: the demo (its shipped f8-small VAE at 128 px, UNet `demo`, E = 110: 1,100 steps of
32 over 320 images) and the Stable-Diffusion KL-f8 architecture (random weights: speed only) at
256 px with UNet L, the paper's (E = 800, MVTec-AD). Weights are untrained: only speed counts.

    python benchmarks/augment_cache_cost.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch


def sd_vae():
    from diffusers import AutoencoderKL

    from decodiff.models.vae import FrozenVAE

    torch.manual_seed(0)
    n = 4  # the sd-vae-ft-ema architecture (diffusers' AutoencoderKL with SD's block widths)
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        layers_per_block=2,
        latent_channels=4,
    )
    return FrozenVAE(vae, 0.18215, "SD KL-f8 architecture, random weights")


def demo_vae():
    from decodiff.harness.training.vae_fit import resolve_pretrained
    from decodiff.models.vae import load_vae

    return load_vae(resolve_pretrained("builtin:demo-vae"))


def unet_step(model: torch.nn.Module, opt: torch.optim.Optimizer, z: torch.Tensor) -> None:
    t = torch.randint(0, 10, (z.shape[0],))
    cls = torch.zeros(z.shape[0], dtype=torch.long)
    loss = model(z, t, cls).square().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(
    name: str, vae, size: int, unet_size: str, epochs: int, images: int, batch: int, rounds: int, variants: int
) -> dict:
    from decodiff.models.unet import build_unet

    latent = vae.latent_size(size)
    model = build_unet(unet_size, num_classes=15, sample_size=latent)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size) * 2 - 1
    z = torch.randn(batch, vae.latent_channels, latent, latent)
    encode, train = [], []
    with torch.no_grad():
        vae.encode_dist(x)  # warm-up
    unet_step(model, opt, z)
    for _ in range(rounds):  # interleaved: encoder, then UNet, each round
        with torch.no_grad():
            encode.append(timed(lambda: vae.encode_dist(x)) / batch)
        train.append(timed(lambda: unet_step(model, opt, z)) / batch)
    e, u = min(encode), min(train)
    shifts = 81
    per_variant = 2 * vae.latent_channels * latent * latent * 4  # mean and std, float32
    return {
        "setting": name,
        "image_size": size,
        "latent": [vae.latent_channels, latent, latent],
        "unet": unet_size,
        "epochs": epochs,
        "train_images": images,
        "encode_seconds_per_image": round(e, 5),
        "unet_train_seconds_per_sample": round(u, 5),
        "encode_over_unet": round(e / u, 4),
        # encoder time as a share of the UNet's training compute over the whole training
        "share_no_cache": round(epochs * e / (epochs * u), 4),
        "share_exact_cache": round(shifts * e / (epochs * u), 4),
        "share_exact_cache_rot180": round(2 * shifts * e / (epochs * u), 4),
        "share_variants_cache": round(variants * e / (epochs * u), 4),
        "cache_bytes_per_image": {
            "exact": shifts * per_variant,
            "exact_rot180": 2 * shifts * per_variant,
            "variants": variants * per_variant,
        },
        "cache_gb_for_train_set": {
            "exact": round(images * shifts * per_variant / 1e9, 3),
            "variants": round(images * variants * per_variant / 1e9, 3),
        },
        "rounds": rounds,
        "batch": batch,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    ap.add_argument("--skip-sd", action="store_true", help="the demo setting only")
    ap.add_argument("--json", help="also write the result to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = [measure("demo", demo_vae(), 128, "demo", 110, 320, args.batch, args.rounds, 4)]
    if not args.skip_sd:  # MVTec-AD: 3,629 training images, 800 epochs
        rows.append(
            measure("sd-vae L (MVTec-AD)", sd_vae(), 256, "L", 800, 3629, max(1, args.batch // 2), args.rounds, 4)
        )
    out = {
        "benchmark": "augment_cache_cost",
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "rows": rows,
    }
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
