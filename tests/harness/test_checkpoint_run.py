"""`evaluate_checkpoint`, the call behind `decodiff evaluate`: a checkpoint trained here is
evaluated into a run folder of its own; one that does not fit the config is refused, naming
the key to change, before any image is read."""

import json

import pytest

from decodiff.harness.checkpoint_run import evaluate_checkpoint
from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.errors import CheckpointError
from decodiff.harness.training.model_cache import trained_model
from decodiff.harness.training.vae_fit import get_vae


def test_a_trained_checkpoint_evaluates_and_a_mismatched_config_is_refused(tmp_path):
    common = [
        f"run.out_dir={tmp_path / 'runs'}",
        f"run.cache_dir={tmp_path / 'cache'}",
        "tracking.enabled=false",
        "metrics.bootstrap=0",
        "vae.steps=4",
        "train.max_steps=2",
        "run.threads=1",
        "infer.baselines=[]",
        "infer.reverse_steps=1",
    ]
    cfg = build_config("tiny", common)
    data = prepare_data(cfg)
    _, _, info, _ = trained_model(cfg, data, get_vae(cfg, data))
    res = evaluate_checkpoint(cfg, info["checkpoint"])
    assert res.report.is_file() and res.run_dir.parent == (tmp_path / "runs").resolve()
    assert res.run_dir.name.startswith("tiny-evaluate-") and res.summary["run_dir"] == str(res.run_dir)
    prov = json.loads((res.run_dir / "provenance.json").read_text())
    assert prov["model"]["checkpoint"] == info["checkpoint"] and prov["model"]["reused"] is True
    assert {r["category"] for r in res.records} >= {"grass", "mean"}
    assert "training recipe" not in res.report.read_text()  # evaluated under the recipe it was trained with
    # evaluated under another recipe: the report and provenance say which one made the model
    other = evaluate_checkpoint(build_config("tiny", common + ["recipe=paper"]), info["checkpoint"])
    text = other.report.read_text()
    assert "training recipe" in text and "custom (no recipe" in text.split("training recipe", 1)[1].splitlines()[0]
    # trained under the paper's recipe, evaluated with another inference setting: inference is the run's own
    paper = build_config("tiny", common + ["recipe=paper", "train.max_steps=3"])  # a model of its own
    _, _, pinfo, _ = trained_model(paper, prepare_data(paper), get_vae(paper, prepare_data(paper)))
    own_infer = evaluate_checkpoint(
        build_config("tiny", common + ["recipe=paper", "train.max_steps=3", "infer.gamma_l=0.2"]), pinfo["checkpoint"]
    )
    assert "training recipe" not in own_infer.report.read_text()
    with pytest.raises(CheckpointError, match="a UNet of size tiny, but the config says model.size=XS"):
        evaluate_checkpoint(build_config("tiny", common + ["model.size=XS"]), info["checkpoint"])
    with pytest.raises(CheckpointError, match="pass method=deco-diff"):
        evaluate_checkpoint(
            build_config("tiny", common + ["method=ddim-recon", "infer.start_step=4"]), info["checkpoint"]
        )
    assert len(list((tmp_path / "runs").iterdir())) == 3  # the refused ones made no run folder
