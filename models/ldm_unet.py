"""The LDM "openaimodel" UNet layout, in which the authors' DeCo-Diff checkpoints and LDM
checkpoints store their weights, against ours (diffusers' UNet2DConditionModel + a class table).

Tensor names are mapped by diffusers' own LDM converter; which file tensor became which of
ours is followed by tensor identity, so a tensor the converter passed over (a renamed one) is
named, never dropped silently. The architecture is read back from the tensor shapes, except the
attention heads, which no shape fixes: they come from a matching preset or are given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

from decodiff.models.errors import WeightsError
from decodiff.models.unet_presets import UNET_PRESETS

LDM_PREFIX = "model.diffusion_model."  # the UNet inside an LDM checkpoint
CLASS_TABLE = "cond_stage_model.embedding.weight"  # the class-token table (DeCo-Diff, class-conditional LDMs)
PUBLISHED_DROPOUT = 0.4  # the authors' UNets; shapes do not record it (it matters for training only)


@dataclass
class LDMParts:
    """An LDM-layout state dict split into what our model takes and what it leaves."""

    unet: dict[str, torch.Tensor]  # UNet tensors, names without the LDM prefix
    class_table: torch.Tensor | None
    ignored: list[str] = field(default_factory=list)  # not the UNet (VAE, EMA copy, text encoder ...)


def split_ldm(state: dict[str, torch.Tensor], prefixed: bool) -> LDMParts:
    """`prefixed`: an LDM checkpoint (UNet under model.diffusion_model., the rest ignored);
    else the authors' layout, where every tensor but the class table is the UNet's."""
    unet, ignored = {}, []
    for k, v in state.items():
        if k == CLASS_TABLE:
            continue
        if not prefixed:
            unet[k] = v
        elif k.startswith(LDM_PREFIX):
            unet[k[len(LDM_PREFIX) :]] = v
        else:
            ignored.append(k)
    return LDMParts(unet, state.get(CLASS_TABLE), ignored)


def ldm_to_ours(
    unet: dict[str, torch.Tensor], unet_config: dict[str, Any], prefix: str = "unet."
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """The UNet tensors under our names (`prefix` + diffusers name), where each came from
    (our name -> LDM name), and the LDM tensors that became none of ours (sorted)."""
    name_of = {id(v): k for k, v in unet.items()}
    converted = convert_ldm_unet_checkpoint({LDM_PREFIX + k: v for k, v in unet.items()}, dict(unet_config))
    ours, origin = {}, {}
    for k, v in converted.items():
        if v is None or id(v) not in name_of:
            continue
        ours[prefix + k] = v
        origin[prefix + k] = name_of[id(v)]
    used = set(origin.values())
    return ours, origin, sorted(k for k in unet if k not in used)


def _shape(unet: dict[str, torch.Tensor], key: str) -> tuple[int, ...]:
    if key not in unet:
        raise WeightsError(f"no tensor {key}: not the LDM UNet layout")
    return tuple(unet[key].shape)


def architecture(parts: LDMParts, heads: int | None = None) -> dict[str, Any]:
    """Our preset (as a dict), latent channels and class count of an LDM-layout UNet.
    `heads` (attention heads at the first level) where no preset matches the shapes."""
    u = parts.unet
    channels, latent_channels = _shape(u, "input_blocks.0.0.weight")[:2]
    n_in = 1 + max(int(m.group(1)) for k in u if (m := re.match(r"input_blocks\.(\d+)\.", k)))
    levels = 1 + sum(f"input_blocks.{i}.0.op.weight" in u for i in range(n_in))
    layers, rest = divmod(n_in - 1 - (levels - 1), levels)
    if rest or layers < 1:
        raise WeightsError(f"{n_in} input blocks over {levels} levels: not the LDM UNet layout")
    first = [1 + lvl * (layers + 1) for lvl in range(levels)]  # each level's first res block
    widths = [_shape(u, f"input_blocks.{i}.0.out_layers.3.weight")[0] for i in first]
    if any(w % channels for w in widths):
        raise WeightsError(f"level widths {widths} are not multiples of the base width {channels}")
    attention = tuple(f"input_blocks.{i}.1.proj_in.weight" in u for i in first)
    keys = [k for k in u if k.endswith("attn2.to_k.weight")]
    if keys:
        context_dim = _shape(u, keys[0])[1]
    elif parts.class_table is not None:
        context_dim = int(parts.class_table.shape[1])
    else:
        raise WeightsError("neither cross-attention nor a class table: the context width cannot be read")
    preset = dict(
        channels=channels,
        heads=heads,
        context_dim=context_dim,
        mult=tuple(w // channels for w in widths),
        attention=attention,
        layers=layers,
        dropout=PUBLISHED_DROPOUT,
    )
    size = matching_preset(preset)
    if size is not None:
        preset["heads"] = UNET_PRESETS[size]["heads"]
    elif heads is None:
        raise WeightsError(
            f"base width {channels}, multipliers {preset['mult']}, context {context_dim} match no "
            f"preset, and the number of attention heads is not in the tensor shapes: give it (heads at "
            f"the first level; the authors' rule: channels per head = base width / heads)"
        )
    check_heads(u, preset, first)
    classes = int(parts.class_table.shape[0]) if parts.class_table is not None else 1
    return {"size": size or "custom", "preset": preset, "latent_channels": latent_channels, "num_classes": classes}


def matching_preset(preset: dict[str, Any]) -> str | None:
    """The preset with these shapes (and these heads, when given); None for a custom size."""
    for name, p in UNET_PRESETS.items():
        same = all(
            tuple(p[k]) == tuple(preset[k]) if k in ("mult", "attention") else p[k] == preset[k]
            for k in ("channels", "context_dim", "mult", "attention", "layers")
        )
        if same and preset.get("heads") in (None, p["heads"]):
            return name
    return None


def check_heads(unet: dict[str, torch.Tensor], preset: dict[str, Any], first: list[int]) -> None:
    """Where heads x channels-per-head is narrower than the block (XL), proj_in shows it: the
    heads must reproduce that width."""
    per_head = preset["channels"] // preset["heads"] if preset["heads"] else 0
    if per_head < 1:
        raise WeightsError(f"heads {preset['heads']}: at most {preset['channels']} (the base width)")
    for lvl, i in enumerate(first):
        key = f"input_blocks.{i}.1.proj_in.weight"
        if key in unet:
            width = preset["channels"] * preset["mult"][lvl]
            inner = (width // per_head) * per_head
            if unet[key].shape[0] != inner:
                raise WeightsError(
                    f"heads {preset['heads']} give attention {inner} wide at level {lvl}, but {key} "
                    f"is {unet[key].shape[0]} wide"
                )
