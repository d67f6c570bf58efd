"""UNet presets: the published parameter counts and head layout, and the unconditional option."""

import json

import pytest
import torch

from decodiff.models.flops import preset_cost
from decodiff.models.unet import PUBLISHED_PARAMETERS, UNET_PRESETS, build_unet, count_parameters, level_heads


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: small ops on a shared 2-core machine run faster without OpenMP spinning."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("size", ["XS", "S", "M", "L", "XL"])
def test_presets_match_published_parameter_counts(size):
    with torch.device("meta"):  # no weights allocated
        n = count_parameters(build_unet(size, num_classes=15))
    assert abs(n - PUBLISHED_PARAMETERS[size]) / PUBLISHED_PARAMETERS[size] < 0.02
    assert abs(n - PUBLISHED_PARAMETERS[size]) / PUBLISHED_PARAMETERS[size] < 0.003  # in fact much closer


def test_heads_follow_the_published_per_head_width():
    assert level_heads(UNET_PRESETS["XL"]) == (12, 24, 49)  # 12 heads at 320 channels: 26 channels per head
    assert level_heads(UNET_PRESETS["L"]) == (8, 16, 32)
    with torch.device("meta"):
        xl = build_unet("XL", num_classes=15)
    attn = xl.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1
    assert attn.heads == 12 and attn.inner_dim == 312  # attention inside the 320-wide block, as LDM does
    assert xl.unet.mid_block.attentions[0].transformer_blocks[0].attn1.heads == 49


def test_unconditional_model_ignores_the_category_and_needs_none():
    torch.manual_seed(0)
    cond = build_unet("tiny", num_classes=5, sample_size=8, dropout=0.0).eval()
    torch.manual_seed(0)
    uncond = build_unet("tiny", num_classes=5, conditional=False, sample_size=8, dropout=0.0).eval()
    assert count_parameters(cond) - count_parameters(uncond) == 4 * UNET_PRESETS["tiny"]["context_dim"]
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([3, 3])
    with torch.no_grad():
        a = uncond(z, t, torch.tensor([0, 0]))
        assert torch.equal(a, uncond(z, t, torch.tensor([4, 2])))  # the category is not used
        assert torch.equal(a, uncond(z, t, None))  # nor needed
        assert not torch.equal(cond(z, t, torch.tensor([0, 0])), cond(z, t, torch.tensor([4, 2])))
        with pytest.raises(ValueError, match="needs the category"):
            cond(z, t, None)


def test_flops_counted_on_meta_include_attention():
    c = preset_cost("XS")
    assert c["parameters"] == 24749636
    assert 7.0 < c["gflops_forward"] < 10.0 and c["gflops_train_step"] == pytest.approx(3 * c["gflops_forward"])


def test_model_info_cli_json(capsys):
    from decodiff.harness.cli import main

    assert main(["model", "info", "--size", "XL", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"] == 612717564 and info["heads_per_level"] == [12, 24, 49]
    assert abs(info["difference_percent"]) < 2 and info["gflops_per_sample"] > 100
    assert main(["model", "info", "--size", "XXL"]) == 2
    assert "unknown preset" in capsys.readouterr().err
