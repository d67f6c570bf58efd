"""The method switch (deco-diff | ddim-recon | vae-recon) through the harness: config checks,
training keys that keep the baselines' models apart, and a tiny bench run of each method on
the same data and VAE."""

import json

import pytest

from decodiff.harness.cli import main
from decodiff.harness.config import ConfigError, build_config


def test_config_checks_the_method_combinations():
    assert build_config("tiny").method == "deco-diff"
    assert (
        build_config("tiny", ["method=ddim-recon", "infer.start_step=4", "infer.reverse_steps=3"]).method
        == "ddim-recon"
    )
    with pytest.raises(ConfigError, match="expected 'deco-diff', 'ddim-recon' or 'vae-recon'"):
        build_config("tiny", ["method=diffusion"])
    with pytest.raises(ConfigError, match="strategy=z0 applies to method=deco-diff only"):
        build_config("tiny", ["method=ddim-recon", "infer.strategy=z0"])
    with pytest.raises(ConfigError, match="set infer.combination=pixel and infer.pixel_reference=input"):
        build_config("tiny", ["method=vae-recon"])
    build_config("tiny", ["method=vae-recon", "infer.combination=pixel", "infer.pixel_reference=input"])


def test_demo_baselines_sweep_trains_each_method_once():
    """The shipped comparison: the ablations reuse DeCo-Diff's model, the ddim-recon noise steps
    reuse one baseline model, and the training settings are otherwise the demo preset's."""
    from decodiff.harness.sweep.spec import plan_sweep

    plan = plan_sweep("demo-baselines")
    by_method: dict[str, set[str]] = {}
    for t in plan.trials:
        by_method.setdefault(t.config.method, set()).add(t.group)
    assert {m: len(g) for m, g in by_method.items()} == {"deco-diff": 1, "ddim-recon": 1, "vae-recon": 1}
    deco = [t.config for t in plan.trials if t.config.method == "deco-diff"]
    assert {(c.infer.strategy, c.infer.combination) for c in deco} >= {
        ("zt-1", "geometric"),
        ("z0", "geometric"),
        ("zt-1", "pixel"),
    }
    budgets = {
        (t.config.train.model_dump_json(), t.config.model.size, t.config.vae.model_dump_json()) for t in plan.trials
    }
    assert len(budgets) == 1  # equal training budget, model size and VAE for every method


@pytest.mark.slow
def test_each_method_runs_on_the_same_data_and_vae(tmp_path, capsys):
    from decodiff.harness.bench import bench
    from decodiff.harness.data import prepare_data
    from decodiff.harness.methods import make_process
    from decodiff.harness.training.model_cache import training_key
    from decodiff.harness.training.spec import training_spec
    from decodiff.harness.training.vae_fit import get_vae
    from decodiff.models.ddim_recon import NoiseProcess
    from decodiff.models.deviation import DeviationProcess

    common = [
        f"run.out_dir={tmp_path / 'runs'}",
        f"run.cache_dir={tmp_path / 'cache'}",
        "tracking.enabled=false",
        "metrics.bootstrap=0",
        "vae.steps=10",
        "train.max_steps=6",
        "run.threads=1",
    ]
    methods = {
        "deco-diff": [],
        "ddim-recon": ["method=ddim-recon", "infer.start_step=4", "infer.reverse_steps=3"],
        "vae-recon": ["method=vae-recon", "infer.combination=pixel", "infer.pixel_reference=input"],
    }
    cfgs = {m: build_config("tiny", common + o) for m, o in methods.items()}
    assert isinstance(make_process(cfgs["deco-diff"]), DeviationProcess)
    assert isinstance(make_process(cfgs["ddim-recon"]), NoiseProcess)

    data = prepare_data(cfgs["deco-diff"])
    vae = get_vae(cfgs["deco-diff"], data)
    spec = training_spec(cfgs["deco-diff"], data, vae)
    assert "method" not in spec  # DeCo-Diff's training keys are those of earlier versions
    assert training_spec(cfgs["ddim-recon"], data, vae)["method"] == "ddim-recon"
    assert training_key(cfgs["ddim-recon"], data, vae) != training_key(cfgs["deco-diff"], data, vae)

    results = {m: bench(c) for m, c in cfgs.items()}
    for m, r in results.items():
        means = {(x["level"], x["metric"]): x["value"] for x in r.records if x["category"] == "mean"}
        assert means[("pixel", "auprc")] is not None and 0 <= means[("pixel", "auprc")] <= 1, m
        prov = json.loads((r.run_dir / "provenance.json").read_text())
        assert f"\nmethod: {m}\n" in (r.run_dir / "config.yaml").read_text()
        if m == "vae-recon":
            assert prov["model"]["steps"] == 0 and prov["model"]["checkpoint"] is None
            assert "Decoder(Encoder(x)) - x" in (r.run_dir / "report.md").read_text()
        else:
            info = json.loads(
                (
                    tmp_path / "cache" / "models" / training_key(cfgs[m], data, vae) / "checkpoint" / "info.json"
                ).read_text()
            )
            assert info["method"] == m and info["steps"] == 6
    models = sorted(p.name for p in (tmp_path / "cache" / "models").iterdir() if p.is_dir())
    assert len(models) == 2  # one per trained method; vae-recon trains nothing

    # a checkpoint is evaluated only as the method it was trained for
    ckpt = tmp_path / "cache" / "models" / training_key(cfgs["ddim-recon"], data, vae) / "checkpoint"
    capsys.readouterr()
    code = main(["evaluate", "--checkpoint", str(ckpt), "--config", "tiny", *common])
    assert code == 1 and "trained as method=ddim-recon, but the config says method=deco-diff" in capsys.readouterr().err
    # patch sizes that do not divide the latent: one line before training (the published code crashes mid-run)
    code = main(["train", "--config", "tiny", *common, "process.patch_sizes=[3]", "process.patch_probs=[1.0]"])
    assert code == 2 and "process.patch_sizes [3] do not divide the 8x8 latent" in capsys.readouterr().err
