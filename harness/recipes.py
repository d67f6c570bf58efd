"""Named recipes: the full set of settings behind a published result, chosen with one key
(`recipe: paper | authors-code | custom`).

How a recipe combines with presets and overrides: the recipe supplies values; every key that a
preset (with its `extends` chain), a sweep (`set`, data-set entries, grid axes) or the command line
sets explicitly wins. So a config resolves as: field defaults <- recipe <- preset <- overrides.
A config's departures are the recipe keys whose resolved value differs from the recipe's: each of
them was set explicitly, and the resolved config, the run report and MLflow list them.

- `paper`: the settings behind the paper's Table 1 (= appendix Table 2's starred rows), from the
  paper's text and tables; where the paper is silent or ambiguous, from the authors' released code
  (whose runs produced the published numbers).
- `authors-code`: the defaults of the authors' released code.
- `custom`: no recipe: the config's own defaults and whatever the preset sets (the demo).

Data-set-specific settings (epochs: 800 MVTec-AD / 200 VisA; VisA's 180-degree rotations; the UNet
size per data set) are not part of a recipe: the paper-main sweep sets them per data set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

RECIPE_NAMES = ("paper", "authors-code", "custom")
DEFAULT_RECIPE = "custom"

PAPER = "paper"
CODE = "released code"


@dataclass(frozen=True)
class Setting:
    key: str  # dotted config key
    value: Any
    source: str  # where the value comes from


def _s(key: str, value: Any, source: str) -> Setting:
    return Setting(key, value, source)


# Settings both recipes share (same value, same source).
_COMMON = (
    _s("data.resize", 288, f"{CODE}: resize to 288 (aspect ratio not kept) (paper: silent)"),
    _s("data.crop", 256, f"{CODE}: center crop 256 (paper: silent)"),
    _s("process.steps", 10, "paper Sec. 5.1 (T = 10); code"),
    _s("process.schedule", "squaredcos_cap_v2", "paper Sec. 5.1 (squared-cosine beta schedule [18]); code"),
    _s("process.r_mask", 0.7, "paper Sec. 5.1 (r_mask ~ U[0, 0.7]); appendix Table 2 (starred); code"),
    _s("process.r_shuffle", 0.3, "paper Sec. 5.1 (r_shuffle ~ U[0, 0.3]); appendix Table 2 (starred); code"),
    _s("model.conditional", True, f"{CODE}: the category as one cross-attention token"),
    _s("model.init", "ldm", "paper Sec. 5.1 (the UNet of LDM [21]): LDM's zero-initialised output layers"),
    _s("train.batch_size", 128, "paper Sec. 5.1 (batch size 128); code"),
    _s("train.grad_accum", 2, f"{CODE}: 2 accumulation steps"),
    _s("train.lr", 1e-4, "paper Sec. 5.1 (initial learning rate 1e-4); code"),
    _s("train.min_lr", 1e-5, "paper Sec. 5.1 (minimum 1e-5); code"),
    _s("train.weight_decay", 1e-4, f"{CODE}: AdamW weight decay 1e-4 (paper: AdamW, no decay given)"),
    _s(
        "train.lr_schedule",
        "published",
        "paper Sec. 5.1 (cosine annealing with warm-up); code: per epoch, length 1.5 x epochs",
    ),
    _s("train.warmup", 10, f"{CODE}: 10 warm-up epochs"),
    _s("train.mixed_precision", "no", f"{CODE}: fp32"),
    _s("train.ema", None, f"{CODE}: no EMA"),
    _s("train.translate", 4, f"{CODE}: random translation of up to +-4 px with p = 0.5 (paper: silent)"),
    _s(
        "train.cache_augment",
        "exact",
        "equal in distribution to the code's fresh draw per sample (harness: every distinct translation cached)",
    ),
    _s("infer.reverse_steps", 5, "paper Table 3 (the row that equals Table 1); code default"),
    _s("infer.start_step", None, "the step mapping decides"),
    _s("infer.strategy", "zt-1", "paper Eq. 14; Table 3"),
    _s("infer.combination", "geometric", "paper Eq. 15; Table 4"),
    _s("infer.gamma_p", 0.4, "paper appendix Table 2 (starred); code"),
    _s("infer.sigma_pixel", 3.0, f"{CODE}: Gaussian blur sigma 3 on the pixel map (paper: silent)"),
    _s("infer.sigma_latent", 1.0, f"{CODE}: Gaussian blur sigma 1 on the 32x32 latent map (paper: silent)"),
    _s("infer.pixel_reference", "vae", f"{CODE}: against the VAE reconstruction of the input (Eq. 15 writes x_0)"),
    _s("infer.image_score", "max", f"{CODE}: maximum of the map (paper: silent)"),
    _s("infer.image_map", "map", f"{CODE}: the score is taken from the anomaly map of Eq. 15 (paper: silent)"),
    _s(
        "metrics.aupro_protocol",
        "deco-diff-code",
        f"{CODE}: 200 thresholds, FPR axis rescaled by the largest kept FPR (paper: AUPRO, definition not given)",
    ),
    _s("metrics.fpr_limit", 0.3, "paper (AUPRO up to FPR 0.3, as [7, 8]); code"),
    _s(
        "metrics.image_label",
        "mask-max",
        f"{CODE}: an image is anomalous when its cropped mask has a positive pixel (paper: silent)",
    ),
)

_PAPER_ONLY = (
    _s("process.patch_sizes", [1, 2, 4, 8], "paper Sec. 5.1 ({1, 2, 4, 8}); appendix Table 2 (starred)"),
    _s(
        "process.patch_probs",
        [0.3333, 0.2778, 0.2222, 0.1667],
        "not published: the code's weights .30/.25/.20/.15 renormalised over the four sizes",
    ),
    _s("infer.gamma_l", 0.4, "paper appendix Table 2 (starred: Table 1's numbers); Sec. 5.2.3 (gamma_l = 0.4)"),
    _s(
        "infer.step_mapping",
        "from-top",
        "paper Fig. 2, Sec. 4 (the correction starts at T); DDIM's linear "
        "sub-sequence [28]: 5 steps -> t = 9, 7, 5, 3, 1; 1 step -> t = 9",
    ),
)

_CODE_ONLY = (
    _s("process.patch_sizes", [1, 2, 4, 8, 16], f"{CODE}: sizes up to 16 latent cells"),
    _s("process.patch_probs", [0.30, 0.25, 0.20, 0.15, 0.10], f"{CODE}"),
    _s("infer.gamma_l", 0.2, f"{CODE} (appendix Table 2's text calls it best)"),
    _s(
        "infer.step_mapping",
        "respacing",
        f"{CODE}: guided-diffusion's DDIM respacing: 5 steps -> t = 8, 6, 4, 2, 0; 1 step -> t = 0",
    ),
)


def _ordered(*parts: tuple[Setting, ...]) -> tuple[Setting, ...]:
    settings = [s for part in parts for s in part]
    return tuple(sorted(settings, key=lambda s: s.key))


RECIPES: dict[str, tuple[Setting, ...]] = {
    "paper": _ordered(_COMMON, _PAPER_ONLY),
    "authors-code": _ordered(_COMMON, _CODE_ONLY),
    "custom": (),
}


def recipe_values(name: str) -> dict[str, Any]:
    """The recipe's settings as {dotted key: value}; KeyError for an unknown name."""
    return {s.key: s.value for s in RECIPES[name]}


def recipe_tree(name: str) -> dict[str, Any]:
    """The recipe's settings as nested sections (what a preset would write)."""
    tree: dict[str, Any] = {}
    for key, value in recipe_values(name).items():
        node = tree
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = json.loads(json.dumps(value))
    return tree


def _same(a: Any, b: Any) -> bool:
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return abs(float(a) - float(b)) <= 1e-12 * max(1.0, abs(float(a)))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def departures(name: str, resolved: dict[str, Any]) -> list[dict[str, Any]]:
    """The recipe keys whose value in `resolved` (a config as nested dicts) differs from the
    recipe's: [{"key", "recipe", "value"}], in key order."""
    out = []
    for s in RECIPES[name]:
        node: Any = resolved
        for part in s.key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if not _same(node, s.value):
            out.append({"key": s.key, "recipe": s.value, "value": node})
    return out


def departures_text(name: str, items: list[dict[str, Any]]) -> str:
    """One line: `paper (as published)` or `paper; departs in infer.gamma_l=0.2 (paper: 0.4), ...`."""
    if name == "custom":
        return "custom (no recipe: the config's own values)"
    if not items:
        return f"{name} (no departures)"
    parts = [f"{d['key']}={json.dumps(d['value'])} ({name}: {json.dumps(d['recipe'])})" for d in items]
    return f"{name}; departs in " + ", ".join(parts)


def recipe_table(name: str) -> str:
    """The recipe as a Markdown table (the README shows these; a test keeps them in step)."""
    rows = ["| setting | value | source |", "|---|---|---|"]
    for s in RECIPES[name]:
        rows.append(f"| `{s.key}` | `{json.dumps(s.value)}` | {s.source} |")
    return "\n".join(rows)
