"""`decodiff model import` then `decodiff evaluate --checkpoint`: the authors' tiny fixture scored
end to end with our metrics, its VAE from the config; and what import refuses."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from decodiff.harness.cli import main
from decodiff.harness.training.checkpoint import load_model

TINY = Path(__file__).resolve().parents[3].parent / "shared" / "fixtures" / "authors-unet-tiny"


@pytest.fixture(scope="module")
def authors_file():
    path = TINY / "authors-format.pt"
    if not path.is_file():
        pytest.skip(f"{TINY} is absent (the shared/ folder beside the repository holds the authors' fixtures)")
    return path


def test_import_gives_a_checkpoint_of_the_authors_function(authors_file, tmp_path, capsys):
    out = tmp_path / "imported"
    assert (
        main(
            [
                "model",
                "import",
                str(authors_file),
                "--categories",
                "brick,coins,grass",
                "--out",
                str(out),
                "--heads",
                "2",
                "--latent",
                "16",
                "--json",
            ]
        )
        == 0
    )
    got = json.loads(capsys.readouterr().out)
    assert {k: got[k] for k in ("tensors", "loaded", "missing", "mismatched", "unused")} == {
        "tensors": 627,
        "loaded": 627,
        "missing": 0,
        "mismatched": 0,
        "unused": 0,
    }
    assert got["size"] == "custom" and got["preset"]["channels"] == 32 and got["class_rows"]["grass"] == 2
    model, spec, info = load_model(out)
    assert spec["size"] == "custom" and spec["classes"] == ["brick", "coins", "grass"] and info["format"] == "authors"
    io = np.load(TINY / "io.npz")
    with torch.no_grad():
        eta = model.eval()(torch.from_numpy(io["z_t"]), torch.from_numpy(io["t"]), torch.from_numpy(io["class_ids"]))
    assert float((eta - torch.from_numpy(io["eta"])).abs().max()) <= 1e-5


def test_import_refuses_what_it_cannot_make_whole(authors_file, tmp_path, capsys):
    args = ["--out", str(tmp_path / "x"), "--latent", "16"]
    assert main(["model", "import", str(authors_file), "--categories", "a,b,c", *args]) == 1
    assert "number of attention heads is not in the tensor shapes" in capsys.readouterr().err
    assert main(["model", "import", str(authors_file), "--categories", "a,b,c,d", "--heads", "2", *args]) == 1
    assert "names 4 categories, but" in capsys.readouterr().err
    sd = torch.load(authors_file, weights_only=True)["model"]
    sd["out.2.weightX"] = sd.pop("out.2.weight")
    torch.save({"model": sd}, tmp_path / "renamed.pt")
    assert main(["model", "import", str(tmp_path / "renamed.pt"), "--categories", "a", "--heads", "2", *args]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "626 of 627 tensors loaded" in err and "unet.conv_out.weight" in err and "out.2.weightX" in err
    assert not (tmp_path / "x").exists()
    # an earlier import is replaced; a checkpoint that was not imported (a trained model) is not touched
    assert main(["model", "import", str(authors_file), "--categories", "a", "--heads", "2", *args]) == 0
    assert main(["model", "import", str(authors_file), "--categories", "a,b", "--heads", "2", *args]) == 0
    assert load_model(tmp_path / "x")[1]["classes"] == ["a", "b"]
    info = json.loads((tmp_path / "x" / "info.json").read_text())
    (tmp_path / "x" / "info.json").write_text(json.dumps({**info, "imported_from": None, "steps": 4}))
    before = (tmp_path / "x" / "model.safetensors").read_bytes()
    assert main(["model", "import", str(authors_file), "--categories", "a", "--heads", "2", *args]) == 1
    assert "holds a checkpoint that was not imported" in capsys.readouterr().err.strip().splitlines()[-1]
    assert (tmp_path / "x" / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_imported_checkpoint_evaluates_with_the_configs_vae(authors_file, tmp_path, capsys):
    ckpt = tmp_path / "imported"
    assert (
        main(
            [
                "model",
                "import",
                str(authors_file),
                "--categories",
                "brick,coins,grass",
                "--out",
                str(ckpt),
                "--heads",
                "2",
                "--json",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["loaded"] == 627
    ov = [
        f"run.cache_dir={tmp_path / 'cache'}",
        f"run.out_dir={tmp_path / 'runs'}",
        "run.device=cpu",
        "data.demo.size=64",
        "data.demo.n_train=4",
        "data.demo.n_test_good=1",
        "data.demo.n_test_per_defect=1",
        "data.demo.categories=[coins]",
        "metrics.bootstrap=0",
        "infer.reverse_steps=2",
    ]
    # the tiny preset trains its own VAE: an imported checkpoint has none, so that is refused, saying why
    assert main(["evaluate", "--checkpoint", str(ckpt), "--config", "tiny", *ov]) == 1
    assert "holds no VAE of its own: pass vae.pretrained=" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", str(ckpt), "--config", "demo", "--json", *ov]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert "VAE: from the config (vae.pretrained=builtin:demo-vae)" in cap.err and "custom" in cap.err
    means = {(r["level"], r["metric"]): r["value"] for r in res["metrics"] if r["category"] == "mean"}
    assert 0.0 <= means[("pixel", "auroc")] <= 1.0 and 0.0 <= means[("image", "auroc")] <= 1.0
    report = Path(res["report"]).read_text()
    assert f"imported from {authors_file.resolve()}" in report
    prov = json.loads((Path(res["run_dir"]) / "provenance.json").read_text())
    assert prov["model"]["init"]["loaded"] == 627 and prov["model"]["format"] == "authors"

    from decodiff.harness.tracking import read_run

    run = read_run(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}", res["run_id"])
    assert run.params["init.loaded"] == "627" and run.params["init.sha256"] == prov["model"]["init"]["sha256"]
