"""Matching weights onto our UNet: counts, names, and the class table sliced or extended."""

import torch

from decodiff.models.unet import build_unet
from decodiff.models.unet_init import CLASS_KEY, apply_weights, class_rows, match_weights


def tiny(classes: int, seed: int):
    torch.manual_seed(seed)
    return build_unet("tiny", num_classes=classes, sample_size=8)


def test_class_rows_by_name_where_the_file_names_them_else_by_position():
    assert class_rows(["a", "b", "c"], 5, None) == {"a": 0, "b": 1, "c": 2}  # sliced
    assert class_rows(["a", "b", "c"], 2, None) == {"a": 0, "b": 1, "c": None}  # extended
    assert class_rows(["c", "x"], 3, ["a", "b", "c"]) == {"c": 2, "x": None}


def test_extension_rows_keep_the_models_own_initialisation_and_the_rest_loads():
    src, dst = tiny(2, 0), tiny(3, 1)
    fresh = dst.state_dict()[CLASS_KEY].clone()
    tensors = dict(src.state_dict())
    table = tensors.pop(CLASS_KEY)
    plan = match_weights(
        dst.state_dict(), tensors, source="src", class_table=table, class_names=["b", "a"], categories=["a", "b", "new"]
    )
    assert plan.report.full and plan.report.class_rows == {"a": 1, "b": 0, "new": None}
    apply_weights(dst, plan)
    got = dst.state_dict()
    assert torch.equal(got[CLASS_KEY][0], table[1]) and torch.equal(got[CLASS_KEY][1], table[0])
    assert torch.equal(got[CLASS_KEY][2], fresh[2])
    assert all(torch.equal(got[k], v) for k, v in tensors.items())
    assert "new<-new row" in plan.report.rows_line()


def test_no_class_table_or_another_token_width_is_not_a_full_load():
    src, dst = tiny(2, 0), tiny(2, 1)
    tensors = {k: v for k, v in src.state_dict().items() if k != CLASS_KEY}
    rep = match_weights(dst.state_dict(), tensors, source="f", categories=["a", "b"]).report
    assert rep.missing == [CLASS_KEY] and len(rep.loaded) == rep.total - 1
    rep = match_weights(
        dst.state_dict(), tensors, source="f", class_table=torch.zeros(2, 7), categories=["a", "b"]
    ).report
    assert rep.mismatched and rep.mismatched[0].startswith(f"{CLASS_KEY}: file (2, 7)")
    assert f"{rep.total - 1} of {rep.total} tensors loaded" in rep.line()
    assert f"shape mismatch (1): {CLASS_KEY}" in rep.line()
