"""The frozen VAE: save/load offline, scale, latent-shape checks, clear errors."""

import json

import pytest
import torch

from decodiff.models.vae import FrozenVAE, VAEError, auto_micro_batch, build_small_vae, load_vae, save_vae


def test_round_trip_and_latent_shape(tmp_path):
    vae = build_small_vae("f8-tiny")
    save_vae(vae, tmp_path / "v", scale=0.5, description="test VAE")
    assert not (tmp_path / "v.tmp").exists()
    loaded = load_vae(tmp_path / "v", image_size=64)
    assert loaded.scale == 0.5 and loaded.source == "test VAE" and len(loaded.fingerprint) == 64
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    z = loaded.encode(x)
    assert z.shape == (2, 4, 8, 8)
    torch.testing.assert_close(z, vae.encode(x).latent_dist.mean * 0.5)
    assert loaded.decode(z).shape == x.shape
    assert not any(p.requires_grad for p in loaded.parameters())
    loaded.train()
    assert not loaded.vae.training


def test_sampled_latents_differ_from_the_mean(tmp_path):
    vae = build_small_vae("f8-tiny")
    save_vae(vae, tmp_path / "v", scale=1.0, description="t")
    v = load_vae(tmp_path / "v")
    x = torch.zeros(1, 3, 32, 32)
    assert not torch.equal(v.encode(x, sample=True), v.encode(x))


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(VAEError, match="no config.json"):
        load_vae(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(VAEError, match=str(tmp_path / "bad")):
        load_vae(tmp_path / "bad")
    save_vae(build_small_vae("f8-tiny"), tmp_path / "v", scale=1.0, description="t")
    with pytest.raises(VAEError, match="latent channels 4, expected 8"):
        load_vae(tmp_path / "v", expect_channels=8)
    with pytest.raises(VAEError, match="does not match image size 60"):
        load_vae(tmp_path / "v", image_size=60)


def test_a_saved_vae_with_a_changed_byte_is_refused_naming_the_file(tmp_path):
    save_vae(build_small_vae("f8-tiny"), tmp_path / "v", scale=0.5, description="test VAE")
    (weights,) = (tmp_path / "v").glob("*.safetensors")
    assert (
        json.loads((tmp_path / "v" / "decodiff.json").read_text())["weights_sha256"]
        == load_vae(tmp_path / "v").fingerprint
    )
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(VAEError, match=rf"{weights}: corrupt VAE weights \(sha256 differs"):
        load_vae(tmp_path / "v")


def test_micro_batches_give_the_whole_batch_result_in_order():
    """Encoder and decoder calls split into micro-batches (vae.micro_batch): each image's latent and
    decode are its own, in input order, as in one call (float rounding apart)."""
    torch.manual_seed(0)
    v = FrozenVAE(build_small_vae("f8-tiny"), 0.5, "t", micro_batch=0)
    x = torch.rand(7, 3, 32, 32) * 2 - 1
    mean, std = v.encode_dist(x)
    out = v.decode(mean)
    for split in (1, 2, 3):
        v.micro_batch = split
        m2, s2 = v.encode_dist(x)
        torch.testing.assert_close(m2, mean, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(s2, std, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(v.decode(mean), out, atol=1e-4, rtol=1e-4)
    g = torch.Generator().manual_seed(1)
    v.micro_batch = 2
    sampled = v.encode(x, sample=True, generator=g)  # one noise draw for the whole batch, as before
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(sampled, mean + std * noise)


def test_the_automatic_micro_batch_follows_the_activation_size():
    """On a CPU: as many images as keep a 16-channel full-resolution activation within 4 MiB (an even
    count), one image when a single one is larger, the whole batch when all fit; elsewhere the whole batch."""
    v = FrozenVAE(build_small_vae("f8-small"), 1.0, "t")  # 16 channels at full resolution
    assert auto_micro_batch(v, torch.zeros(32, 3, 128, 128)) == 4  # 1 MiB per image
    assert auto_micro_batch(v, torch.zeros(32, 3, 96, 96)) == 6  # 0.56 MiB: 7 fit, an even 6
    assert auto_micro_batch(v, torch.zeros(16, 3, 256, 256)) == 1  # 4 MiB per image
    assert auto_micro_batch(v, torch.zeros(3, 3, 64, 64)) == 0  # all three fit
    assert auto_micro_batch(v, torch.zeros(32, 4, 16, 16), pixels=128 * 128) == 4  # a latent, by its image's size
    assert auto_micro_batch(v, torch.zeros(32, 3, 128, 128, device="meta")) == 0  # not a CPU


class _CallSizes:
    """Wraps an AutoencoderKL's encode/decode to record how many images each call holds."""

    def __init__(self, net):
        self.sizes = []
        for name in ("encode", "decode"):
            inner = getattr(net, name)
            setattr(net, name, self._recording(inner))

    def _recording(self, inner):
        def call(x, *args, **kwargs):
            self.sizes.append(x.shape[0])
            return inner(x, *args, **kwargs)

        return call


def test_calls_are_split_as_configured_and_latents_are_sized_by_their_images():
    """The split reaches the network: 7 images in calls of 2 are calls of 2, 2, 2, 1; automatic on a
    CPU, 32 latents of 128-px images (f8-small, 1 MiB per image) are decoded in 8 calls of 4, not one."""
    v = FrozenVAE(build_small_vae("f8-small"), 1.0, "t", micro_batch=2)
    calls = _CallSizes(v.vae)
    v.encode(torch.zeros(7, 3, 32, 32))
    v.decode(torch.zeros(7, 4, 4, 4))
    assert calls.sizes == [2, 2, 2, 1] * 2
    calls.sizes.clear()
    v.micro_batch = None
    v.decode(torch.zeros(32, 4, 16, 16))
    assert calls.sizes == [4] * 8
    calls.sizes.clear()
    v.micro_batch = 0
    v.decode(torch.zeros(32, 4, 16, 16))
    assert calls.sizes == [32]
    assert v.decode(torch.zeros(0, 4, 4, 4)).shape == (0, 3, 32, 32)  # an empty batch, as before
