"""The generic small VAE: trained on scikit-image's bundled photographs and textures without the demo's
sources or the held-out photographs, by `decodiff vae train-generic`, and usable as `vae.init_from`;
the shipped one resolves as `builtin:generic-vae`."""

import json

import torch

from decodiff.harness.cli import main
from decodiff.harness.training.vae_fit import resolve_pretrained
from decodiff.harness.training.vae_generic import DEMO_SOURCES, generic_picture_files, multiscale_crops
from decodiff.models.vae import SMALL_VAE_PRESETS, load_vae


def test_the_training_pictures_leave_out_the_demo_sources_and_the_drawings():
    names = {p.stem for p in generic_picture_files()}
    assert set(DEMO_SOURCES) == {"brick", "coffee", "coins", "grass"} and not names & set(DEMO_SOURCES)
    assert not names & {"chessboard_GRAY", "horse", "logo", "phantom"}
    assert {"astronaut", "camera", "gravel", "rocket", "retina"} <= names  # photographs and textures


def test_multiscale_crops_are_images_of_the_asked_size():
    pool = [torch.rand(3, 100, 300) * 2 - 1, torch.rand(3, 40, 40) * 2 - 1]  # one smaller than the crop
    x = multiscale_crops(pool, 12, 64, torch.Generator().manual_seed(0))
    assert x.shape == (12, 3, 64, 64) and x.min() >= -1 and x.max() <= 1


def test_train_generic_writes_a_vae_that_a_run_can_start_from(tmp_path, capsys):
    out = tmp_path / "generic"
    assert main(["vae", "train-generic", "--out", str(out), "--steps", "1", "--batch-size", "2"]) == 0
    meta = json.loads((out / "decodiff.json").read_text())
    assert meta["steps"] == 1 and "brick" not in " ".join(meta["training_pictures"])
    assert set(meta["heldout_psnr_db"]) == {"1"} and "never saw the demo's sources" in meta["description"]
    vae = load_vae(out, image_size=64)
    assert tuple(vae.vae.config.block_out_channels) == SMALL_VAE_PRESETS["f8-small"]["block_out_channels"]
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    # never over a folder that is not a VAE: one line, exit code 2, nothing written
    assert main(["vae", "train-generic", "--out", str(tmp_path / "other"), "--steps", "1"]) == 2
    assert "not a VAE folder" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "other").iterdir()] == ["notes.txt"]


def test_the_shipped_generic_vae_resolves_and_records_how_it_was_made():
    folder = resolve_pretrained("builtin:generic-vae")
    meta = json.loads((folder / "decodiff.json").read_text())
    assert "decodiff vae train-generic" in meta["description"] and meta["heldout_psnr_db"]
    assert load_vae(folder, image_size=128).fingerprint == meta["weights_sha256"]
