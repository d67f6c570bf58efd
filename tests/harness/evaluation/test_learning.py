"""The whole pipeline has to learn: DeCo-Diff trained for a few seconds on a tiny demo set must beat
both a UNet that outputs zeros (no correction: the map is empty) and the same UNet untrained. A
training loop that does nothing, a loss that does not reach the weights, or a sampler that ignores
the model fails this test."""

import pytest
import torch

from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.evaluation.evaluate import evaluate
from decodiff.harness.training.checkpoint import build_from_spec, load_model
from decodiff.harness.training.loop import train
from decodiff.harness.training.vae_fit import get_vae


class ZeroUNet(torch.nn.Module):
    """Predicts eta = 0 everywhere: z0_hat = z, so nothing is corrected."""

    def forward(self, z, t, c):
        return torch.zeros_like(z)


def _means(records):
    return {(r["level"], r["metric"]): r["value"] for r in records if r["category"] == "mean"}


@pytest.mark.slow  # 12 s on a quiet 2-core machine, 28 s under load
def test_trained_deco_diff_beats_no_correction_and_an_untrained_unet(tmp_path):
    cfg = build_config(
        "tiny",
        [
            f"run.cache_dir={tmp_path / 'cache'}",
            "vae.pretrained=builtin:demo-vae",
            "vae.small=f8-small",
            "data.categories=[coins,brick]",
            "train.max_steps=25",
            "train.lr=2e-3",
            "train.warmup=5",
            "run.threads=1",
            "infer.baselines=[]",
            "metrics.bootstrap=0",
            "tracking.enabled=false",
        ],
    )
    data = prepare_data(cfg)
    vae = get_vae(cfg, data)
    result = train(cfg, data, vae, tmp_path / "train")
    model, spec, _ = load_model(result.checkpoint)
    trained = _means(evaluate(cfg, data, model, vae, spec["classes"]).records)
    zero_records = evaluate(cfg, data, ZeroUNet(), vae, spec["classes"]).records
    torch.manual_seed(1)
    untrained = _means(evaluate(cfg, data, build_from_spec(spec), vae, spec["classes"]).records)
    # no correction: every map is zero, so no metric is defined (a constant map ranks nothing)
    assert all(r["value"] is None and r["reason"] for r in zero_records if r["category"] == "mean")
    zero = {k: 0.5 if "auroc" in k[1] else 0.0 for k in trained}  # what an empty map is worth at best
    for key in (("pixel", "auroc"), ("pixel", "auprc")):
        assert trained[key] > zero[key] + 0.1, (key, trained, zero)
        assert trained[key] > untrained[key] + 0.08, (key, trained, untrained)
    assert trained[("pixel", "auroc")] > 0.75
