"""`decodiff model info`: parameters and GFLOPs of a UNet preset."""
from __future__ import annotations

import argparse

from decodiff.harness.commands.common import add_json_arg, print_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="model presets", description="Model tools.")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    i = msub.add_parser("info", help="parameters and GFLOPs per sample of a UNet preset")
    i.add_argument("--size", default="L", help="preset: tiny, demo, XS, S, M, L, XL (default L)")
    i.add_argument("--classes", type=int, default=15, help="number of categories (default 15, MVTec-AD)")
    i.add_argument("--latent", type=int, default=32, help="latent size (default 32: 256 px with a KL-f8 VAE)")
    add_json_arg(i)
    i.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from decodiff.harness.cli import UsageError
    from decodiff.models.unet import UNET_PRESETS, build_unet, count_parameters
    from decodiff.models.flops import forward_gflops

    if args.size not in UNET_PRESETS:
        raise UsageError(f"--size {args.size}: unknown preset (choose from {', '.join(UNET_PRESETS)})")
    model = build_unet(args.size, num_classes=args.classes, sample_size=args.latent)
    info = {"size": args.size, "parameters": count_parameters(model), "classes": args.classes,
            "latent": [4, args.latent, args.latent], "gflops_per_sample": round(forward_gflops(model, args.latent), 2),
            "preset": UNET_PRESETS[args.size]}
    if args.json:
        print_json(info)
    else:
        print(f"UNet {args.size}: {info['parameters'] / 1e6:.1f}M parameters, {info['gflops_per_sample']} GFLOPs per "
              f"sample (forward, latent 4x{args.latent}x{args.latent}, {args.classes} classes)")
    return 0
