"""`vae.init_from`: the small VAE a run trains starts from a given VAE's weights (a fine-tuning), is
cached by those weights' content, says what it was fine-tuned from, and refuses another architecture."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from decodiff.harness.config import ConfigError, build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.evaluation.evaluate import inference_layout
from decodiff.harness.training import budget
from decodiff.harness.training.vae_fit import fit_small_vae, get_vae, resolve_pretrained, vae_cache_key
from decodiff.models.errors import VAEError
from decodiff.models.vae import load_vae


def _weights(folder):
    vae = load_vae(folder).vae
    return torch.cat([p.detach().flatten() for p in vae.parameters()])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_grass):
    """The tiny config's data and an f8-tiny VAE to start from (3 steps from other random weights: seed 1)."""
    root = tmp_path_factory.mktemp("init")
    cfg = tiny_grass(root / "cache")
    data = prepare_data(cfg)
    init = root / "init-vae"
    other = tiny_grass(root / "cache", "vae.steps=3", "run.seed=1")
    fit_small_vae(other, data, init)
    return root, cfg, data, init


def test_the_micro_batch_reaches_the_vae_and_not_its_cache_key(tiny, tiny_grass):
    """vae.micro_batch is speed only: the same cached VAE, loaded with the config's split; an evaluation
    puts its own config's split on the VAE it is handed."""
    root, cfg, data, _ = tiny
    split = tiny_grass(root / "cache", "vae.micro_batch=3")
    assert vae_cache_key(split, data) == vae_cache_key(cfg, data)
    vae = get_vae(split, data)
    assert vae.micro_batch == 3 and get_vae(cfg, data).micro_batch is None
    assert get_vae(cfg, data).location == vae.location
    inference_layout(cfg, None, vae, torch.device("cpu"))
    assert vae.micro_batch is None


def test_without_init_from_the_cache_key_is_the_one_of_before(tiny):
    _, cfg, data, _ = tiny
    # the key as it was before vae.init_from (and vae.micro_batch, which does not change the VAE) existed:
    # VAEs cached by earlier versions are reused
    old_keys = ("pretrained", "scale", "init_from", "micro_batch")
    spec = {
        "vae": {k: v for k, v in cfg.vae.model_dump().items() if k not in old_keys},
        "data": data.manifest.checksum,
        "categories": data.categories,
        "resize": cfg.data.resize,
        "crop": cfg.data.crop,
        "seed": cfg.run.seed,
    }
    assert vae_cache_key(cfg, data) == hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def test_fine_tuning_starts_from_the_init_weights_and_records_them(tiny, tmp_path):
    root, cfg, data, init = tiny
    moved = tmp_path / "elsewhere"
    shutil.copytree(init, moved)
    tuned_cfg = cfg.model_copy(update={"vae": cfg.vae.model_copy(update={"init_from": str(init)})})
    moved_cfg = cfg.model_copy(update={"vae": cfg.vae.model_copy(update={"init_from": str(moved)})})
    key = vae_cache_key(tuned_cfg, data)
    assert key == vae_cache_key(moved_cfg, data) != vae_cache_key(cfg, data)  # by content, not by path

    assert budget.measure(tuned_cfg, data)["vae_step"] > 0  # run.time_budget counts the fine-tuning's vae.steps
    tuned = get_vae(tuned_cfg, data)
    assert budget.measure(moved_cfg, data)["vae_step"] == 0  # and finds it made, by the init weights' content
    folder = root / "cache" / "vae" / key
    assert tuned.location == str(folder.resolve())
    meta = json.loads((folder / "decodiff.json").read_text())
    init_sha = json.loads((init / "decodiff.json").read_text())["weights_sha256"]
    assert meta["init_from"]["weights_sha256"] == init_sha and meta["init_from"]["source"] == str(init)
    assert f"fine-tuned from {init}" in meta["description"] and meta["steps"] == 2
    scratch = get_vae(cfg, data)  # the same 2 steps from random weights
    w_tuned, w_init, w_scratch = _weights(folder), _weights(init), _weights(scratch.location)
    assert not torch.equal(w_tuned, w_init) and not torch.equal(w_tuned, w_scratch)
    # it started from the init: 2 small steps away from it, far from where the run's random weights lead
    assert (w_tuned - w_init).norm() < 0.1 * (w_scratch - w_init).norm()

    again = get_vae(moved_cfg, data)  # same init weights from another path: the cached VAE is reused
    assert again.fingerprint == tuned.fingerprint and again.location == tuned.location


def test_another_architecture_is_one_config_error_naming_both(tiny):
    _, cfg, data, _ = tiny
    bad = cfg.model_copy(update={"vae": cfg.vae.model_copy(update={"init_from": "builtin:demo-vae"})})
    with pytest.raises(ConfigError, match=r"vae\.init_from=builtin:demo-vae: .*vae\.small=f8-tiny") as err:
        vae_cache_key(bad, data)
    assert "block_out_channels" in str(err.value) and "\n" not in str(err.value)


def test_an_unknown_init_is_one_line_naming_the_key(tiny, tmp_path):
    _, cfg, data, _ = tiny
    cases = (("builtin:no-such-vae", "no such built-in VAE"), (str(tmp_path / "none"), "not a VAE folder"))
    for source, expected in cases:
        bad = cfg.model_copy(update={"vae": cfg.vae.model_copy(update={"init_from": source})})
        with pytest.raises(VAEError, match=rf"^vae\.init_from={source}: .*{expected}"):
            get_vae(bad, data)


def test_own_preset_fine_tunes_the_shipped_generic_vae_on_a_folder_of_photographs(tmp_path):
    """The own-data path as documented (`--config own data.root=DIR`), a few steps: the run's VAE is the
    shipped generic one fine-tuned on the folder's normal images, and says so."""
    from PIL import Image
    from skimage import data as pictures

    rng = np.random.default_rng(0)
    for name in ("rocket", "astronaut"):
        img = getattr(pictures, name)()
        for kind, n in (("normal", 10), ("anomalous", 2)):
            (tmp_path / "own" / name / kind).mkdir(parents=True)
            for i in range(n):
                t, left = rng.integers(0, img.shape[0] - 200), rng.integers(0, img.shape[1] - 200)
                Image.fromarray(img[t : t + 200, left : left + 200]).save(tmp_path / "own" / name / kind / f"{i}.png")
    over = [f"data.root={tmp_path / 'own'}", f"run.cache_dir={tmp_path / 'cache'}", "vae.steps=2", "run.threads=1"]
    cfg = build_config("own", over)
    assert cfg.vae.init_from == "builtin:generic-vae" and cfg.vae.pretrained is None
    data = prepare_data(cfg)
    tuned = get_vae(cfg, data)
    generic = resolve_pretrained("builtin:generic-vae")
    meta = json.loads((Path(tuned.location) / "decodiff.json").read_text())
    assert meta["init_from"]["weights_sha256"] == json.loads((generic / "decodiff.json").read_text())["weights_sha256"]
    assert "fine-tuned from builtin:generic-vae" in tuned.source and meta["data_checksum"] == data.manifest.checksum
    scratch = get_vae(build_config("own", [*over, "vae.init_from=null"]), data)
    w_tuned, w_generic, w_scratch = _weights(tuned.location), _weights(generic), _weights(scratch.location)
    assert not torch.equal(w_tuned, w_generic) and not torch.equal(w_tuned, w_scratch)
    assert (w_tuned - w_generic).norm() < 0.1 * (w_scratch - w_generic).norm()
