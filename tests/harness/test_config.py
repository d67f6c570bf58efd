"""Config: presets, overrides, and one-line errors that name the key."""

from typing import Annotated

import pytest
from pydantic import BaseModel, ValidationError

from decodiff.harness.config import ConfigError, build_config, one_of, preset_names


def test_defaults_are_the_published_protocol():
    cfg = build_config()
    assert (cfg.data.resize, cfg.data.crop) == (288, 256)
    assert cfg.process.steps == 10 and cfg.process.r_mask == 0.7 and cfg.process.r_shuffle == 0.3
    assert (cfg.infer.reverse_steps, cfg.infer.strategy, cfg.infer.gamma_p, cfg.infer.gamma_l) == (5, "zt-1", 0.4, 0.2)
    assert cfg.model.size == "L" and cfg.train.batch_size == 128 and cfg.train.lr == 1e-4


def test_presets_load_and_extend():
    assert {"demo", "tiny"} <= set(preset_names())
    tiny = build_config("tiny")
    assert tiny.data.dataset == "demo" and tiny.model.size == "tiny"
    assert tiny.data.resize is None  # inherited from demo


def test_overrides_are_yaml_values():
    cfg = build_config("demo", ["train.lr=3e-4", "data.categories=[grass, coins]", "infer.gamma_p=null", "run.name=x"])
    assert cfg.train.lr == 3e-4 and cfg.data.categories == ["grass", "coins"] and cfg.infer.gamma_p is None


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("train.lrr=1", r"unknown config key 'train.lrr' \(allowed under train: .*lr,"),
        ("nope.x=1", r"unknown config key 'nope'"),
        ("train.lr=-1", r"bad config value 'train.lr': .*greater than 0"),
        ("infer.strategy=zt", r"bad config value 'infer.strategy': expected 'zt-1' or 'z0'"),
        ("model.size=XXL", r"bad config value 'model.size': must be one of"),
        ("infer.start_step=10", r"infer.start_step must be below process.steps"),
        ("process.patch_sizes=[1,2]", r"same length"),
        ("train.batch_size", r"expected key.sub=value"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(override, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
        build_config("demo", [override])
    assert "\n" not in str(info.value)


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError, match="no such preset .*demo"):
        build_config("nonexistent")


def test_digest_tracks_sections():
    a, b = build_config("demo"), build_config("demo", ["infer.reverse_steps=2"])
    assert a.digest("train", "model") == b.digest("train", "model")
    assert a.digest() != b.digest()


def test_a_key_given_twice_is_refused_naming_the_file_line_and_key(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("extends: tiny\ntrain:\n  lr: 0.001\n  lr: 0.1\n")
    with pytest.raises(ConfigError, match=rf"{path}:4: not valid YAML \(duplicate key 'lr' \(first on line 3\)\)"):
        build_config(str(path))


def test_extends_of_a_missing_preset_names_the_file_that_says_it(tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text("extends: nosuch\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\n")
    with pytest.raises(ConfigError, match=rf"{base}: extends: nosuch: no such preset"):
        build_config(str(child))


def test_one_of_checks_a_fields_value_and_lists_the_names_as_given():
    class Pick(BaseModel):
        name: Annotated[str, one_of({"a": 1, "b": 2}, "a or b")] = "a"

    assert Pick(name="b").name == "b"
    with pytest.raises(ValidationError, match="must be one of a or b"):
        Pick(name="c")
