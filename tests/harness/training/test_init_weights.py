"""model.init_from: the four sources told apart and read without unpickling code, a load short of
complete stopping the run with the names before any training, the init file's digest in the
training key, and a training from an initialisation resuming bitwise."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from decodiff.harness.cli import main
from decodiff.harness.training.checkpoint import CheckpointError, build_from_spec, load_model
from decodiff.harness.training.init_weights import init_digest, init_plan, read_source

TINY = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "authors-unet-tiny"
CUSTOM = dict(channels=32, heads=2, context_dim=32, mult=[1, 2, 4], attention=[True, True, True], layers=2, dropout=0.4)


def fixture(name: str) -> Path:
    if not (TINY / name).is_file():
        pytest.skip(f"{TINY} is absent (the shared/ folder beside the repository holds the authors' fixtures)")
    return TINY / name


def skeleton(spec: dict):
    with torch.device("meta"):
        return build_from_spec(spec)


def custom_spec(classes: list[str]) -> dict:
    return {
        "size": "custom",
        "preset": CUSTOM,
        "num_classes": len(classes),
        "conditional": True,
        "latent_channels": 4,
        "sample_size": 16,
        "dropout": None,
        "classes": classes,
    }


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A 4-step tiny training: the checkpoint other trainings start from."""
    root = tmp_path_factory.mktemp("init")
    ov = [
        f"run.cache_dir={root / 'cache'}",
        "run.device=cpu",
        "vae.steps=4",
        "train.max_steps=4",
        "train.checkpoint_every=2",
    ]
    assert main(["train", "--config", "tiny", "--out", str(root / "base"), *ov]) == 0
    return ov, root, root / "base" / "checkpoint"


def test_sources_are_told_apart_and_code_carrying_pickles_refused(base, tmp_path):
    _, _, ckpt = base
    assert read_source(fixture("authors-format.pt")).kind == "authors"
    ldm = read_source(fixture("ldm-format.ckpt"))
    assert ldm.kind == "ldm" and ldm.ldm.class_table.shape == (1000, 32)
    ours = read_source(ckpt.parent)  # a training folder: its checkpoint/ is taken
    assert ours.kind == "decodiff" and ours.class_names == json.loads((ckpt / "model.json").read_text())["classes"]
    model, _, _ = load_model(ckpt)
    model.unet.save_pretrained(tmp_path / "diffusers")
    assert read_source(tmp_path / "diffusers").kind == "diffusers"

    torch.save({"model": {"w": torch.zeros(1)}, "args": torch.nn.Linear(1, 1)}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match=r"code.pt: cannot be read as plain tensors with torch.load"):
        read_source(tmp_path / "code.pt")
    torch.save({"model": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="holds no UNet in the LDM layout"):
        read_source(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such file or folder"):
        init_digest(tmp_path / "absent.pt")


def test_ldm_class_table_is_sliced_and_extended_rows_are_the_models_own():
    spec = custom_spec(["a", "b", "c", "d"])
    plan = init_plan(str(fixture("ldm-format.ckpt")), False, skeleton(spec), spec["classes"])
    assert plan.report.full and plan.report.class_rows == {"a": 0, "b": 1, "c": 2, "d": 3}  # 1000 rows: sliced
    plan = init_plan(str(fixture("authors-format.pt")), False, skeleton(spec), spec["classes"])
    assert plan.report.full and plan.report.class_rows["d"] is None and "d<-new row" in plan.report.rows_line()


def test_a_diffusers_folder_has_no_class_table_so_only_a_partial_load(base, tmp_path):
    _, _, ckpt = base
    model, spec, _ = load_model(ckpt)
    model.unet.save_pretrained(tmp_path / "d")
    with pytest.raises(CheckpointError, match=r"missing \(1\): class_tokens.weight.*init_partial=true"):
        init_plan(str(tmp_path / "d"), False, skeleton(spec), spec["classes"])
    rep = init_plan(str(tmp_path / "d"), True, skeleton(spec), spec["classes"]).report
    assert len(rep.loaded) == rep.total - 1 and rep.missing == ["class_tokens.weight"]


def test_a_renamed_or_reshaped_tensor_stops_the_training_before_it_starts(base, tmp_path, capsys):
    ov, _, ckpt = base
    state = load_file(str(ckpt / "model.safetensors"))
    for case, edit in (
        ("renamed", lambda s: s.update({"unet.conv_in.weightX": s.pop("unet.conv_in.weight")})),
        ("reshaped", lambda s: s.update({"unet.conv_out.bias": torch.zeros(5)})),
    ):
        bad = tmp_path / case
        bad.mkdir()
        shutil.copy(ckpt / "model.json", bad / "model.json")
        s = dict(state)
        edit(s)
        save_file(s, str(bad / "model.safetensors"))
        out = tmp_path / f"out-{case}"
        assert main(["train", "--config", "tiny", "--out", str(out), *ov, f"model.init_from={bad}"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith(f"decodiff: error: model.init_from={bad} (checkpoint of this project): ")
        named = "unet.conv_in.weightX" if case == "renamed" else "unet.conv_out.bias: file (5,) vs model (4,)"
        assert named in err[-1]
        assert not any("train:" in line for line in err) and not (out / "train_state").exists()


def test_training_from_an_initialisation_resumes_bitwise_and_keys_by_the_files_digest(base, capsys):
    ov, root, ckpt = base
    ovi = [*ov, f"model.init_from={ckpt}"]
    out = root / "from-init"
    assert main(["train", "--config", "tiny", "--out", str(out), "--json", *ovi]) == 0
    cap = capsys.readouterr()
    first = json.loads(cap.out)
    total = len(load_file(str(ckpt / "model.safetensors")))
    assert f"init: model.init_from={ckpt} (checkpoint of this project): {total} of {total} tensors loaded" in cap.err
    info = json.loads((out / "checkpoint" / "info.json").read_text())["init"]
    assert info["loaded"] == info["tensors"] == total and info["sha256"] == init_digest(ckpt)
    base_sha = json.loads((ckpt / "info.json").read_text())["weights_sha256"]
    assert first["info"]["weights_sha256"] != base_sha

    # interrupted after step 2: the step-4 state and the final model gone; resumed, it ends bitwise the same
    shutil.rmtree(out / "train_state" / "step-00000004")
    shutil.rmtree(out / "checkpoint")
    assert main(["train", "--config", "tiny", "--out", str(out), "--resume", "--json", *ovi]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["resumed_from"] == 2 and again["info"]["weights_sha256"] == first["info"]["weights_sha256"]

    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data
    from decodiff.harness.training.model_cache import training_key
    from decodiff.harness.training.spec import training_spec
    from decodiff.harness.training.vae_fit import get_vae

    cfg = build_config("tiny", ov)
    data = prepare_data(cfg)
    vae = get_vae(cfg, data)
    plain = training_spec(cfg, data, vae)
    # no init_from keys; no model.init either: tiny (via demo) sets diffusers, the behaviour before the key existed
    assert "init" not in plain and set(plain["model"]) == {"size", "conditional", "dropout"}
    with_init = training_spec(build_config("tiny", ovi), data, vae)
    assert with_init["init"] == init_digest(ckpt) and {**with_init, "init": None} == {**plain, "init": None}
    other = training_key(build_config("tiny", [*ov, f"model.init_from={fixture('authors-format.pt')}"]), data, vae)
    assert len({training_key(cfg, data, vae), training_key(build_config("tiny", ovi), data, vae), other}) == 3
