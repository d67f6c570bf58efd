"""VAE encode/decode time per image against the number of images per call (`vae.micro_batch`,
issue 16), side by side in one process, rounds interleaved, best of N; and the largest difference of
each split's outputs from the whole batch's (the same maths: zero, or float rounding where the
kernels take another path).

On a CPU a whole evaluation batch through the VAE spends its time moving full-resolution
activations through memory: 32 demo images at 128 px are 32 MB per 16-channel activation, beyond
the caches, and a decode of 32 in one call took twice as long as eight calls of 4. This script is the
evidence for `models/vae.auto_micro_batch`'s rule, and the check of it on another machine.

    python benchmarks/vae_micro_batch.py                                   # the shipped demo VAE, 128 px, batch 32
    python benchmarks/vae_micro_batch.py --vae sd --size 256 --batch 4 --splits 1 2 4 --rounds 2
    python benchmarks/vae_micro_batch.py --vae f8-small --size 256 --batch 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from decodiff.models.layout import to_layout
from decodiff.models.vae import FrozenVAE, auto_micro_batch, build_small_vae, load_vae

ROOT = Path(__file__).resolve().parents[1]
# Stable Diffusion's VAE architecture (sd-vae-ft-ema), random weights: its speed, not its output
SD_VAE = dict(
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    latent_channels=4,
)


def make_vae(name: str) -> FrozenVAE:
    if name == "demo":
        return load_vae(ROOT / "models" / "weights" / "demo-vae")
    torch.manual_seed(0)
    net = AutoencoderKL(**SD_VAE) if name == "sd" else build_small_vae(name)
    return FrozenVAE(net, 0.18215, source=f"{name} (random weights)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", default="demo", help="demo (the shipped demo VAE), sd, or a small preset (f8-small, ...)")
    ap.add_argument("--size", type=int, default=128, help="image size in pixels")
    ap.add_argument("--batch", type=int, default=32, help="images per evaluation batch")
    ap.add_argument("--splits", type=int, nargs="+", default=[0, 2, 4, 8, 16], help="images per call (0: whole batch)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument(
        "--contiguous", action="store_true", help="NCHW weights (default: channels-last, as evaluation on CPU)"
    )
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    vae = to_layout(make_vae(args.vae), not args.contiguous)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g) * 2 - 1
    with torch.no_grad():
        vae.micro_batch = 0
        ref_z, ref_x = vae.encode(x), None
        ref_x = vae.decode(ref_z)
        best: dict[tuple[str, int], float] = {}
        diff: dict[int, float] = {}
        for r in range(args.rounds):
            for split in args.splits if r % 2 == 0 else args.splits[::-1]:
                vae.micro_batch = split
                t = time.perf_counter()
                z = vae.encode(x)
                te = time.perf_counter() - t
                t = time.perf_counter()
                out = vae.decode(ref_z)
                td = time.perf_counter() - t
                for part, sec in (("encode", te), ("decode", td)):
                    best[part, split] = min(best.get((part, split), float("inf")), sec)
                diff[split] = max((z - ref_z).abs().max().item(), (out - ref_x).abs().max().item())
            print(f"round {r + 1} done", flush=True)
    auto = auto_micro_batch(vae, x)
    print(
        f"\n{args.vae} VAE, {args.size} px, batch {args.batch}, {args.threads} threads, "
        f"{'contiguous' if args.contiguous else 'channels-last'}; auto micro-batch here: {auto or 'whole batch'}"
    )
    print("| images per call | encode ms/image | decode ms/image | decode speed-up | max |diff| vs whole |")
    print("|---|---|---|---|---|")
    whole = best["decode", 0] if 0 in args.splits else None
    rows = []
    for split in args.splits:
        enc, dec = best["encode", split] / args.batch * 1e3, best["decode", split] / args.batch * 1e3
        up = f"{whole / best['decode', split]:.2f}x" if whole else "-"
        print(f"| {split or 'whole'} | {enc:.1f} | {dec:.1f} | {up} | {diff[split]:.1e} |")
        rows.append({"split": split, "encode_ms": enc, "decode_ms": dec, "max_diff": diff[split]})
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "auto": auto, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
