"""`data.options` in the config: the reader's layout options reach the shards a run makes."""

import pytest

from decodiff.harness.config import ConfigError, build_config
from decodiff.harness.data import prepare_data


def test_realiad_resolution_from_the_config_picks_the_image_folder(realiad_root, tmp_path):
    sizes = {}
    for res in (256, 512):
        cfg = build_config(
            "demo",
            [
                "data.dataset=realiad",
                f"data.root={realiad_root}",
                f"data.options.resolution={res}",
                f"run.cache_dir={tmp_path / 'cache'}",
            ],
        )
        data = prepare_data(cfg)
        sizes[res] = (data.location, tuple(data.manifest.image_size))
        assert data.manifest.count("test", ["toy"]) == 7  # 5 normal views, 2 anomalous
    assert sizes[256][0] != sizes[512][0]  # another option, another shard set
    assert sizes[256][1] == (16, 16) and sizes[512][1] == (32, 32)  # the fixture's stand-ins for 256 and 512


def test_an_option_the_reader_does_not_have_is_named():
    with pytest.raises(
        ConfigError,
        match=r"data.options \['split_csv'\]: not options of the realiad reader "
        r"\(its options: resolution, json_dir\)",
    ):
        build_config("demo", ["data.dataset=realiad", "data.options.split_csv=x.csv"])


def test_a_changed_folder_gets_new_shards_not_stale_ones(folder_root, tmp_path):
    import shutil

    args = ["data.dataset=folder", f"data.root={folder_root}", f"run.cache_dir={tmp_path / 'cache'}"]
    first = prepare_data(build_config("demo", args))
    again = prepare_data(build_config("demo", args))
    assert again.location == first.location  # unchanged: the shards are reused
    shutil.copy(folder_root / "normal" / "img00.png", folder_root / "normal" / "img99.png")
    changed = prepare_data(build_config("demo", args))
    assert changed.location != first.location
    total = sum(changed.manifest.count(s, changed.categories) for s in ("train", "test"))
    assert total == sum(first.manifest.count(s, first.categories) for s in ("train", "test")) + 1
