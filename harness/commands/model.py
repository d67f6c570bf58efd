"""`decodiff model info`: parameters and GFLOPs of a UNet preset (or of all of them);
`decodiff model import`: the authors' released checkpoint as a checkpoint of ours."""

from __future__ import annotations

import argparse
from pathlib import Path

from decodiff.harness.commands.common import add_actions, add_json_arg, print_json
from decodiff.harness.errors import UsageError

HELP = "model presets; the authors' weights as a checkpoint of ours"
DESCRIPTION = "Model tools."


def add_arguments(p: argparse.ArgumentParser) -> None:
    msub = add_actions(p, "model_command")
    i = msub.add_parser(
        "info",
        help="parameters and GFLOPs per sample of a UNet preset",
        description="Parameters and GFLOPs per sample of a UNet preset, counted without allocating "
        "weights; the published parameter counts are shown beside ours.",
    )
    i.add_argument("--size", default="L", help="preset: tiny, demo, XS, S, M, L, XL, or `all` (default L)")
    i.add_argument("--classes", type=int, default=15, help="number of categories (default 15, MVTec-AD)")
    i.add_argument("--latent", type=int, default=32, help="latent size (default 32: 256 px with a KL-f8 VAE)")
    i.add_argument("--unconditional", action="store_true", help="one learned token instead of the category")
    add_json_arg(i)
    i.set_defaults(func=run_info)
    m = msub.add_parser(
        "import",
        help="the authors' DeCo-Diff checkpoint (or an LDM one) as a checkpoint of ours",
        description="Turn the authors' released checkpoint ({'model': state_dict}) or an LDM "
        "checkpoint into a checkpoint folder of this project, for `decodiff evaluate "
        "--checkpoint DIR` "
        "(with vae.pretrained= the VAE it was trained with). The architecture is read from "
        "the tensor shapes; the load must be complete.",
    )
    m.add_argument(
        "file", type=Path, help="the checkpoint file (.pt/.pth/.ckpt read with weights_only=True, or .safetensors)"
    )
    m.add_argument(
        "--categories",
        required=True,
        help="comma-separated category names of the class-table rows, in order (the first n rows are kept)",
    )
    m.add_argument("--out", required=True, type=Path, help="checkpoint folder to write")
    m.add_argument(
        "--heads",
        type=int,
        default=None,
        help="attention heads at the first level: needed only where the shapes match no preset",
    )
    m.add_argument("--latent", type=int, default=32, help="latent size it was trained at (default 32: 256 px)")
    add_json_arg(m)
    m.set_defaults(func=run_import)


def preset_info(size: str, classes: int, latent: int, conditional: bool) -> dict:
    from decodiff.models.flops import preset_cost
    from decodiff.models.unet import PUBLISHED_PARAMETERS, UNET_PRESETS, level_heads

    cost = preset_cost(size, num_classes=classes, latent=latent, conditional=conditional)
    preset = UNET_PRESETS[size]
    info = {
        "size": size,
        "parameters": cost["parameters"],
        "classes": classes,
        "conditional": conditional,
        "latent": [4, latent, latent],
        "gflops_per_sample": round(cost["gflops_forward"], 2),
        "gflops_train_step_per_sample": round(cost["gflops_train_step"], 2),
        "heads_per_level": list(level_heads(preset)),
        "preset": preset,
    }
    published = PUBLISHED_PARAMETERS.get(size)
    if published and classes == 15 and conditional:
        info["published_parameters"] = published
        info["difference_percent"] = round(100 * (cost["parameters"] - published) / published, 3)
    return info


def run_info(args: argparse.Namespace) -> int:
    from decodiff.models.unet import UNET_PRESETS

    sizes = list(UNET_PRESETS) if args.size == "all" else [args.size]
    if args.size != "all" and args.size not in UNET_PRESETS:
        raise UsageError(f"--size {args.size}: unknown preset (choose from {', '.join(UNET_PRESETS)}, or all)")
    if args.classes < 1 or args.latent < 1:
        raise UsageError("--classes and --latent must be positive")
    infos = [preset_info(s, args.classes, args.latent, not args.unconditional) for s in sizes]
    if args.json:
        print_json(infos[0] if len(infos) == 1 else {"presets": infos})
        return 0
    for info in infos:
        pub = ""
        if "published_parameters" in info:
            pub = f" (published {info['published_parameters'] / 1e6:.1f}M, {info['difference_percent']:+.2f}%)"
        kind = "class-conditional" if info["conditional"] else "unconditional"
        print(
            f"UNet {info['size']}: {info['parameters'] / 1e6:.1f}M parameters{pub}, {info['gflops_per_sample']} GFLOPs "
            f"per sample forward, ~{info['gflops_train_step_per_sample']} per training sample (latent "
            f"4x{args.latent}x{args.latent}, {args.classes} classes, {kind})"
        )
    return 0


def run_import(args: argparse.Namespace) -> int:
    from decodiff.harness.training.model_import import import_checkpoint

    categories = [c.strip() for c in args.categories.split(",") if c.strip()]
    if (args.heads is not None and args.heads < 1) or args.latent < 1:
        raise UsageError("--heads and --latent must be positive")
    result = import_checkpoint(args.file, categories, args.out, heads=args.heads, latent=args.latent)
    if args.json:
        print_json(result)
    else:
        print(result["checkpoint"])
    return 0
