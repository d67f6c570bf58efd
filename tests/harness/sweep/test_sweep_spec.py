"""Sweep files: expansion into trials, identities, training groups, presets, cost, and the errors
that must stop a sweep before any trial starts (no Ray, no sweep folder)."""

import json
from pathlib import Path

import pytest
import yaml

from decodiff.harness.cli import main
from decodiff.harness.sweep.run import SweepOptions, check_data, dry_run, trial_company
from decodiff.harness.sweep.spec import SweepError, SweepSpec, plan_sweep, sweep_preset_names


def write(tmp_path: Path, spec: dict, name: str = "grid.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def test_grid_product_linked_axes_exclude_and_groups(tmp_path):
    spec = {
        "config": "tiny",
        "grid": {
            "infer.strategy": ["z0", "zt-1"],
            "infer.reverse_steps": [1, 2, 5],
            "gammas": [{"infer.gamma_p": 0.2, "infer.gamma_l": 0.4}, {"infer": {"gamma_p": 0.4, "gamma_l": 0.2}}],
            "train.max_steps": [5, 6],
        },
        "exclude": [{"infer.strategy": "zt-1", "infer.reverse_steps": 1}],
        "seeds": [0, 1],
    }
    plan = plan_sweep(write(tmp_path, spec))
    # 2 seeds x (2 x 3 - 1) x 2 gamma pairs x 2 step budgets
    assert len(plan.trials) == 2 * 5 * 2 * 2
    assert len({t.id for t in plan.trials}) == len(plan.trials)
    # only seed and train.max_steps change the weights: 4 trainings
    assert len(plan.groups()) == 4
    t = plan.trials[0]
    assert t.config.infer.gamma_l == 0.4 and t.config.run.seed == 0 and t.dataset == "demo"
    assert t.overrides == {
        "run.seed": 0,
        "infer.strategy": "z0",
        "infer.reverse_steps": 1,
        "infer.gamma_p": 0.2,
        "infer.gamma_l": 0.4,
        "train.max_steps": 5,
    }
    assert not any(x.config.infer.strategy == "zt-1" and x.config.infer.reverse_steps == 1 for x in plan.trials)


def test_identity_ignores_bookkeeping_and_follows_results(tmp_path):
    spec = {"config": "tiny", "grid": {"infer.gamma_p": [0.2, 0.4]}}
    a = plan_sweep(write(tmp_path, spec))
    b = plan_sweep(write(tmp_path, spec), ["run.out_dir=/elsewhere", "run.cache_dir=/c", "infer.save_maps=false"])
    assert [t.id for t in a.trials] == [t.id for t in b.trials]
    c = plan_sweep(write(tmp_path, spec), ["train.lr=0.001"])
    assert not {t.id for t in a.trials} & {t.id for t in c.trials}
    # command-line overrides win over an axis: the two trials collapse into one
    d = plan_sweep(write(tmp_path, spec), ["infer.gamma_p=0.3"])
    assert len(d.trials) == 1 and d.trials[0].config.infer.gamma_p == 0.3


def test_random_search_is_deterministic_and_in_range(tmp_path):
    spec = {
        "config": "tiny",
        "grid": {"infer.reverse_steps": [1, 2]},
        "samples": 3,
        "sample_seed": 7,
        "space": {
            "train.lr": {"loguniform": [1e-5, 1e-3]},
            "infer.strategy": {"choice": ["z0", "zt-1"]},
            "train.max_steps": {"randint": [3, 5]},
            "process.r_mask": {"uniform": [0.3, 0.7]},
        },
    }
    a = plan_sweep(write(tmp_path, spec))
    b = plan_sweep(write(tmp_path, spec))
    assert len(a.trials) == 6 and [t.id for t in a.trials] == [t.id for t in b.trials]
    for t in a.trials:
        assert 1e-5 <= t.config.train.lr <= 1e-3 and 3 <= t.config.train.max_steps <= 5
        assert 0.3 <= t.config.process.r_mask <= 0.7
    c = plan_sweep(write(tmp_path, {**spec, "sample_seed": 8}))
    assert [t.id for t in a.trials] != [t.id for t in c.trials]


def test_dataset_axis_with_shards(tmp_path):
    spec = {
        "datasets": {"mvtec": {"model.size": "tiny"}, "mpdd": {"data": {"dataset": "mpdd"}, "model.size": "XS"}},
        "set": {"train.max_steps": 3},
    }
    plan = plan_sweep(write(tmp_path, spec), shards={"mvtec": "/s/mvtec", "mpdd": "/s/mpdd"})
    by = {t.dataset: t for t in plan.trials}
    assert by["mvtec"].config.data.dataset == "mvtec" and by["mvtec"].config.data.shards == "/s/mvtec"
    assert by["mpdd"].config.model.size == "XS"
    assert "data.shards" not in by["mvtec"].overrides  # where the data lies is not part of the trial's identity
    moved = plan_sweep(write(tmp_path, spec), shards={"mvtec": "/t/mvtec", "mpdd": "/t/mpdd"})
    assert {t.id for t in moved.trials} == {t.id for t in plan.trials}
    with pytest.raises(SweepError, match="--shards visa=...: no data set of that name"):
        plan_sweep(write(tmp_path, spec), shards={"visa": "/s"})


def test_shards_flag_names_the_one_data_set_of_a_sweep_without_a_dataset_axis(tmp_path):
    """Without `datasets`, the trials run the config's data set: `--shards folder=DIR` (what the error for an
    unsharded folder tells the user to pass) must place it, and a name that is not that data set must fail."""
    spec = {"config": "own", "set": {"run.time_budget": None}, "grid": {"train.lr": [2e-4, 6e-4]}}
    plan = plan_sweep(write(tmp_path, spec), shards={"folder": "/s/photos"})
    assert {t.config.data.shards for t in plan.trials} == {"/s/photos"}
    assert all("data.shards" not in t.overrides for t in plan.trials)
    with pytest.raises(SweepError, match="--shards mvtec=...: .* runs one data set, 'folder'"):
        plan_sweep(write(tmp_path, spec), shards={"mvtec": "/s"})


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"config": "tiny", "grid": {"train.lrr": [1, 2]}}, "unknown config key 'train.lrr'"),
        ({"config": "tiny", "grid": {}}, "'grid' is empty"),
        ({"config": "tiny", "grid": {"infer.gamma_p": []}}, "grid.infer.gamma_p: expected a non-empty list"),
        ({"config": "tiny", "grid": {"infer.reverse_steps": [0]}}, "infer.reverse_steps"),
        ({"config": "tiny", "grdi": {"infer.gamma_p": [1]}}, "unknown sweep key 'grdi'"),
        ({"config": "tiny", "grid": {"gammas": [0.2]}}, "linked axis"),
        ({"config": "tiny", "grid": {"infer.gamma_p": [0.2]}, "samples": 3}, "needs a random 'space'"),
        ({"config": "tiny", "space": {"train.lr": {"gauss": [0, 1]}}}, "space.train.lr: expected one of"),
        ({"config": "tiny", "grid": {"infer.gamma_p": [0.2]}, "exclude": [{"infer.gamma_l": 0.2}]}, "not a sweep axis"),
        ({"config": "tiny", "grid": {"infer.gamma_p": [0.2]}, "exclude": [{"infer.gamma_p": 0.2}]}, "no trials left"),
        ({"config": "no-such-preset", "grid": {"infer.gamma_p": [0.2]}}, "no such preset"),
    ],
)
def test_bad_sweep_files_fail_with_one_line(tmp_path, spec, message):
    with pytest.raises(SweepError) as err:
        plan_sweep(write(tmp_path, spec))
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith(str(tmp_path))


def test_unsharded_data_set_is_an_error_before_anything(tmp_path):
    spec = {"config": "tiny", "datasets": ["mvtec"], "grid": {"infer.gamma_p": [0.2, 0.4]}}
    plan = plan_sweep(write(tmp_path, spec))
    with pytest.raises(SweepError, match="data set 'mvtec' is not sharded: shard it once"):
        check_data(plan)
    plan = plan_sweep(write(tmp_path, spec), shards={"mvtec": str(tmp_path / "nowhere")})
    with pytest.raises(SweepError, match="is not sharded at"):
        check_data(plan)
    plan = plan_sweep(
        write(tmp_path, {"config": "tiny", "grid": {"infer.gamma_p": [0.2]}}), [f"vae.pretrained={tmp_path / 'no-vae'}"]
    )
    with pytest.raises(SweepError, match="no VAE folder there"):
        check_data(plan)


@pytest.mark.parametrize(
    "args, message",
    [
        (["grid.yaml"], "unknown config key 'train.lrr'"),
        (["empty.yaml"], "'grid' is empty"),
        (["mvtec.yaml"], "data set 'mvtec' is not sharded"),
    ],
)
def test_cli_errors_exit_2_before_any_trial(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, {"config": "tiny", "grid": {"train.lrr": [1]}}, "grid.yaml")
    write(tmp_path, {"config": "tiny", "grid": {}}, "empty.yaml")
    write(tmp_path, {"config": "tiny", "datasets": ["mvtec"], "grid": {"infer.gamma_p": [0.2]}}, "mvtec.yaml")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["sweep", *args, f"run.out_dir={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("decodiff: error:") and message in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no sweep folder, no Ray files


def test_every_preset_expands(tmp_path):
    names = sweep_preset_names()
    assert {
        "tiny-grid",
        "table3-strategy-steps",
        "table4-discrepancy",
        "appendix-table1-model-sizes",
        "appendix-table2-patch-sizes",
        "appendix-table2-r-mask",
        "appendix-table2-r-shuffle",
        "appendix-table2-gammas",
        "paper-main",
    } <= set(names)
    counts = {}
    for name in names:
        plan = plan_sweep(name)
        counts[name] = (len(plan.trials), len(plan.groups()))
    assert counts["tiny-grid"] == (4, 2)
    assert counts["table3-strategy-steps"] == (7, 1)  # inference only: one training
    assert counts["table4-discrepancy"] == (4, 1)
    assert counts["appendix-table1-model-sizes"] == (5, 5)
    assert counts["appendix-table2-gammas"] == (16, 1)
    assert counts["appendix-table2-patch-sizes"] == (3, 3)
    assert counts["paper-main"] == (4, 4)
    main_plan = {t.dataset: t.config for t in plan_sweep("paper-main").trials}
    assert main_plan["visa"].train.rotate180 and main_plan["visa"].train.epochs == 200
    assert main_plan["mpdd"].model.size == "M" and main_plan["realiad"].model.size == "XL"
    gammas = {(t.config.infer.gamma_p, t.config.infer.gamma_l) for t in plan_sweep("appendix-table2-gammas").trials}
    assert (None, None) in gammas and (0.4, 0.2) in gammas


def test_dry_run_lists_trials_and_cost(tmp_path, capsys):
    plan = plan_sweep("tiny-grid", [f"run.out_dir={tmp_path}"])
    info = dry_run(plan)
    assert info["trainings"] == 2 and info["cost"]["trainings"] == 2
    assert info["cost"]["train_steps"] == 10 + 20
    assert info["cost"]["eval_unet_calls"] == info["cost"]["eval_images"] // 4 * (1 + 2 + 1 + 2)
    assert not (tmp_path / "sweeps").exists()
    assert main(["sweep", "tiny-grid", "--dry-run", "--json", f"run.out_dir={tmp_path}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["overrides"] for t in out["trials"]] == [
        {"train.max_steps": 10, "infer.reverse_steps": 1},
        {"train.max_steps": 10, "infer.reverse_steps": 2},
        {"train.max_steps": 20, "infer.reverse_steps": 1},
        {"train.max_steps": 20, "infer.reverse_steps": 2},
    ]


def test_resume_keeps_trials_whose_ids_changed_with_the_code(tmp_path):
    """A finished trial written before a config field existed is recognised by its config."""
    from decodiff.harness.config import to_yaml
    from decodiff.harness.sweep.run import _adopt_earlier

    plan = plan_sweep(write(tmp_path, {"config": "tiny", "grid": {"infer.gamma_p": [0.2, 0.4]}}))
    folder = tmp_path / "sweep"
    for old_id, trial, change in (("told1", plan.trials[0], None), ("told2", plan.trials[1], ("lr", 0.5))):
        cfg = yaml.safe_load(to_yaml(trial.config))
        del cfg["train"]["keep_checkpoints"]  # the old code had no such field
        if change:
            cfg["train"][change[0]] = change[1]  # a different experiment
        run_dir = folder / "trials" / old_id / "run"
        run_dir.mkdir(parents=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
        (folder / "trials" / old_id / "result.json").write_text(
            json.dumps({"id": old_id, "dataset": "demo", "validation": None, "run_dir": str(run_dir), "records": []})
        )
    _adopt_earlier(plan, folder)
    adopted = json.loads((folder / "trials" / plan.trials[0].id / "result.json").read_text())
    assert adopted["adopted_from"] == "told1" and adopted["id"] == plan.trials[0].id
    assert not (folder / "trials" / plan.trials[1].id / "result.json").exists()
    assert (folder / "trials" / "told1" / "result.json").is_file()  # nothing moved or lost


# ---- recipes (README "Recipes") ------------------------------------------------------------------
PAPER_PRESETS = (
    "paper-main",
    "table3-strategy-steps",
    "table4-discrepancy",
    "appendix-table1-model-sizes",
    "appendix-table2-gammas",
    "appendix-table2-patch-sizes",
    "appendix-table2-r-mask",
    "appendix-table2-r-shuffle",
)


def test_every_preset_names_its_recipe_and_paper_trials_depart_only_in_their_axis():
    from decodiff.harness.sweep.spec import read_spec

    for name in sweep_preset_names():
        spec, _, _ = read_spec(name)
        assert spec.recipe is not None, f"configs/sweeps/{name}.yaml names no recipe"
        plan = plan_sweep(name)
        assert plan.recipe() == spec.recipe and all(t.config.recipe == spec.recipe for t in plan.trials)
        if name in PAPER_PRESETS:
            assert spec.recipe == "paper"
            for t in plan.trials:  # each trial is the paper's row: only its own setting departs
                assert {d["key"] for d in t.config.departures()} <= set(t.overrides), (name, t.overrides)


def test_gamma_preset_under_the_paper_recipe_holds_the_starred_row():
    plan = plan_sweep("appendix-table2-gammas")
    starred = [t for t in plan.trials if (t.config.infer.gamma_p, t.config.infer.gamma_l) == (0.4, 0.4)]
    assert len(starred) == 1 and starred[0].config.recipe == "paper" and starred[0].config.departures() == []
    best = [t for t in plan.trials if (t.config.infer.gamma_p, t.config.infer.gamma_l) == (0.4, 0.2)][0]
    assert best.config.departures() == [{"key": "infer.gamma_l", "recipe": 0.4, "value": 0.2}]
    # the released code's recipe on the command line: every trial says it
    assert plan_sweep("appendix-table2-gammas", ["recipe=authors-code"]).recipe() == "authors-code"


def test_dry_run_json_shows_the_recipe_of_paper_main_and_the_ablations(tmp_path, capsys):
    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data

    shards = prepare_data(build_config("tiny", [f"run.cache_dir={tmp_path / 'cache'}"])).location
    out = tmp_path / "runs"
    sets = [
        "--shards",
        f"mvtec={shards}",
        "--shards",
        f"visa={shards}",
        "--shards",
        f"mpdd={shards}",
        "--shards",
        f"realiad={shards}",
    ]
    assert main(["sweep", "paper-main", "--dry-run", "--json", *sets, f"run.out_dir={out}"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["recipe"] == "paper" and len(info["trials"]) == 4
    assert all(t["recipe"] == "paper" and t["departures"] == [] for t in info["trials"])
    for name in PAPER_PRESETS[1:]:
        assert main(["sweep", name, "--dry-run", "--json", "--shards", f"mvtec={shards}", f"run.out_dir={out}"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["recipe"] == "paper" and all(t["recipe"] == "paper" for t in info["trials"]), name
    assert (
        main(["sweep", "table3-strategy-steps", "--dry-run", "--shards", f"mvtec={shards}", f"run.out_dir={out}"]) == 0
    )
    text = capsys.readouterr().out
    assert "recipe: paper" in text and "[departs from paper: infer.reverse_steps" in text
    assert not (out / "sweeps").exists()


def test_a_trial_from_before_model_init_and_cache_augment_ran_as_the_old_code_did():
    from decodiff.harness.config import build_config
    from decodiff.harness.sweep.spec import same_experiment

    old = build_config("tiny").to_dict()
    del old["model"]["init"], old["train"]["cache_augment"], old["recipe"]
    assert same_experiment(old, build_config("tiny"))  # diffusers init, cache variants: as before
    assert not same_experiment(old, build_config("tiny", ["model.init=ldm"]))
    assert not same_experiment(old, build_config("tiny", ["train.cache_augment=exact"]))


@pytest.mark.parametrize(
    ("items", "spec", "options", "shared"),
    [
        (3, {"resources": {"cpus": 2}}, {"cpus": 2}, False),  # one at a time: threads may spin
        (3, {"resources": {"cpus": 1}}, {"cpus": 2}, True),  # two at once on two cores
        (3, {"resources": {"cpus": 1}, "max_concurrent": 1}, {"cpus": 2}, False),
        (1, {"resources": {"cpus": 1}}, {"cpus": 8}, False),  # one work item
        (3, {"resources": {"cpus": 4}}, {"cpus": 2}, False),  # more than the machine: still one at a time
        (3, {"resources": {"cpus": 1, "processes": 2}}, {"cpus": 2}, True),  # DDP inside a trial
        (3, {"resources": {"cpus": 2}}, {"cpus": 2, "address": "auto"}, True),  # a cluster's nodes may be shared
    ],
)
def test_sweep_threads_sleep_only_where_work_items_share_cores(items, spec, options, shared):
    company = trial_company(items, SweepSpec(**spec), SweepOptions(**options))
    assert (company is not None) == shared
