"""What each method reconstructs from a test batch (deco-diff, ddim-recon, vae-recon), on a
small real VAE and a fixed stand-in for the UNet."""

import pytest
import torch

from decodiff.models.ddim_recon import NoiseProcess
from decodiff.models.deviation import DeviationProcess
from decodiff.models.reconstruction import ReconstructionSettings, reconstruct
from decodiff.models.sampler import correct
from decodiff.models.vae import FrozenVAE, build_small_vae


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return FrozenVAE(build_small_vae("f8-tiny"), scale=0.5, source="test")


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1


def _model(z_t, t):  # a fixed function of (z_t, t) standing in for the UNet
    return 0.3 * z_t.roll(1, dims=1) * (1 + t.view(-1, 1, 1, 1).to(z_t.dtype) / 10)


def test_vae_recon_is_the_vae_round_trip_against_the_input(vae, x):
    rec = reconstruct(x, vae, None, None, ReconstructionSettings(method="vae-recon", pixel_reference="input"))
    z = vae.encode(x)
    torch.testing.assert_close(rec.z, z)
    assert torch.equal(rec.z0_hat, rec.z) and torch.equal(rec.x_ref, x) and rec.trajectory == []
    torch.testing.assert_close(rec.x_rec, vae.decode(z))


def test_deco_diff_is_the_correction_sampler(vae, x):
    proc = DeviationProcess()
    s = ReconstructionSettings(method="deco-diff", reverse_steps=3, strategy="z0")
    rec = reconstruct(x, vae, _model, proc, s, keep_trajectory=True)
    z = vae.encode(x)
    want = correct(_model, z, proc, 3, None, "z0").z0_hat
    torch.testing.assert_close(rec.z0_hat, want)
    torch.testing.assert_close(rec.x_ref, vae.decode(z))  # published: against the VAE reconstruction
    torch.testing.assert_close(rec.x_rec, vae.decode(want))
    assert len(rec.trajectory) == 3


def test_ddim_recon_noise_follows_the_image_not_the_batch(vae, x):
    proc = NoiseProcess()
    s = ReconstructionSettings(method="ddim-recon", reverse_steps=2, start_step=4, noise_seed=5)
    keys = ["a/test/d/0", "a/test/d/1", "a/test/good/0"]
    whole = reconstruct(x, vae, _model, proc, s, keys=keys)
    part = reconstruct(x[1:], vae, _model, proc, s, keys=keys[1:])
    torch.testing.assert_close(part.z0_hat, whole.z0_hat[1:], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(whole.z0_hat, whole.z)  # noised and denoised: not the input latent
    other = reconstruct(
        x,
        vae,
        _model,
        proc,
        ReconstructionSettings(method="ddim-recon", reverse_steps=2, start_step=4, noise_seed=6),
        keys=keys,
    )
    assert not torch.allclose(other.z0_hat, whole.z0_hat)


def test_bad_combinations_are_errors(vae, x):
    with pytest.raises(ValueError, match="pixel_reference must be 'input'"):
        reconstruct(x, vae, None, None, ReconstructionSettings(method="vae-recon"))
    with pytest.raises(ValueError, match="applies to deco-diff only"):
        reconstruct(x, vae, _model, NoiseProcess(), ReconstructionSettings(method="ddim-recon", strategy="z0"))
    with pytest.raises(ValueError, match="one key per image"):
        reconstruct(x, vae, _model, NoiseProcess(), ReconstructionSettings(method="ddim-recon"), keys=["k"])
    with pytest.raises(ValueError, match="needs a trained model"):
        reconstruct(x, vae, None, None, ReconstructionSettings(method="deco-diff"))
    with pytest.raises(TypeError, match="NoiseProcess"):
        reconstruct(x, vae, _model, DeviationProcess(), ReconstructionSettings(method="ddim-recon"), keys=["a"] * 3)
