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


def _from_infer(settings: type[S], cfg: Config, **given: Any) -> S:
    """The models' settings from cfg.infer, whose keys carry the same names (but for `given`)."""
    infer = {f.name: getattr(cfg.infer, f.name) for f in fields(settings) if f.name not in given}
    return settings(**infer, **given)
