"""The ddim-recon baseline's process (standard forward process, epsilon target, DDIM steps) and
its relation to DeCo-Diff's deviation process, checked from the equations."""

import pytest
import torch
from diffusers import DDIMScheduler

from decodiff.models.ddim_recon import NoiseProcess, ddim_reconstruct, keyed_noise
from decodiff.models.deviation import DeviationProcess


def test_training_input_is_eq2_with_the_noise_as_target():
    proc = NoiseProcess()
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(6, 4, 8, 8, generator=g, dtype=torch.float64)
    inp = proc.training_input(z0, generator=g)
    ab = proc.alpha_bar[inp.t].view(-1, 1, 1, 1)
    torch.testing.assert_close(inp.z_t, ab.sqrt() * z0 + (1 - ab).sqrt() * inp.eta, rtol=0, atol=1e-12)
    assert not inp.keep.any()  # every cell is noised
    assert inp.eta.std() == pytest.approx(1.0, abs=0.15)


def test_deviation_process_with_full_mask_is_this_forward_process():
    """R_mask = 1, R_shuffle = 0: DeCo-Diff's z_t equals Eq. 2 at the same t and noise, and its
    target is eta = eps - (1 - sqrt(ab)) / sqrt(1 - ab) * z0 (Eq. 11), not eps."""
    dev = DeviationProcess(patch_sizes=[1], patch_probs=[1.0], r_mask=1.0, r_shuffle=0.0)
    std = NoiseProcess()
    g = torch.Generator().manual_seed(2)
    z0 = torch.randn(10, 4, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(z0.shape, generator=g, dtype=torch.float64)
    t = torch.arange(10)
    ours = dev.masked_forward(z0, t, eps, keep=torch.zeros(10, 1, 8, 8, dtype=torch.bool))
    torch.testing.assert_close(ours.z_t, std.noised(z0, t, eps), rtol=0, atol=1e-12)
    ab = std.alpha_bar[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(ours.eta, eps - (1 - ab.sqrt()) / (1 - ab).sqrt() * z0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps", list(range(1, 11)))
def test_oracle_epsilon_returns_z0(steps):
    """With the true noise as prediction, DDIM lands on z0 for every step count (published mapping)."""
    proc = NoiseProcess()
    g = torch.Generator().manual_seed(steps)
    z0 = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(z0.shape, generator=g, dtype=torch.float64)
    first = proc.timesteps(steps)[0]
    ab0 = proc.alpha_bar[first]

    def oracle(z_t, t):
        ab = proc.alpha_bar[t].view(-1, 1, 1, 1)
        return (z_t - ab.sqrt() * z0) / (1 - ab).sqrt()

    out = ddim_reconstruct(oracle, z0, proc, noise, num_reverse=steps, keep_trajectory=True)
    torch.testing.assert_close(out.z0_hat, z0, rtol=0, atol=1e-8 / ab0.sqrt().item())
    assert len(out.trajectory) == steps


@pytest.mark.parametrize("start", [2, 4, 8])
def test_explicit_noise_step_and_oracle(start):
    proc = NoiseProcess()
    z0 = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    noise = torch.randn_like(z0)
    for n in range(1, start + 2):

        def oracle(z_t, t):
            ab = proc.alpha_bar[t].view(-1, 1, 1, 1)
            return (z_t - ab.sqrt() * z0) / (1 - ab).sqrt()

        out = ddim_reconstruct(oracle, z0, proc, noise, num_reverse=n, start=start)
        torch.testing.assert_close(out.z0_hat, z0, rtol=0, atol=1e-10)


def test_ddim_steps_equal_diffusers_ddim_scheduler():
    """The same loop as diffusers' DDIMScheduler (eta 0, 5 of 10 steps: 8, 6, 4, 2, 0) on a
    fixed non-oracle model."""
    proc = NoiseProcess()
    sched = DDIMScheduler(
        num_train_timesteps=10,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        set_alpha_to_one=True,
        timestep_spacing="leading",
    )
    sched.set_timesteps(5)
    assert sched.timesteps.tolist() == proc.timesteps(5) == [8, 6, 4, 2, 0]
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    noise = torch.randn(z.shape, generator=g, dtype=torch.float64)
    w = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.3

    def model(z_t, t):  # some fixed function of (z_t, t)
        return torch.einsum("oc,bchw->bohw", w, z_t) * (1 + t.view(-1, 1, 1, 1) / 10)

    ours = ddim_reconstruct(model, z, proc, noise, num_reverse=5).z0_hat
    sample = proc.noised(z, torch.full((2,), 8), noise)
    for t in sched.timesteps:
        sample = sched.step(model(sample, torch.full((2,), int(t))), int(t), sample).prev_sample
    # diffusers keeps alpha-bar in float32: agreement to float32 precision
    torch.testing.assert_close(ours, sample, rtol=1e-5, atol=1e-5)
    assert (ours - sample).abs().max() < 1e-3 * (ours - z).abs().max()  # far below the step's own change


def test_keyed_noise_depends_on_key_and_seed_only():
    a = keyed_noise(["cat/test/x/000", "cat/test/x/001"], (4, 8, 8), seed=0)
    b = keyed_noise(["cat/test/x/001"], (4, 8, 8), seed=0)
    assert torch.equal(a[1], b[0]) and not torch.equal(a[0], a[1])
    assert not torch.equal(keyed_noise(["cat/test/x/001"], (4, 8, 8), seed=1)[0], b[0])
