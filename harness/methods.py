"""A config's method as the models' objects: the diffusion process it trains and corrects with,
and the reconstruction and anomaly-map settings of its inference. Training and evaluation both
take them from here."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

from decodiff.harness.config import Config
from decodiff.models.anomaly_map import MapSettings
from decodiff.models.ddim_recon import NoiseProcess
from decodiff.models.deviation import DeviationProcess
from decodiff.models.reconstruction import ReconstructionSettings

S = TypeVar("S", MapSettings, ReconstructionSettings)


def make_process(cfg: Config) -> DeviationProcess | NoiseProcess:
    """The method's process: DeCo-Diff's masked deviation process, or the standard forward
    process with the epsilon objective for the ddim-recon baseline (same T and schedule)."""
    p = cfg.process
    if cfg.method == "ddim-recon":
        return NoiseProcess(p.steps, p.schedule)
    return DeviationProcess(p.steps, p.schedule, p.patch_sizes, p.patch_probs, p.r_mask, p.r_shuffle)


def reconstruction_settings(cfg: Config) -> ReconstructionSettings:
    return _from_infer(ReconstructionSettings, cfg, method=cfg.method, noise_seed=cfg.run.seed)


def map_settings(cfg: Config) -> MapSettings:
    return _from_infer(MapSettings, cfg)


def score_text(cfg: Config) -> str:
    """What an image's score is, in words (run reports, `predict.json`): with infer.image_map=latent it
    is not the saved map's maximum, and whoever compares the two must know."""
    i = cfg.infer
    how = {
        "max": "maximum",
        "topk_mean": f"mean of the {i.topk} highest pixels",
        "avgpool_max": f"maximum after {i.pool}x{i.pool} average pooling",
    }[i.image_score]
    of = "the anomaly map" if i.image_map == "map" else "the latent part of the anomaly map"
    return f"{how} of {of} (infer.image_score={i.image_score}, infer.image_map={i.image_map})"


def _from_infer(settings: type[S], cfg: Config, **given: Any) -> S:
    """The models' settings from cfg.infer, whose keys carry the same names (but for `given`)."""
    infer = {f.name: getattr(cfg.infer, f.name) for f in fields(settings) if f.name not in given}
    return settings(**infer, **given)
