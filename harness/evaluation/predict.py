"""Scoring new images with a trained checkpoint (`decodiff predict`): anomaly maps (float32 .npy
and PNG overlays), image scores in a CSV, and a normal/anomalous decision at a threshold chosen
without test labels, stated in the output with how it was chosen:

- given (`threshold=`), or
- a high quantile (default 0.99) of the scores of normal images: a folder of held-out normal
  images (`normal=`), else the checkpoint's own training images of the category (seen in
  training, so their scores run low and the threshold errs towards false alarms: said so).

Images are streamed in batches with progress. Each is preprocessed as the training images were
(the checkpoint's resolved config: resize, crop); one of another size is brought to the model's
input size and counted, grey-scale and alpha images are converted to RGB and counted, and an
unreadable file is skipped and listed; with no readable image at all, one DataError.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from decodiff.datasets.files import mark_used, write_atomic
from decodiff.datasets.imageio import DataError
from decodiff.datasets.shard_record import decode_record
from decodiff.datasets.stream import ShardStream
from decodiff.datasets.transforms import Preprocess
from decodiff.harness.config import Config, ConfigError, build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.evaluation.evaluate import conditioned, inference_layout
from decodiff.harness.methods import make_process, map_settings, reconstruction_settings, score_text
from decodiff.harness.progress import Progress
from decodiff.harness.training.checkpoint import CheckpointError, load_model
from decodiff.harness.training.distributed import device_for
from decodiff.harness.training.vae_fit import resolve_pretrained
from decodiff.models.anomaly_map import scored_maps
from decodiff.models.reconstruction import reconstruct
from decodiff.models.unet import DeviationUNet
from decodiff.models.vae import FrozenVAE, load_vae

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class Threshold:
    value: float
    how: str  # how it was chosen, in words (printed in the output)


@dataclass
class Scorer:
    """A checkpoint ready to score images of one category."""

    cfg: Config
    model: DeviationUNet | None
    vae: FrozenVAE
    category: str
    class_id: int
    size: int  # the model's input size (pixels)
    checkpoint: Path

    @property
    def preprocess(self) -> Preprocess:
        return Preprocess(resize=self.cfg.data.resize, crop=self.cfg.data.crop)

    @torch.no_grad()
    def score(self, x: torch.Tensor, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """[B, 3, H, W] in [-1, 1] -> (maps [B, H, W] float32, scores [B])."""
        device = device_for(self.cfg)
        x = x.to(device)
        cls = torch.full((x.shape[0],), self.class_id, device=device, dtype=torch.long)
        rec = reconstruct(
            x,
            self.vae,
            conditioned(self.model, cls),
            make_process(self.cfg),
            reconstruction_settings(self.cfg),
            keys=list(keys),
        )
        s = map_settings(self.cfg)
        maps, scores = scored_maps(rec.x_rec, rec.x_ref, rec.z0_hat, rec.z, s)
        return maps.float().cpu().numpy(), scores.float().cpu().numpy()


@dataclass
class PredictResult:
    out: Path
    threshold: Threshold
    scored: int
    anomalous: int
    skipped: list[dict[str, str]]
    notes: list[str]
    summary: dict[str, Any] = field(default_factory=dict)


def load_scorer(
    checkpoint: Path, overrides: Sequence[str] = (), preset: str | None = None, category: str | None = None
) -> Scorer:
    """The checkpoint, its VAE and the config it was trained with (`preset`/`overrides` on top;
    a checkpoint written before configs were recorded needs `preset`)."""
    checkpoint = Path(checkpoint)
    model, spec, info = load_model(checkpoint)
    if preset is None and "config" not in info:
        raise ConfigError(
            f"--checkpoint {checkpoint}: it does not record its config (trained by an older version); "
            f"pass --config PRESET_OR_YAML as it was trained"
        )
    cfg = build_config(preset, list(overrides), base=None if preset else info["config"])
    if info.get("method", "deco-diff") != cfg.method:
        raise CheckpointError(
            f"--checkpoint {checkpoint}: trained as method={info.get('method')}, the config says method={cfg.method}"
        )
    classes = list(spec["classes"])
    if category is None:
        if len(classes) > 1 and spec.get("conditional", True):
            raise ConfigError(
                f"--category: the model knows {len(classes)} categories ({', '.join(classes)}); name "
                f"the one the images belong to"
            )
        category = classes[0]
    if category not in classes:
        raise ConfigError(f"--category {category}: not one the model was trained on ({', '.join(classes)})")
    size = cfg.data.crop or cfg.data.resize or 8 * int(spec["sample_size"])
    where = info.get("vae_location")
    if where and Path(where).exists():
        vae = load_vae(Path(where), image_size=size, scale=info.get("vae_scale"), micro_batch=cfg.vae.micro_batch)
    elif cfg.vae.pretrained:
        vae = load_vae(
            resolve_pretrained(cfg.vae.pretrained),
            image_size=size,
            scale=cfg.vae.scale,
            micro_batch=cfg.vae.micro_batch,
        )
    else:
        raise CheckpointError(
            f"--checkpoint {checkpoint}: its VAE ({info.get('vae')}) is not at {where}; pass "
            f"vae.pretrained=DIR with the VAE it was trained with"
        )
    if info.get("vae_fingerprint") and vae.fingerprint and info["vae_fingerprint"] != vae.fingerprint:
        raise CheckpointError(
            f"--checkpoint {checkpoint}: trained with another VAE ({info.get('vae')}) than {vae.source}"
        )
    for used in (checkpoint, where):  # a cached model and VAE read: used (`decodiff cache prune`)
        if used:
            mark_used(used, cfg.run.cache_dir)
    device = device_for(cfg)
    model, vae = model.to(device).eval(), vae.to(device)
    inference_layout(cfg, model, vae, device)  # as `evaluate` computes: the same maps for the same image
    return Scorer(cfg, model, vae, category, classes.index(category), size, checkpoint)


def image_files(inputs: Sequence[Path]) -> list[Path]:
    """Files named, and image files (by suffix) under folders named, in a stable order."""
    files: list[Path] = []
    for p in map(Path, inputs):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            files.append(p)
        else:
            raise DataError(f"{p}: no such file or folder")
    return files


@dataclass
class _Loaded:
    path: Path
    image: torch.Tensor | None = None
    error: str | None = None
    converted: str | None = None  # original mode, when not RGB
    size: tuple[int, int] | None = None  # original (W, H)


def _load(path: Path, pre: Preprocess, size: int) -> _Loaded:
    try:
        with Image.open(path) as img:
            img.load()
            mode, wh = img.mode, img.size
            arr = np.array(img if mode == "RGB" else img.convert("RGB"))
    except Exception as exc:  # any reason PIL cannot read it: skipped and listed, never scored
        return _Loaded(path, error=f"not a readable image ({str(exc).splitlines()[0][:200] or type(exc).__name__})")
    x = pre({"image": arr, "key": str(path), "meta": {"label": 0, "category": "", "defect": ""}})["image"]
    if x.shape[-2:] != (size, size):  # only without data.resize: bring it to the model's input size
        x = torch.nn.functional.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0]
    return _Loaded(path, image=x, converted=None if mode == "RGB" else mode, size=wh)


def _batches(files: Sequence[Path], scorer: Scorer, batch_size: int) -> Iterator[list[_Loaded]]:
    pre = scorer.preprocess
    batch: list[_Loaded] = []
    for f in files:
        batch.append(_load(f, pre, scorer.size))
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def score_files(
    scorer: Scorer, files: Sequence[Path], stage: str = "predict"
) -> Iterator[tuple[_Loaded, np.ndarray | None, float | None]]:
    """(loaded image, map, score) per file, in order; unreadable files come with None."""
    with Progress(stage, total=len(files), unit="img") as prog:
        for batch in _batches(files, scorer, scorer.cfg.infer.batch_size):
            ok = [b for b in batch if b.image is not None]
            maps, scores = (
                scorer.score(torch.stack([b.image for b in ok]), [str(b.path) for b in ok]) if ok else (None, None)
            )
            j = 0
            for b in batch:
                if b.image is None:
                    yield b, None, None
                else:
                    yield b, maps[j], float(scores[j])
                    j += 1
            prog.update(len(batch))


def choose_threshold(
    scorer: Scorer,
    *,
    threshold: float | None = None,
    normal: Sequence[Path] = (),
    quantile: float = 0.99,
    max_train: int = 200,
) -> Threshold:
    """A decision threshold without test labels (see the module's docstring)."""
    if threshold is not None:
        return Threshold(float(threshold), "given (--threshold)")
    if normal:
        files = image_files(normal)
        scores = [s for _, _, s in score_files(scorer, files, "threshold") if s is not None]
        if not scores:
            raise DataError(f"--normal {', '.join(map(str, normal))}: no readable image to set the threshold with")
        return Threshold(
            float(np.quantile(scores, quantile, method="higher")),
            f"the {quantile:g} quantile of the scores of {len(scores)} normal images given with --normal "
            f"(held out from training)",
        )
    scores = _training_scores(scorer, max_train)
    return Threshold(
        float(np.quantile(scores, quantile, method="higher")),
        f"the {quantile:g} quantile of the scores of {len(scores)} normal training images of "
        f"'{scorer.category}' (seen in training, so their scores run low: expect more false alarms "
        f"than {100 * (1 - quantile):g}%; --normal DIR with held-out normal images is better)",
    )


def _training_scores(scorer: Scorer, limit: int) -> list[float]:
    try:
        data = prepare_data(scorer.cfg)
    except (DataError, ConfigError, OSError) as exc:
        raise DataError(
            f"no threshold: the training images of the checkpoint are not available here ({exc}); pass "
            f"--threshold VALUE or --normal DIR (held-out normal images)"
        ) from None
    if scorer.category not in data.manifest.categories:
        raise DataError(
            f"no threshold: the training data here has no category '{scorer.category}'; pass --threshold "
            f"or --normal DIR"
        )
    pre = scorer.preprocess
    xs, keys, scores = [], [], []
    urls = [u for u in data.urls("train")]
    with Progress("threshold", total=min(limit, data.manifest.count("train", [scorer.category])), unit="img") as prog:
        for s in ShardStream(urls, decode=decode_record):
            if s["meta"]["category"] != scorer.category:
                continue
            xs.append(pre(s)["image"])
            keys.append(s["key"])
            if len(xs) == scorer.cfg.infer.batch_size or len(scores) + len(xs) >= limit:
                scores += scorer.score(torch.stack(xs), keys)[1].tolist()
                prog.update(len(xs))
                xs, keys = [], []
            if len(scores) >= limit:
                break
        if xs:
            scores += scorer.score(torch.stack(xs), keys)[1].tolist()
            prog.update(len(xs))
    if not scores:
        raise DataError(f"no threshold: no training images of '{scorer.category}'; pass --threshold or --normal DIR")
    return scores


def overlay(image: torch.Tensor, amap: np.ndarray, threshold: float) -> np.ndarray:
    """HxWx3 uint8: the image with the map in the 'jet' colours over it, scaled so that the
    threshold sits mid-scale (blue: far below, red: twice the threshold or more); a threshold of 0
    scales to the map's own maximum."""
    rgb = ((image.float().clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).numpy()
    level = np.clip(amap / (2 * threshold if threshold > 0 else max(float(amap.max()), 1e-12)), 0, 1)
    heat = colormaps["jet"](level)[..., :3] * 255
    return (0.55 * rgb + 0.45 * heat).round().astype(np.uint8)


def _relative(path: Path, roots: Sequence[Path]) -> str:
    """A name for the outputs of `path` that keeps the folder structure below the input it came from."""
    for r in roots:
        if r.is_dir():
            try:
                return path.resolve().relative_to(r.resolve()).with_suffix("").as_posix()
            except ValueError:
                continue
    return path.stem


def predict(
    scorer: Scorer,
    inputs: Sequence[Path],
    out: Path,
    threshold: Threshold,
    *,
    save_maps: bool = True,
    save_overlays: bool = True,
) -> PredictResult:
    """Score every image of `inputs` into `out` (scores.csv, maps/, overlays/, predict.json)."""
    files = image_files(inputs)
    if not files:
        raise DataError(f"{', '.join(map(str, inputs))}: no image files (expected {', '.join(IMAGE_SUFFIXES)})")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    roots = [Path(p) for p in inputs]
    skipped: list[dict[str, str]] = []
    converted: dict[str, int] = {}
    resized = scored = anomalous = 0
    names: set[str] = set()
    # the threshold is in the score's units: the map's with infer.image_map=map; with `latent` it is not,
    # so each overlay is scaled to its own map's maximum instead
    overlay_scale = threshold.value if scorer.cfg.infer.image_map == "map" else 0.0
    rows = io.StringIO(newline="")
    w = csv.writer(rows)
    w.writerow(["path", "name", "category", "score", "anomalous", "threshold", "width", "height", "converted"])
    for b, amap, score in score_files(scorer, files):
        if amap is None:
            skipped.append({"path": str(b.path), "reason": b.error or "unreadable"})
            continue
        name = _relative(b.path, roots)
        if name in names:  # two inputs with one name (e.g. a.png and a.jpg): keep both
            name = f"{name}{b.path.suffix}"
        names.add(name)
        if b.converted:
            converted[b.converted] = converted.get(b.converted, 0) + 1
        if b.size != (scorer.size, scorer.size):
            resized += 1
        flag = int(score >= threshold.value)
        scored, anomalous = scored + 1, anomalous + flag
        if save_maps:
            write_atomic(out / "maps" / f"{name}.npy", lambda p, amap=amap: np.save(p, amap.astype(np.float32)))
        if save_overlays:
            write_atomic(
                out / "overlays" / f"{name}.png",
                lambda p, b=b, amap=amap: Image.fromarray(overlay(b.image, amap, overlay_scale)).save(p, format="PNG"),
            )
        w.writerow(
            [
                str(b.path),
                name,
                scorer.category,
                f"{score:.9g}",
                flag,
                f"{threshold.value:.9g}",
                b.size[0],
                b.size[1],
                b.converted or "",
            ]
        )
    if not scored:
        raise DataError(
            f"no readable image among the {len(files)} file(s) given (first: {skipped[0]['path']}: "
            f"{skipped[0]['reason']})"
        )
    write_atomic(out / "scores.csv", rows.getvalue())
    notes = _notes(scorer, resized, converted, skipped)
    summary = {
        "checkpoint": str(scorer.checkpoint),
        "category": scorer.category,
        "images": scored,
        "anomalous": anomalous,
        "normal": scored - anomalous,
        "threshold": {"value": threshold.value, "how": threshold.how},
        "score": score_text(scorer.cfg)
        + ("" if scorer.cfg.infer.image_map == "map" else ": not the saved map's maximum"),
        "scores": str((out / "scores.csv").resolve()),
        "maps": str((out / "maps").resolve()) if save_maps else None,
        "overlays": str((out / "overlays").resolve()) if save_overlays else None,
        "skipped": skipped,
        "notes": notes,
    }
    write_atomic(out / "predict.json", json.dumps(summary, indent=1) + "\n")
    return PredictResult(out, threshold, scored, anomalous, skipped, notes, summary)


def _notes(scorer: Scorer, resized: int, converted: dict[str, int], skipped: list[dict[str, str]]) -> list[str]:
    d = scorer.cfg.data
    notes = []
    if resized:
        crop = f" and center-cropped to {d.crop}" if d.crop else ""
        how = (
            f"resized to {d.resize}x{d.resize} (aspect not kept){crop}, as the training images were"
            if d.resize
            else (
                f"center-cropped to {d.crop}, as the training images were"
                if d.crop
                else f"resized to {scorer.size}x{scorer.size} (bilinear, aspect not kept), the model's input size: the "
                f"training images were used at that size as they were"
            )
        )
        notes.append(f"{resized} image(s) not of {scorer.size}x{scorer.size} pixels: {how}")
    for mode, n in sorted(converted.items()):
        notes.append(
            f"{n} image(s) in mode {mode} (grey-scale, palette or with alpha) converted to RGB: the model "
            f"takes 3 channels"
        )
    if skipped:
        notes.append(f"{len(skipped)} unreadable file(s) skipped (listed under 'skipped')")
    return notes
