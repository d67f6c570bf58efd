"""`run.time_budget`: the training steps sized to the budget from rates measured on this machine,
the one-line error when not even the minimum training fits, and a run that keeps its budget."""

import json

import pytest
import yaml

from decodiff.harness.bench import bench
from decodiff.harness.config import ConfigError, build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.training import budget


def _tiny(tmp_path, *extra):
    return build_config(
        "tiny",
        [f"run.cache_dir={tmp_path / 'cache'}", f"run.out_dir={tmp_path / 'runs'}", "tracking.enabled=false", *extra],
    )


RATES = {"train_step": 0.05, "encode_image": 0.001, "eval_image": 0.01, "vae_step": 0.02}


def test_plan_fills_the_budget_with_training_and_says_so(tmp_path):
    cfg = _tiny(tmp_path, "run.time_budget=3")
    data = prepare_data(cfg)
    p = budget.plan(cfg, data, elapsed=10.0, rates=RATES)
    est = p["estimated_seconds"]
    assert p["steps"] >= budget.minimum_steps(cfg) and p["steps"] % 10 == 0
    assert 10.0 + sum(est.values()) <= 3 * 60  # the plan ends inside the budget ...
    assert 10.0 + sum(est.values()) > 3 * 60 * 0.8  # ... and uses most of it for training
    assert est["vae"] > 0 and est["cache"] > 0 and est["evaluation"] > 0
    line = budget.plan_line(p)
    assert line.startswith("budget 3 min: training ") and f"{p['steps']:,} steps" in line and "ETA " in line
    no_vae = budget.plan(cfg, data, elapsed=10.0, rates={**RATES, "vae_step": 0.0})
    assert no_vae["steps"] > p["steps"] and "VAE" not in budget.plan_line(no_vae)  # a loaded VAE: more training


def test_the_cache_estimate_counts_the_encodings_the_cache_makes(tmp_path):
    """The exact cache encodes every shift of every image (81 at +-4 px), the variants cache a few draws."""
    from decodiff.harness.training.latent_cache import encodings_per_image

    exact = _tiny(tmp_path, "run.time_budget=30", "train.cache_augment=exact", "train.translate=4")
    drawn = _tiny(tmp_path, "run.time_budget=30", "train.cache_augment=variants", "train.cache_variants=4")
    assert encodings_per_image(exact) == 81 and encodings_per_image(drawn) == 4
    data = prepare_data(exact)
    slow_encode = {**RATES, "encode_image": 0.1}  # estimates are rounded to 0.1 s: make them large
    est_exact = budget.plan(exact, data, 0.0, slow_encode)["estimated_seconds"]["cache"]
    est_drawn = budget.plan(drawn, data, 0.0, slow_encode)["estimated_seconds"]["cache"]
    assert est_exact == pytest.approx(est_drawn * 81 / 4, rel=0.01)


def test_a_budget_below_the_minimum_training_is_one_config_error(tmp_path):
    cfg = _tiny(tmp_path, "run.time_budget=0.5")
    data = prepare_data(cfg)
    with pytest.raises(ConfigError) as err:
        budget.plan(cfg, data, elapsed=10.0, rates=RATES)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("run.time_budget=0.5 min is too small")
    assert f"minimum training of {budget.minimum_steps(cfg)} steps" in msg and "give at least" in msg
    with pytest.raises(ConfigError, match="run.time_budget"):
        build_config("tiny", ["run.time_budget=0"])


def test_a_plan_made_again_after_an_overlong_vae_fit_trains_the_minimum_and_says_so(tmp_path):
    cfg = _tiny(tmp_path, "run.time_budget=3")
    data = prepare_data(cfg)
    with pytest.raises(ConfigError):
        budget.plan(cfg, data, elapsed=170.0, rates=RATES)
    late = budget.plan(cfg, data, elapsed=170.0, rates=RATES, at_least=True)
    assert late["steps"] == budget.minimum_steps(cfg) and late["over_budget"] is True


def test_an_unreadable_kept_plan_is_planned_anew(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text('{"steps": "many"}')
    (tmp_path / "c.json").write_text('{"steps": 450}')
    assert [budget._earlier_steps(tmp_path / n) for n in ("a.json", "b.json", "c.json", "none.json")] == [
        None,
        None,
        450,
        None,
    ]


def test_round_steps_keeps_reruns_on_one_count():
    assert [budget.round_steps(n) for n in (104.9, 499, 1437.2, 1449, 12345)] == [100, 490, 1400, 1400, 12000]


def test_measure_times_the_runs_own_model_and_vae(tmp_path):
    cfg = _tiny(tmp_path)
    data = prepare_data(cfg)
    rates = budget.measure(cfg, data)
    assert set(rates) == {"train_step", "encode_image", "eval_image", "vae_step"}
    assert all(v > 0 for v in rates.values())  # tiny trains its VAE: its steps are timed too


@pytest.mark.slow
def test_bench_keeps_its_budget_and_records_the_steps_it_chose(tmp_path):
    minutes = 1.5
    out = bench(_tiny(tmp_path, f"run.time_budget={minutes}"))
    timings = json.loads((out.run_dir / "timings.json").read_text())
    plan = timings["budget"]
    assert plan["budget_minutes"] == minutes and plan["actual_seconds"] <= minutes * 60
    recorded = yaml.safe_load((out.run_dir / "config.yaml").read_text())
    assert recorded["train"]["max_steps"] == plan["steps"] and recorded["run"]["time_budget"] is None
    model = json.loads((out.run_dir / "provenance.json").read_text())["model"]
    assert model["steps"] == plan["steps"] and model["budget"]["steps"] == plan["steps"]
    # tiny trains its VAE: the plan was made again once the fit's real cost was known, and kept
    assert plan["replanned_after"] == "the VAE fit" and plan["first_plan"]["estimated_seconds"]["vae"] > 0
    assert plan["estimated_seconds"]["vae"] == 0  # the VAE is paid for: no estimate of it left
    kept = list((tmp_path / "cache" / budget.PLANS).glob("*.json"))
    assert [json.loads(k.read_text())["steps"] for k in kept] == [plan["steps"]]
    # a rerun finds the VAE cached, so a fresh plan would give the training more time (other steps,
    # another model); it trains the steps the first run chose instead, and so reuses that model
    again = bench(_tiny(tmp_path, f"run.time_budget={minutes}"))
    timings2 = json.loads((again.run_dir / "timings.json").read_text())
    assert timings2["budget"]["steps"] == plan["steps"] and timings2["budget"]["earlier_plan"] == str(kept[0])
    assert timings2["model_reused"] is True
