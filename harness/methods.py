"""A config's method as the models' objects: the diffusion process it trains and corrects with,
and the reconstruction and anomaly-map settings of its inference. Training and evaluation both
take them from here."""

from __future__ import annotations

from decodiff.harness.config import Config
from decodiff.models.anomaly_map import MapSettings
from decodiff.models.ddim_recon import NoiseProcess
from decodiff.models.deviation import DeviationProcess
from decodiff.models.reconstruction import ReconstructionSettings


def make_process(cfg: Config) -> DeviationProcess | NoiseProcess:
    """The method's process: DeCo-Diff's masked deviation process, or the standard forward
    process with the epsilon objective for the ddim-recon baseline (same T and schedule)."""
    p = cfg.process
    if cfg.method == "ddim-recon":
        return NoiseProcess(p.steps, p.schedule)
    return DeviationProcess(p.steps, p.schedule, p.patch_sizes, p.patch_probs, p.r_mask, p.r_shuffle)


def reconstruction_settings(cfg: Config) -> ReconstructionSettings:
    i = cfg.infer
    return ReconstructionSettings(
        method=cfg.method,
        reverse_steps=i.reverse_steps,
        start_step=i.start_step,
        step_mapping=i.step_mapping,
        strategy=i.strategy,
        pixel_reference=i.pixel_reference,
        noise_seed=cfg.run.seed,
        precision=i.precision,
    )


def map_settings(cfg: Config) -> MapSettings:
    i = cfg.infer
    return MapSettings(
        combination=i.combination,
        gamma_p=i.gamma_p,
        gamma_l=i.gamma_l,
        sigma_pixel=i.sigma_pixel,
        sigma_latent=i.sigma_latent,
        image_score=i.image_score,
        topk=i.topk,
        pool=i.pool,
    )
