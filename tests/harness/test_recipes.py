"""Recipes: a recipe supplies values, explicit keys in a preset (and its extends chain) or on the
command line win, and the resolved config, its YAML and the README say which values departed."""

from pathlib import Path

import pytest
import yaml

from decodiff.harness.config import Config, ConfigError, build_config, to_yaml
from decodiff.harness.recipes import RECIPES, recipe_table, recipe_values

README = Path(__file__).resolve().parents[2] / "README.md"


def write(tmp_path: Path, name: str, data: dict) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_paper_recipe_is_table1s_starred_rows():
    cfg = build_config(None, ["recipe=paper"])
    assert cfg.process.patch_sizes == [1, 2, 4, 8] and cfg.process.r_mask == 0.7 and cfg.process.r_shuffle == 0.3
    assert (cfg.infer.gamma_p, cfg.infer.gamma_l) == (0.4, 0.4)
    assert cfg.infer.step_mapping == "from-top" and cfg.metrics.aupro_protocol == "deco-diff-code"
    assert cfg.metrics.image_label == "mask-max" and cfg.train.cache_augment == "exact"
    assert cfg.departures() == [] and cfg.recipe_text() == "paper (no departures)"


def test_authors_code_recipe_differs_from_paper_where_the_released_code_does():
    paper, code = recipe_values("paper"), recipe_values("authors-code")
    assert paper.keys() == code.keys()
    differ = sorted(k for k in paper if paper[k] != code[k])
    assert differ == ["infer.gamma_l", "infer.step_mapping", "process.patch_probs", "process.patch_sizes"]
    cfg = build_config(None, ["recipe=authors-code"])
    assert cfg.process.patch_sizes == [1, 2, 4, 8, 16] and cfg.infer.gamma_l == 0.2
    assert cfg.infer.step_mapping == "respacing" and cfg.departures() == []


def test_custom_is_the_config_defaults():
    assert build_config(None, ["recipe=custom"]) == build_config() == Config()
    assert Config().recipe == "custom" and Config().departures() == []


def test_preset_and_command_line_win_and_departures_name_them(tmp_path):
    write(tmp_path, "base.yaml", {"recipe": "paper", "infer": {"gamma_l": 0.2}, "train": {"epochs": 5}})
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "process": {"r_mask": 0.5}})
    cfg = build_config(child)
    assert cfg.recipe == "paper" and cfg.infer.gamma_l == 0.2 and cfg.process.r_mask == 0.5
    assert cfg.process.patch_sizes == [1, 2, 4, 8]  # not set anywhere: the recipe's
    assert [(d["key"], d["recipe"], d["value"]) for d in cfg.departures()] == [
        ("infer.gamma_l", 0.4, 0.2),
        ("process.r_mask", 0.7, 0.5),
    ]  # train.epochs is not a recipe key
    assert cfg.recipe_text() == "paper; departs in infer.gamma_l=0.2 (paper: 0.4), process.r_mask=0.5 (paper: 0.7)"
    # the command line wins over the preset; setting a recipe value explicitly is no departure
    cfg = build_config(child, ["infer.gamma_l=0.4"])
    assert [d["key"] for d in cfg.departures()] == ["process.r_mask"]
    # another recipe on the command line: its values, except where the preset sets a key
    cfg = build_config(child, ["recipe=authors-code"])
    assert cfg.process.patch_sizes == [1, 2, 4, 8, 16] and cfg.infer.gamma_l == 0.2
    assert [d["key"] for d in cfg.departures()] == ["process.r_mask"]
    # a key set to the field default but not to the recipe's value is a departure too
    cfg = build_config(None, ["recipe=paper", "metrics.aupro_protocol=mvtec"])
    assert cfg.departures() == [{"key": "metrics.aupro_protocol", "recipe": "deco-diff-code", "value": "mvtec"}]


def test_resolved_yaml_says_the_recipe_and_rebuilds_the_same_config(tmp_path):
    cfg = build_config(None, ["recipe=paper", "infer.gamma_l=0.2"])
    text = to_yaml(cfg)
    assert text.splitlines()[0] == "# recipe: paper; departs in infer.gamma_l=0.2 (paper: 0.4)"
    path = tmp_path / "config.yaml"
    path.write_text(text)
    again = build_config(str(path))
    assert again == cfg and again.departures() == cfg.departures()


def test_unknown_recipe_is_one_line():
    with pytest.raises(ConfigError, match=r"^bad config value 'recipe': expected 'paper', 'authors-code' or 'custom'"):
        build_config(None, ["recipe=papper"])


def test_demo_names_its_recipe_and_keeps_its_values():
    demo = build_config("demo")
    assert demo.recipe == "custom" and demo.departures() == []
    assert demo.process.patch_sizes == [1, 2, 4, 8] and (demo.infer.gamma_p, demo.infer.gamma_l) == (0.2, 0.8)
    assert demo.train.cache_augment == "variants" and demo.train.cache_variants == 4
    assert demo.infer.step_mapping == "respacing" and demo.metrics.image_label == "metadata"
    assert demo.model.init == "diffusers"


@pytest.mark.parametrize("name", [n for n in RECIPES if n != "custom"])
def test_readme_documents_every_recipe_setting(name):
    table = recipe_table(name)
    assert table in README.read_text(), f"README's {name} table differs from harness/recipes.py:\n{table}"
    for key in recipe_values(name):
        build_config(None, [f"recipe={name}"])  # every recipe key is a real config key
        assert f"`{key}`" in table


def test_paper_recipe_holds_every_starred_row_of_appendix_table2():
    """Table 1's numbers are appendix Table 2's starred rows: the paper recipe sets all of them."""
    from decodiff.reports.published import ablations, summary

    starred = [r for r in ablations() if r.table == "appendix Table 2" and r.default]
    assert len(starred) == 4
    cfg = build_config(None, ["recipe=paper"]).to_dict()
    table1 = summary("mvtec").query("method == 'DeCo-Diff'").set_index(["level", "metric"])["value"]
    for row in starred:
        for key, value in row.overrides.items():
            section, name = key.split(".")
            assert cfg[section][name] == value, (row.label, key)
        assert row.values["pixel_auprc"] == pytest.approx(table1[("pixel", "auprc")])
