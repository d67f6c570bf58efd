"""The authors' (LDM-layout) UNet weights in our UNet: the same function as their model, on their
tiny fixture (outputs computed by their code), and their UNet_L tensor for tensor onto our L."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from decodiff.models.errors import WeightsError
from decodiff.models.ldm_unet import LDMParts, architecture, ldm_to_ours, split_ldm
from decodiff.models.unet import build_unet, count_parameters
from decodiff.models.unet_init import apply_weights, match_weights

SHARED = Path(__file__).resolve().parents[2].parent / "shared"  # beside the repository root (CI copies it there)
TINY = SHARED / "fixtures" / "authors-unet-tiny"
L_LIST = SHARED / "paper" / "authors-unet-L-state-dict.txt"
# the fixture's README: create_unet_model(latent_size=16, model_channels=32, num_res_blocks=2, num_heads=2,
# channel_mult=[1, 2, 4], context_dim=32, ncls=3)
TINY_PRESET = dict(
    channels=32, heads=2, context_dim=32, mult=(1, 2, 4), attention=(True, True, True), layers=2, dropout=0.4
)


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared/ folder beside the repository holds the authors' fixtures)")
    return path


def fixture_parts(name: str) -> LDMParts:
    obj = torch.load(need(TINY / name), map_location="cpu", weights_only=True)
    if "model" in obj:
        return split_ldm(obj["model"], prefixed=False)
    return split_ldm(obj["state_dict"], prefixed=True)


def loaded(parts: LDMParts, arch: dict, categories: list[str]):
    model = build_unet(
        arch["preset"] if arch["size"] == "custom" else arch["size"], num_classes=len(categories), sample_size=16
    ).eval()
    ours, origin, unused = ldm_to_ours(parts.unet, model.unet.config)
    plan = match_weights(
        model.state_dict(),
        ours,
        source="fixture",
        origin=origin,
        unused=unused,
        class_table=parts.class_table,
        categories=categories,
    )
    apply_weights(model, plan)
    return model, plan.report


@pytest.mark.parametrize("name", ["authors-format.pt", "ldm-format.ckpt"])
def test_fixture_imports_and_computes_the_authors_eta(name):
    parts = fixture_parts(name)
    arch = architecture(parts, heads=2)
    assert arch["size"] == "custom" and arch["preset"] == TINY_PRESET and arch["latent_channels"] == 4
    assert arch["num_classes"] == (3 if name.endswith(".pt") else 1000)
    model, rep = loaded(parts, arch, ["a", "b", "c"])
    assert rep.full and len(rep.loaded) == rep.total == 627 and count_parameters(model) == 6_127_556
    assert rep.class_rows == {"a": 0, "b": 1, "c": 2}
    io = np.load(need(TINY / "io.npz"))
    with torch.no_grad():
        eta = model(torch.from_numpy(io["z_t"]), torch.from_numpy(io["t"]), torch.from_numpy(io["class_ids"]))
    assert float((eta - torch.from_numpy(io["eta"])).abs().max()) <= 1e-5


def test_heads_are_asked_for_where_no_preset_matches_and_checked_against_the_shapes():
    parts = fixture_parts("authors-format.pt")
    with pytest.raises(WeightsError, match="number of attention heads is not in the tensor shapes"):
        architecture(parts)
    with pytest.raises(WeightsError, match="at most 32"):
        architecture(parts, heads=64)
    parts.unet["input_blocks.1.1.proj_in.weight"] = torch.zeros(30, 32, 1, 1)  # an XL-like narrower attention
    with pytest.raises(WeightsError, match="input_blocks.1.1.proj_in.weight is 30 wide"):
        architecture(parts, heads=2)


def test_a_renamed_or_reshaped_tensor_is_named():
    parts = fixture_parts("authors-format.pt")
    arch = architecture(parts, heads=2)
    renamed = dict(parts.unet)
    renamed["input_blocks.4.0.in_layers.2.weight_renamed"] = renamed.pop("input_blocks.4.0.in_layers.2.weight")
    _, rep = loaded(LDMParts(renamed, parts.class_table), arch, ["a", "b", "c"])
    assert not rep.full and rep.missing == ["unet.down_blocks.1.resnets.0.conv1.weight"]
    assert rep.unused == ["input_blocks.4.0.in_layers.2.weight_renamed"] and len(rep.loaded) == 626
    assert "input_blocks.4.0.in_layers.2.weight_renamed" in rep.line()

    reshaped = dict(parts.unet)
    reshaped["output_blocks.3.0.skip_connection.weight"] = torch.zeros(64, 100, 1, 1)
    _, rep = loaded(LDMParts(reshaped, parts.class_table), arch, ["a", "b", "c"])
    assert rep.mismatched == [
        "unet.up_blocks.1.resnets.0.conv_shortcut.weight (file: output_blocks.3.0.skip_"
        "connection.weight): file (64, 100, 1, 1) vs model (64, 192, 1, 1)"
    ]
    assert not rep.missing and not rep.unused and "output_blocks.3.0.skip_connection.weight" in rep.line()


def test_authors_unet_L_maps_onto_our_L_tensor_for_tensor():
    shapes = {}
    for line in need(L_LIST).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            shapes[name] = tuple(int(x) for x in re.findall(r"\d+", shape))
    assert len(shapes) == 627
    state = {k: torch.empty(s, device="meta") for k, s in shapes.items()}
    parts = split_ldm(state, prefixed=False)
    arch = architecture(parts)  # no heads given: the shapes match the L preset
    assert arch["size"] == "L" and arch["num_classes"] == 15 and arch["preset"]["heads"] == 8
    with torch.device("meta"):  # shapes only: no 395M weights allocated
        ours = build_unet("L", num_classes=15)
    converted, origin, unused = ldm_to_ours(parts.unet, ours.unet.config)
    plan = match_weights(
        ours.state_dict(),
        converted,
        source="L list",
        origin=origin,
        unused=unused,
        class_table=parts.class_table,
        categories=[f"c{i}" for i in range(15)],
    )
    rep = plan.report
    assert rep.full and len(rep.loaded) == rep.total == 627
    assert sum(int(np.prod(s)) for s in shapes.values()) == 394_991_876 == count_parameters(ours)
