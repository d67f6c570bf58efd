"""Channels-last layout and the bf16 inference switch: same results as the faithful path
(up to float rounding for the layout; within bf16 rounding, in float32, for the switch)."""

import pytest
import torch

from decodiff.models.deviation import DeviationProcess
from decodiff.models.layout import to_layout, use_channels_last
from decodiff.models.reconstruction import ReconstructionSettings, reconstruct
from decodiff.models.unet import build_unet
from decodiff.models.vae import FrozenVAE, build_small_vae


def test_auto_layout_is_channels_last_on_cpu_and_on_cuda_only_with_reduced_precision():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_channels_last(None, cpu) and not use_channels_last(None, cuda)
    assert use_channels_last(None, cuda, reduced_precision=True)
    assert not use_channels_last(False, cpu) and use_channels_last(True, cuda)


def test_channels_last_unet_and_vae_give_the_contiguous_results():
    torch.manual_seed(0)
    net = build_unet("tiny", num_classes=3, sample_size=8).eval()
    vae = FrozenVAE(build_small_vae("f8-tiny"), scale=0.5, source="test")
    z, t, ids = torch.randn(2, 4, 8, 8), torch.tensor([3, 7]), torch.tensor([0, 2])
    with torch.no_grad():
        want_eta, want_x = net(z, t, ids), vae.decode(z)
        to_layout(net, True), to_layout(vae, True)
        conv = net.unet.conv_in.weight
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        eta, x = net(z, t, ids), vae.decode(z)
        to_layout(net, False)
        assert net.unet.conv_in.weight.is_contiguous()
    torch.testing.assert_close(eta, want_eta, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x, want_x, rtol=1e-4, atol=1e-5)


def test_bf16_reconstruction_stays_float32_and_near_the_faithful_one():
    torch.manual_seed(0)
    net = build_unet("tiny", num_classes=3, sample_size=4).eval()
    vae = FrozenVAE(build_small_vae("f8-tiny"), scale=0.5, source="test")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    cls = torch.tensor([0, 1])
    model = lambda zt, tt: net(zt, tt, cls)  # noqa: E731
    full = reconstruct(x, vae, model, DeviationProcess(), ReconstructionSettings())
    half = reconstruct(x, vae, model, DeviationProcess(), ReconstructionSettings(precision="bf16"))
    for a, b in ((half.z, full.z), (half.z0_hat, full.z0_hat), (half.x_rec, full.x_rec), (half.x_ref, full.x_ref)):
        assert a.dtype == torch.float32 and a.shape == b.shape and torch.isfinite(a).all()
    # one encoder pass in bf16 keeps ~2-3 significant digits; untrained networks amplify the rest,
    # so the quality change is measured on the demo (README), not here
    assert ((half.z - full.z).norm() / full.z.norm()).item() < 0.05
    assert not torch.equal(half.x_rec, full.x_rec)  # it is another precision, not the same path
    with pytest.raises(ValueError, match="precision"):
        reconstruct(x, vae, model, DeviationProcess(), ReconstructionSettings(precision="fp8"))
