"""One Stable-Diffusion-layout weights file as the VAE: a small AutoencoderKL is saved in the
LDM key layout (as the SD release files are) and must load offline to the same network, from
.safetensors and from a .ckpt read with weights_only=True; files that do not fit are errors."""

import json
import re

import pytest
import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file

from decodiff.models.vae import VAEError, load_vae
from decodiff.models.vae_single_file import config_from_shapes, load_single_file_vae


def _small_sd_like_vae() -> AutoencoderKL:
    """The SD KL-f8 family at toy width: GroupNorm 32, mid-block attention, quant convs."""
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
    ).eval()


def _to_ldm_layout(state: dict[str, torch.Tensor], levels: int) -> dict[str, torch.Tensor]:
    """diffusers key names -> the original LDM/SD names (the inverse of diffusers' converter)."""
    out = {}
    for key, value in state.items():
        k = key
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", k)
        k = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
        k = re.sub(
            r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
            lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.block.{m.group(2)}.",
            k,
        )
        k = re.sub(
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
            lambda m: f"decoder.up.{levels - 1 - int(m.group(1))}.upsample.",
            k,
        )
        k = re.sub(r"mid_block\.resnets\.(\d)\.", lambda m: f"mid.block_{int(m.group(1)) + 1}.", k)
        k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
        k = k.replace("attn_1.group_norm.", "attn_1.norm.").replace("attn_1.to_q.", "attn_1.q.")
        k = k.replace("attn_1.to_k.", "attn_1.k.").replace("attn_1.to_v.", "attn_1.v.")
        k = k.replace("attn_1.to_out.0.", "attn_1.proj_out.")
        k = k.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        if "attn_1." in k and k.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # SD stores the attention projections as 1x1 convs
        out[k] = value.clone()
    return out


@pytest.fixture(scope="module")
def sd_files(tmp_path_factory):
    vae = _small_sd_like_vae()
    ldm = _to_ldm_layout(vae.state_dict(), 2)
    folder = tmp_path_factory.mktemp("sd")
    save_file(ldm, str(folder / "vae.safetensors"))
    # a whole-model .ckpt: the VAE under first_stage_model., other weights beside it, lightning-style nesting
    full = {f"first_stage_model.{k}": v for k, v in ldm.items()}
    full["model.diffusion_model.input_blocks.0.0.weight"] = torch.zeros(2, 2)
    torch.save({"state_dict": full, "global_step": 7}, folder / "sd-model.ckpt")
    return vae, ldm, folder


def _same_network(a: AutoencoderKL, b: AutoencoderKL) -> None:
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        za, zb = a.encode(x).latent_dist.mean, b.encode(x).latent_dist.mean
        torch.testing.assert_close(zb, za, rtol=0, atol=0)
        torch.testing.assert_close(b.decode(za).sample, a.decode(za).sample, rtol=0, atol=0)


def test_config_read_from_the_shapes(sd_files):
    vae, ldm, _ = sd_files
    cfg = config_from_shapes(ldm)
    assert cfg["block_out_channels"] == [32, 64] and cfg["layers_per_block"] == 1 and cfg["latent_channels"] == 4
    assert cfg["mid_block_add_attention"] and cfg["use_quant_conv"] and cfg["use_post_quant_conv"]
    assert cfg["scaling_factor"] == 0.18215


def test_safetensors_and_ckpt_load_to_the_same_network(sd_files):
    vae, _, folder = sd_files
    _same_network(vae, load_single_file_vae(folder / "vae.safetensors"))
    _same_network(vae, load_single_file_vae(folder / "sd-model.ckpt"))
    frozen = load_vae(folder / "vae.safetensors", image_size=32)  # the harness's entry point
    assert frozen.scale == 0.18215 and frozen.factor == 2 and len(frozen.fingerprint) == 64
    assert "Stable-Diffusion-layout file" in frozen.source
    assert load_vae(folder / "vae.safetensors", scale=0.13025).scale == 0.13025


def test_matches_diffusers_from_single_file_with_a_local_config(sd_files, tmp_path):
    """diffusers' own single-file loader, kept offline by a local config folder, gives the same VAE."""
    vae, ldm, folder = sd_files
    (tmp_path / "config.json").write_text(json.dumps(config_from_shapes(ldm)))
    theirs = AutoencoderKL.from_single_file(
        str(folder / "vae.safetensors"), config=str(tmp_path), local_files_only=True
    )
    _same_network(theirs, load_single_file_vae(folder / "vae.safetensors"))
    _same_network(vae, load_single_file_vae(folder / "vae.safetensors", config=tmp_path))


class _Payload:  # any class: unpickling it would mean running code from the file
    def __reduce__(self):
        return (print, ("unpickled",))


def test_pickles_that_need_code_are_refused(sd_files, tmp_path):
    _, ldm, _ = sd_files
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": ldm, "callback": _Payload()}, path)
    with pytest.raises(VAEError, match="weights_only=True"):
        load_vae(path)


def test_files_that_do_not_fit_are_errors(sd_files, tmp_path):
    _, ldm, _ = sd_files
    partial = {k: v for k, v in ldm.items() if not k.startswith("decoder.up.0.block.1.")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(VAEError, match=r"missing \['decoder\.up_blocks\.1\.resnets\.1"):
        load_vae(tmp_path / "partial.safetensors")
    save_file({"foo.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(VAEError, match="not a KL autoencoder"):
        load_vae(tmp_path / "other.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(VAEError, match="junk.safetensors: not a readable safetensors"):
        load_vae(tmp_path / "junk.safetensors")
    diffusers_names = _small_sd_like_vae().state_dict()
    save_file({k: v.contiguous() for k, v in diffusers_names.items()}, str(tmp_path / "diffusers.safetensors"))
    with pytest.raises(VAEError, match="diffusers key names"):
        load_vae(tmp_path / "diffusers.safetensors")
