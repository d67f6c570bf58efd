"""What each method makes of a test batch: the encoded latent z, its corrected (or denoised)
version z0_hat, the decoded reconstruction and the image it is compared with. The anomaly map
(anomaly_map.py) is then the same function of these for every method, so the methods differ
only in how they reconstruct.

- `deco-diff`: deviation correction from the clean latent (sampler.correct, Eqs. 13-14);
- `ddim-recon`: noise to step t, DDIM back (ddim_recon.py): standard diffusion, paper Fig. 1;
- `vae-recon`: no diffusion model: the VAE's own reconstruction Decoder(Encoder(x)) against
  the input (z0_hat = z, so only the pixel part of the map carries information).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from decodiff.models.ddim_recon import NoiseProcess, ddim_reconstruct, keyed_noise
from decodiff.models.deviation import DeviationProcess
from decodiff.models.sampler import EtaModel, correct
from decodiff.models.vae import FrozenVAE

METHODS = ("deco-diff", "ddim-recon", "vae-recon")
TRAINED = ("deco-diff", "ddim-recon")  # methods with a UNet to train
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class ReconstructionSettings:
    method: str = "deco-diff"
    reverse_steps: int = 5
    start_step: int | None = None  # None: `step_mapping` decides (deviation.reverse_timesteps)
    step_mapping: str = "respacing"  # "respacing" (the authors' code) or "from-top" (the paper: start at T)
    strategy: str = "zt-1"  # deco-diff only
    pixel_reference: str = "vae"  # "vae": Decoder(z) (published); "input": the image itself
    noise_seed: int = 0  # ddim-recon: noise per image from (seed, key)
    precision: str = "fp32"  # "bf16": the networks under bfloat16 autocast, their outputs back in float32


@dataclass
class Reconstruction:
    z: torch.Tensor  # encoded test latent (mean of the latent distribution)
    z0_hat: torch.Tensor
    x_rec: torch.Tensor  # Decoder(z0_hat)
    x_ref: torch.Tensor  # what x_rec is compared with
    trajectory: list[torch.Tensor] = field(default_factory=list)  # z0_hat after each reverse step


def check_settings(s: ReconstructionSettings) -> None:
    if s.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {s.method!r}")
    if s.method == "vae-recon" and s.pixel_reference != "input":
        raise ValueError(
            "method vae-recon compares Decoder(Encoder(x)) with the input: pixel_reference must be 'input'"
        )
    if s.method == "ddim-recon" and s.strategy != "zt-1":
        raise ValueError("method ddim-recon takes DDIM steps: the correction strategy applies to deco-diff only")
    if s.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {s.precision!r}")


def _in_precision(fn: Callable[..., torch.Tensor], precision: str, device: torch.device) -> Callable[..., torch.Tensor]:
    """`fn` (a network) run under bfloat16 autocast with a float32 result, so that the latent
    arithmetic of the sampler and the maps stay in float32; fp32 returns `fn` itself."""
    if precision == "fp32":
        return fn

    def run(*args: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext():
            return fn(*args).float()

    return run


@torch.no_grad()
def reconstruct(
    x: torch.Tensor,
    vae: FrozenVAE,
    model: EtaModel | None,
    process: DeviationProcess | NoiseProcess | None,
    s: ReconstructionSettings,
    keys: Sequence[str] = (),
    keep_trajectory: bool = False,
    reference: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> Reconstruction:
    """x in [-1, 1], [B, 3, H, W]; `model(z_t, t)` predicts eta (deco-diff) or eps (ddim-recon);
    `keys` name the images (ddim-recon draws each image's noise from its key). `reference`: this
    batch's (z, Decoder(z)) computed before (evaluation/reference_cache.py; Decoder(z) None with
    pixel_reference "input"), so that neither is computed again."""
    check_settings(s)
    encode, decode = _in_precision(vae.encode, s.precision, x.device), _in_precision(vae.decode, s.precision, x.device)
    # the mean of the latent distribution (published)
    z, cached_ref = (encode(x), None) if reference is None else reference
    if s.method == "vae-recon":
        return Reconstruction(z=z, z0_hat=z, x_rec=decode(z), x_ref=x)
    if model is None or process is None:
        raise ValueError(f"method {s.method} needs a trained model and its process")
    model = _in_precision(model, s.precision, x.device)
    if s.method == "deco-diff":
        if not isinstance(process, DeviationProcess):
            raise TypeError("method deco-diff needs a DeviationProcess")
        fix = correct(
            model,
            z,
            process,
            s.reverse_steps,
            s.start_step,
            s.strategy,
            keep_trajectory=keep_trajectory,
            mapping=s.step_mapping,
        )
    else:
        if not isinstance(process, NoiseProcess):
            raise TypeError("method ddim-recon needs a NoiseProcess")
        if len(keys) != z.shape[0]:
            raise ValueError(f"ddim-recon needs one key per image ({len(keys)} keys for {z.shape[0]} images)")
        noise = keyed_noise(keys, tuple(z.shape[1:]), s.noise_seed, z.dtype, z.device)
        fix = ddim_reconstruct(
            model,
            z,
            process,
            noise,
            s.reverse_steps,
            s.start_step,
            keep_trajectory=keep_trajectory,
            mapping=s.step_mapping,
        )
    x_rec = decode(fix.z0_hat)
    if s.pixel_reference == "input":
        x_ref = x
    else:
        x_ref = decode(z) if cached_ref is None else cached_ref
    return Reconstruction(z=z, z0_hat=fix.z0_hat, x_rec=x_rec, x_ref=x_ref, trajectory=fix.trajectory)
