"""`decodiff predict` on real image files: maps, scores, a threshold chosen without test labels, and
images of another size, grey-scale or unreadable handled in the open (never a silent wrong answer).
The checkpoint is a real (untrained) tiny UNet saved as training saves one, with the shipped demo VAE."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from decodiff.datasets.imageio import DataError
from decodiff.harness.cli import main
from decodiff.harness.config import build_config
from decodiff.harness.evaluation.predict import choose_threshold, load_scorer, predict
from decodiff.harness.training.checkpoint import model_spec, save_model
from decodiff.harness.training.vae_fit import resolve_pretrained
from decodiff.models.unet import build_unet

CATS = ["brick", "coffee", "coins", "grass"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    cfg = build_config(
        "tiny", ["vae.pretrained=builtin:demo-vae", "vae.small=f8-small", f"run.cache_dir={root / 'cache'}"]
    )
    torch.manual_seed(0)
    spec = model_spec("tiny", len(CATS), True, 4, 8, None, CATS)
    model = build_unet("tiny", num_classes=len(CATS), conditional=True, latent_channels=4, sample_size=8)
    info = {"method": "deco-diff", "vae_location": str(resolve_pretrained("builtin:demo-vae")), "config": cfg.to_dict()}
    save_model(root / "checkpoint", model, spec, info)
    return root / "checkpoint"


@pytest.fixture()
def images(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    base = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(base).save(d / "plain.png")
    Image.fromarray(base).resize((96, 80)).save(d / "sub" / "bigger.png")
    Image.fromarray(base[..., 0]).save(d / "grey.png")
    (d / "broken.png").write_bytes(b"not an image")
    (d / "notes.txt").write_text("ignored: not an image suffix")
    return d


def test_predict_writes_maps_scores_and_decisions_and_says_what_it_changed(checkpoint, images, tmp_path):
    scorer = load_scorer(checkpoint, category="brick")
    res = predict(scorer, [images], tmp_path / "out", choose_threshold(scorer, threshold=0.5))
    rows = list(csv.DictReader((tmp_path / "out" / "scores.csv").open()))
    assert [r["name"] for r in rows] == ["grey", "plain", "sub/bigger"]
    for r in rows:
        amap = np.load(tmp_path / "out" / "maps" / f"{r['name']}.npy")
        assert amap.shape == (64, 64) and amap.dtype == np.float32
        assert float(r["score"]) == pytest.approx(float(amap.max()), rel=1e-6)  # image score = the map's max
        assert r["anomalous"] == str(int(float(r["score"]) >= 0.5))
        assert (tmp_path / "out" / "overlays" / f"{r['name']}.png").is_file()
    assert {r["name"]: r["converted"] for r in rows} == {"grey": "L", "plain": "", "sub/bigger": ""}
    assert res.skipped == [{"path": str(images / "broken.png"), "reason": res.skipped[0]["reason"]}]
    assert "not a readable image" in res.skipped[0]["reason"]
    assert any("1 image(s) not of 64x64" in n for n in res.notes)
    assert any("mode L" in n and "converted to RGB" in n for n in res.notes)
    summary = json.loads((tmp_path / "out" / "predict.json").read_text())
    assert summary["threshold"] == {"value": 0.5, "how": "given (--threshold)"} and summary["images"] == 3
    # a grey image is its RGB copy: the same score
    grey_rgb = tmp_path / "rgb"
    grey_rgb.mkdir()
    Image.open(images / "grey.png").convert("RGB").save(grey_rgb / "grey.png")
    again = predict(scorer, [grey_rgb], tmp_path / "out2", choose_threshold(scorer, threshold=0.5))
    row = next(csv.DictReader((again.out / "scores.csv").open()))
    assert float(row["score"]) == pytest.approx(float(rows[0]["score"]), rel=1e-4)  # batch of 1 vs 3: last bits


def test_a_score_from_the_latent_part_is_not_the_saved_maps_maximum_and_says_so(checkpoint, images, tmp_path):
    """infer.image_map=latent (no preset's default): the saved map is still Eq. 15's, the score is the latent
    part's maximum, and predict.json says which, so nobody takes the map's maximum for the score."""
    plain, latent = (load_scorer(checkpoint, category="brick", overrides=o) for o in ([], ["infer.image_map=latent"]))
    a = predict(plain, [images], tmp_path / "a", choose_threshold(plain, threshold=0.5))
    b = predict(latent, [images], tmp_path / "b", choose_threshold(latent, threshold=0.5))
    assert "infer.image_map=map" in a.summary["score"] and "maximum of the anomaly map" in a.summary["score"]
    assert "infer.image_map=latent" in b.summary["score"] and "not the saved map" in b.summary["score"]
    rows_a, rows_b = (list(csv.DictReader((r.out / "scores.csv").open())) for r in (a, b))
    assert len(rows_a) == len(rows_b) == 3
    for ra, rb in zip(rows_a, rows_b):
        amap = np.load(a.out / "maps" / f"{ra['name']}.npy")
        np.testing.assert_array_equal(amap, np.load(b.out / "maps" / f"{rb['name']}.npy"))  # the same localisation
        assert float(ra["score"]) == pytest.approx(float(amap.max()), rel=1e-6)
        assert 0.0 <= float(rb["score"]) <= 1.0  # the latent part, clipped and scaled
        assert float(rb["score"]) != pytest.approx(float(amap.max()), rel=1e-3)
    assert json.loads((b.out / "predict.json").read_text())["score"] == b.summary["score"]


def test_threshold_from_held_out_normal_images_is_their_quantile(checkpoint, images, tmp_path):
    scorer = load_scorer(checkpoint, category="coins")
    t = choose_threshold(scorer, normal=[images], quantile=0.5)
    scores = sorted(
        float(r["score"])
        for r in csv.DictReader(predict(scorer, [images], tmp_path / "o", t).out.joinpath("scores.csv").open())
    )
    assert t.value == pytest.approx(scores[1], rel=1e-6)  # the "higher" median of three
    assert "0.5 quantile of the scores of 3 normal images" in t.how


def test_no_readable_image_is_one_line_and_exit_1(checkpoint, tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.png").write_bytes(b"xx")
    with pytest.raises(DataError, match="no readable image among the 1 file"):
        predict(
            load_scorer(checkpoint, category="grass"),
            [d],
            tmp_path / "o",
            choose_threshold(load_scorer(checkpoint, category="grass"), threshold=0.1),
        )
    assert not (tmp_path / "o" / "scores.csv").exists()
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(tmp_path / "o"),
                str(d),
                "--threshold",
                "0.1",
                "--category",
                "grass",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("decodiff: error: no readable image")


def test_cli_chooses_the_threshold_on_training_images_and_prints_json(checkpoint, images, tmp_path, capsys):
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(tmp_path / "o"),
                "--category",
                "brick",
                "--json",
                str(images / "plain.png"),
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 1 and "normal training images of 'brick'" in out["threshold"]["how"]
    assert "seen in training" in out["threshold"]["how"]
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o"), str(images)]) == 2
    assert "--category: the model knows 4 categories" in capsys.readouterr().err
