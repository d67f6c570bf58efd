"""LDM's initialisation (model.init=ldm): the layers LDM's UNet zero-initialises are zero, so a
fresh model predicts eta = 0; model.init=diffusers keeps diffusers' defaults."""

import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.transformers.transformer_2d import Transformer2DModel

from decodiff.models.unet import build_unet, initialise


def fresh(init: str):
    torch.manual_seed(0)
    model = build_unet("tiny", num_classes=3, sample_size=8)
    return model, initialise(model, init)


def test_ldm_init_zeroes_resblock_conv2_transformer_proj_out_and_conv_out():
    model, zeroed = fresh("ldm")
    res = [n for n, m in model.unet.named_modules() if isinstance(m, ResnetBlock2D)]
    tra = [n for n, m in model.unet.named_modules() if isinstance(m, Transformer2DModel)]
    assert res and tra
    expected = {f"unet.{n}.conv2" for n in res} | {f"unet.{n}.proj_out" for n in tra} | {"unet.conv_out"}
    assert set(zeroed) == expected and len(zeroed) == len(expected)
    modules = dict(model.named_modules())
    for name in expected:
        params = list(modules[name].parameters(recurse=False))
        assert params and all(torch.count_nonzero(p) == 0 for p in params), name
    others = [p for n, p in model.named_parameters() if not any(n.startswith(e + ".") for e in expected)]
    assert all(torch.count_nonzero(p) > 0 for p in others if p.dim() > 1)  # nothing else was touched
    z = torch.randn(2, 4, 8, 8)
    out = model(z, torch.tensor([3, 7]), torch.tensor([0, 2]))
    assert torch.count_nonzero(out) == 0  # a fresh LDM-initialised UNet predicts eta = 0


def test_diffusers_init_keeps_the_defaults():
    model, zeroed = fresh("diffusers")
    assert zeroed == []
    assert torch.count_nonzero(model.unet.conv_out.weight) > 0
    base, _ = fresh("ldm")
    assert torch.equal(model.unet.conv_in.weight, base.unet.conv_in.weight)  # same draws elsewhere
    with pytest.raises(ValueError, match="model.init must be one of"):
        initialise(model, "zeros")


def test_ldm_is_the_default_and_part_of_the_training_key():
    from types import SimpleNamespace

    from decodiff.harness.config import build_config
    from decodiff.harness.training.model_cache import training_key
    from decodiff.harness.training.spec import training_spec

    assert build_config().model.init == "ldm"
    assert build_config(None, ["recipe=paper"]).model.init == "ldm"
    # training_spec reads these fields only (real ones need a VAE training)
    data = SimpleNamespace(manifest=SimpleNamespace(checksum="c"), categories=["a", "b"])
    vae = SimpleNamespace(fingerprint="f", source="s", scale=0.18215)
    ldm, diffusers = build_config(), build_config(None, ["model.init=diffusers"])
    assert training_key(ldm, data, vae) != training_key(diffusers, data, vae)
    # a training that behaves as before the key existed keeps its earlier key: the key holds no model.init
    # (nor train.cache_augment) at the earlier behaviour, so the demo's cached models are reused and resume
    assert "init" not in training_spec(diffusers, data, vae)["model"]
    demo = training_spec(build_config("demo"), data, vae)
    assert "init" not in demo["model"] and "cache_augment" not in demo["train"]
    assert training_spec(ldm, data, vae)["model"]["init"] == "ldm"
    assert training_spec(ldm, data, vae)["train"]["cache_augment"] == "exact"
    # a full load of model.init_from overwrites every layer model.init sets: it is not in the key then
    full = [f"model.init_from={__file__}"]
    assert "init" not in training_spec(build_config(None, full + ["model.init=ldm"]), data, vae)["model"]
    partial = training_spec(build_config(None, full + ["model.init_partial=true"]), data, vae)
    assert partial["model"]["init"] == "ldm"  # what did not load keeps model.init's values
