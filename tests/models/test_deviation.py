"""The DeCo-Diff equations, each checked on its own (paper Eqs. 7-14)."""

import pytest
import torch

from decodiff.models.deviation import DeviationProcess
from decodiff.models.masking import patch_mask, shuffled_patches
from decodiff.models.sampler import correct
from decodiff.models.schedule import PUBLISHED_ALPHA_BAR_T10, alpha_bar


def test_schedule_matches_published_alpha_bar():
    ab = alpha_bar(10, "squaredcos_cap_v2")
    assert ab.shape == (10,)
    for got, want in zip(ab.tolist(), PUBLISHED_ALPHA_BAR_T10):
        assert got == pytest.approx(want, abs=6e-4)
    assert torch.all(ab[1:] < ab[:-1])


@pytest.mark.parametrize("patch", [1, 2, 4, 8])
def test_kept_cells_are_bit_identical(patch):
    g = torch.Generator().manual_seed(0)
    proc = DeviationProcess(patch_sizes=[patch], patch_probs=[1.0], r_mask=0.7, r_shuffle=0.3)
    z0 = torch.randn(6, 4, 16, 16, generator=g) * 3
    inp = proc.training_input(z0, generator=g)
    keep = inp.keep.expand_as(z0)
    assert torch.equal(inp.z_t[keep], z0[keep])
    assert torch.all(inp.eta[keep] == 0)
    assert (~inp.keep).any(), "some cells must be diffused"


def test_forward_is_z0_plus_scaled_eta():
    g = torch.Generator().manual_seed(1)
    proc = DeviationProcess(patch_sizes=[2, 4], patch_probs=[0.5, 0.5])
    z0 = torch.randn(8, 4, 16, 16, generator=g, dtype=torch.float64)
    inp = proc.training_input(z0, generator=g)
    ab = proc.alpha_bar[inp.t].view(-1, 1, 1, 1)
    torch.testing.assert_close(inp.z_t, z0 + (1 - ab).sqrt() * inp.eta, rtol=0, atol=1e-12)


def test_full_mask_without_shuffle_is_the_standard_forward_process():
    """R_mask = 1 (every cell diffused) and R_shuffle = 0 reduce Eq. 7 to Eq. 2 at the same t."""
    proc = DeviationProcess(patch_sizes=[1], patch_probs=[1.0], r_mask=1.0, r_shuffle=0.0)
    z0 = torch.randn(4, 4, 8, 8, dtype=torch.float64)
    noise = torch.randn_like(z0)
    t = torch.tensor([0, 3, 6, 9])
    keep = torch.zeros(4, 1, 8, 8, dtype=torch.bool)
    inp = proc.masked_forward(z0, t, noise, keep)
    ab = proc.alpha_bar[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(inp.z_t, ab.sqrt() * z0 + (1 - ab).sqrt() * noise, rtol=0, atol=1e-12)


def test_mask_ratio_is_exact_per_sample():
    ratios = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    m = patch_mask(4, 16, 16, 4, ratios, torch.Generator().manual_seed(0))
    per_patch = m[:, 0, ::4, ::4].flatten(1).sum(1)
    assert per_patch.tolist() == [0, 4, 8, 16]
    # cells of a patch share its value, and all channels share the mask
    blocks = m[:, 0].view(4, 4, 4, 4, 4).permute(0, 1, 3, 2, 4).reshape(4, 16, 16)
    assert torch.all(blocks.all(-1) | ~blocks.any(-1))


def test_patch_that_does_not_divide_is_a_clear_error():
    with pytest.raises(ValueError, match="does not divide"):
        patch_mask(2, 32, 32, 5, torch.tensor([0.5, 0.5]))


def test_shuffled_patches_is_a_permutation_of_patches():
    z = torch.arange(2 * 4 * 8 * 8, dtype=torch.float32).view(2, 4, 8, 8)
    s = shuffled_patches(z, 4, torch.Generator().manual_seed(3))
    assert sorted(s.flatten().tolist()) == sorted(z.flatten().tolist())
    assert not torch.equal(s, z)


@pytest.mark.parametrize("strategy", ["zt-1", "z0"])
@pytest.mark.parametrize("steps", list(range(1, 11)))
def test_oracle_eta_returns_z0(strategy, steps):
    """With the true deviation direction, the sampler lands on z0 for every count and strategy."""
    proc = DeviationProcess()
    g = torch.Generator().manual_seed(steps)
    z0 = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    deviation = torch.randn(3, 4, 8, 8, generator=g, dtype=torch.float64)
    first = proc.timesteps(steps)[0]
    z_start = z0 + (1 - proc.alpha_bar[first]).sqrt() * deviation

    def oracle(z_t, t):
        ab = proc.alpha_bar[t].view(-1, 1, 1, 1)
        return (z_t - z0) / (1 - ab).sqrt()

    out = correct(oracle, z_start, proc, num_reverse=steps, strategy=strategy, keep_trajectory=True)
    torch.testing.assert_close(out.z0_hat, z0, rtol=0, atol=1e-10)
    assert len(out.trajectory) == steps


@pytest.mark.parametrize("start", [9, 8, 5, 0])
def test_oracle_with_explicit_start(start):
    proc = DeviationProcess()
    z0 = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    for n in range(1, start + 2):
        steps = proc.timesteps(n, start)
        assert len(steps) == n and len(set(steps)) == n and steps[0] == start and steps == sorted(steps, reverse=True)
        z_start = z0 + 0.3 * torch.randn_like(z0)

        def oracle(z_t, t):
            return (z_t - z0) / (1 - proc.alpha_bar[t].view(-1, 1, 1, 1)).sqrt()

        out = correct(oracle, z_start, proc, num_reverse=n, start=start)
        torch.testing.assert_close(out.z0_hat, z0, rtol=0, atol=1e-10)


def test_published_step_mapping():
    proc = DeviationProcess()
    assert proc.timesteps(5) == [8, 6, 4, 2, 0]
    assert proc.timesteps(10) == list(range(9, -1, -1))
    assert proc.timesteps(2) == [5, 0]
    assert proc.timesteps(1) == [0]
    # the guided-diffusion "ddimN" respacing the published code uses (smallest integer stride)
    assert proc.timesteps(3) == [8, 4, 0]
    assert proc.timesteps(4) == [9, 6, 3, 0]
    # no integer stride gives 6..9 steps (the published code crashes): the n lowest steps here
    for n in range(6, 10):
        assert proc.timesteps(n) == list(range(n - 1, -1, -1))
    with pytest.raises(ValueError):
        proc.timesteps(11)
    with pytest.raises(ValueError):
        proc.timesteps(5, start=3)


def test_zt1_step_follows_eq14():
    proc = DeviationProcess()
    z_t = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    eta = torch.randn_like(z_t)
    out = proc.correction_step(eta, 8, 6, z_t, "zt-1")
    z0_hat = z_t - (1 - proc.alpha_bar[8]).sqrt() * eta
    torch.testing.assert_close(out.z0_hat, z0_hat)
    torch.testing.assert_close(out.z_prev, z0_hat + (1 - proc.alpha_bar[6]).sqrt() * eta)
    assert torch.equal(
        proc.correction_step(eta, 8, 6, z_t, "z0").z_prev, proc.correction_step(eta, 8, 6, z_t, "z0").z0_hat
    )


FROM_TOP = {
    1: [9],
    2: [9, 4],
    3: [9, 5, 2],
    4: [9, 6, 4, 1],
    5: [9, 7, 5, 3, 1],
    6: [9, 7, 5, 4, 2, 0],
    7: [9, 7, 6, 4, 3, 1, 0],
    8: [9, 7, 6, 5, 4, 2, 1, 0],
    9: [9, 7, 6, 5, 4, 3, 2, 1, 0],
    10: [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
}


@pytest.mark.parametrize("n", list(range(1, 11)))
def test_paper_mapping_starts_the_correction_at_T(n):
    """The paper's mapping (recipe=paper): the first call at the top step T (0-based 9) for every
    count, then DDIM's linear sub-sequence tau_i = floor(i T / n) (paper's 1-based steps)."""
    proc = DeviationProcess()
    steps = proc.timesteps(n, mapping="from-top")
    assert steps == FROM_TOP[n] == [i * 10 // n - 1 for i in range(n, 0, -1)]
    assert steps[0] == 9 and len(set(steps)) == n and steps == sorted(steps, reverse=True)
    assert proc.timesteps(n, start=9, mapping="from-top") == proc.timesteps(n, start=9)  # an explicit start wins
    calls = []

    def model(z_t, t):
        calls.append(int(t[0]))
        return torch.zeros_like(z_t)

    correct(model, torch.zeros(1, 4, 4, 4), proc, num_reverse=n, mapping="from-top")
    assert calls == FROM_TOP[n]
    with pytest.raises(ValueError, match="step mapping must be one of"):
        proc.timesteps(n, mapping="paper")


def test_recipes_choose_the_mapping_and_evaluation_uses_it():
    from decodiff.harness.config import build_config
    from decodiff.harness.methods import reconstruction_settings

    paper = build_config(None, ["recipe=paper", "infer.reverse_steps=1"])
    assert reconstruction_settings(paper).step_mapping == "from-top"
    assert DeviationProcess().timesteps(1, None, reconstruction_settings(paper).step_mapping) == [9]
    code = build_config(None, ["recipe=authors-code", "infer.reverse_steps=1"])
    assert DeviationProcess().timesteps(1, None, reconstruction_settings(code).step_mapping) == [0]
