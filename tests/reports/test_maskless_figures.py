"""Figures of a run without masks: examples ranked by image score, no empty ground-truth row, and why."""

import io

import numpy as np
from PIL import Image

from decodiff.reports.build import build_run_report
from decodiff.reports.figures import qualitative_figure
from decodiff.reports.markdown import render_markdown
from decodiff.reports.rundata import RunData


def _items(has_mask):
    rng = np.random.default_rng(0)
    return [
        {
            "role": role,
            "key": f"widget/test/crack/{i:03d}",
            "score": 0.9 - 0.1 * i,
            "input": rng.integers(0, 255, (16, 16, 3), dtype=np.uint8),
            "reconstruction": np.zeros((16, 16, 3), np.uint8),
            "mask": np.zeros((16, 16), np.uint8),
            "map": rng.random((16, 16)).astype(np.float16),
            "has_mask": has_mask,
        }
        for i, role in enumerate(("best", "typical", "worst"))
    ]


def _height(png):
    return Image.open(io.BytesIO(png)).size[1]


def test_a_grid_without_masks_has_no_ground_truth_row():
    with_masks, without = qualitative_figure("widget", _items(True)), qualitative_figure("widget", _items(False))
    assert _height(without) < 0.8 * _height(with_masks)  # 3 rows instead of 4


def test_a_mask_less_run_report_says_why_its_examples_are_ranked_by_score():
    items = _items(False)
    q = {
        "keys": np.array([it["key"] for it in items]),
        "categories": np.array(["widget"] * 3),
        "roles": np.array([it["role"] for it in items]),
        "scores": np.array([it["score"] for it in items]),
        "quality": np.full(3, np.nan),
        "inputs": np.stack([it["input"] for it in items]),
        "recons": np.stack([it["reconstruction"] for it in items]),
        "masks": np.stack([it["mask"] for it in items]),
        "maps": np.stack([it["map"] for it in items]),
        "has_masks": np.zeros(3, bool),
        "traj_keys": np.array([], dtype=str),
        "traj_timesteps": np.array([], dtype=np.int64),
    }
    records = [
        {
            "dataset": "own",
            "category": "widget",
            "level": "pixel",
            "metric": "auroc",
            "value": None,
            "reason": "no ground-truth masks",
        },
        {"dataset": "own", "category": "widget", "level": "image", "metric": "auroc", "value": 0.8},
    ]
    run = RunData("r", "t", "own", records, qualitative=q)
    text = render_markdown(build_run_report(run))
    assert "highest, median and lowest image score" in text and "no ground-truth row" in text
    assert "widget: no ground-truth masks, so the examples are ranked by image score" in text
    assert "best, typical and worst localised" not in text
