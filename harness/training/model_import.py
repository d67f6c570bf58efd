"""`decodiff model import`: the authors' released DeCo-Diff checkpoint (or an LDM one) as a
checkpoint of ours, so that `decodiff evaluate --checkpoint` scores it with our exact metrics.

The architecture is read from the tensor shapes (a preset where they match one, else a custom
size recorded in model.json); the load must be complete; the categories name the class-table
rows in order (the first n rows are kept). The checkpoint holds no VAE: evaluation takes it
from the config (vae.pretrained).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decodiff.harness.errors import CheckpointError
from decodiff.harness.progress import log
from decodiff.harness.provenance import code_version
from decodiff.harness.training.checkpoint import build_from_spec, model_spec, save_model
from decodiff.harness.training.init_weights import KINDS, init_digest, plan_for, read_source
from decodiff.models.errors import WeightsError
from decodiff.models.ldm_unet import architecture
from decodiff.models.unet import count_parameters
from decodiff.models.unet_init import apply_weights

KEY = "model import"


def _imported(folder: Path) -> bool:
    try:
        return bool(json.loads((folder / "info.json").read_text()).get("imported_from"))
    except (OSError, ValueError, AttributeError):
        return False


def import_checkpoint(
    file: Path, categories: list[str], out: Path, *, heads: int | None = None, latent: int = 32
) -> dict[str, Any]:
    """Write `out` (a checkpoint folder of ours) from `file`; returns what was loaded."""
    file, out = Path(file), Path(out)
    if out.exists() and not (out / "model.json").is_file() and any(out.iterdir()):
        raise CheckpointError(f"--out {out}: a folder that is not empty and not a checkpoint; choose another")
    if (out / "model.json").is_file() and not _imported(out):  # only an earlier import is replaced
        raise CheckpointError(
            f"--out {out}: holds a checkpoint that was not imported (a trained model?); choose another folder"
        )
    if not categories or len(set(categories)) != len(categories):
        raise CheckpointError(
            f"--categories {','.join(categories)}: give each category once, in the order of the "
            f"checkpoint's class table"
        )
    src = read_source(file, KEY)
    if src.ldm is None:
        raise CheckpointError(
            f"{file}: a {KINDS[src.kind]}; import reads the authors' or an LDM checkpoint "
            f"(model.init_from takes this one as it is)"
        )
    try:
        arch = architecture(src.ldm, heads)
    except WeightsError as exc:
        raise WeightsError(f"{file}: {exc}") from None
    if src.ldm.class_table is None:
        raise CheckpointError(
            f"{file}: no class table (cond_stage_model.embedding.weight): not a class-conditional DeCo-Diff model"
        )
    if len(categories) > arch["num_classes"]:
        raise CheckpointError(
            f"--categories names {len(categories)} categories, but {file} has a class table of "
            f"{arch['num_classes']} rows"
        )
    spec = model_spec(arch["size"], len(categories), True, arch["latent_channels"], latent, None, list(categories))
    if arch["size"] == "custom":
        spec["preset"] = arch["preset"]
    model = build_from_spec(spec)
    plan = plan_for(src, model, list(categories))
    rep = plan.report
    if not rep.full:
        raise CheckpointError(f"{KEY}: {rep.line()} (the UNet read from its shapes: {arch['size']} {arch['preset']})")
    apply_weights(model, plan)
    digest = init_digest(file, KEY)
    record = {"from": str(file), "sha256": digest, **rep.to_json()}
    info = {
        "method": "deco-diff",
        "imported_from": str(file.resolve()),
        "format": src.kind,
        "size": arch["size"],
        "steps": None,
        "code_version": code_version(),
        "init": record,
    }
    save_model(out, model, spec, info)
    log(f"model import: {rep.line()}; {rep.rows_line()}; UNet {arch['size']} {arch['preset']} -> {out}")
    return {
        "checkpoint": str(out),
        "format": src.kind,
        "size": arch["size"],
        "preset": arch["preset"],
        "classes": list(categories),
        "class_rows": rep.class_rows,
        "class_rows_in_file": rep.class_rows_in_file,
        "parameters": count_parameters(model),
        "sha256": digest,
        **rep.counts(),
    }
