"""UNet size presets as plain data (no torch), so configs validate without loading models."""

from __future__ import annotations

from typing import Any

# base channels, attention heads at the first level, context dim, channel multipliers, levels
# with attention, res blocks per level, dropout. XS..XL follow the published LDM-style UNet
# (channel_mult 1,2,4, attention at every level and in the middle, 2 res blocks, dropout 0.4);
# `demo` and `tiny` are small CPU presets of the same family.
#
# Heads follow the LDM "num_head_channels" rule: the channels per head are fixed at
# channels // heads and every level (and the middle block) has width // that many heads. So
# heads double per level where they divide (XS..L), and XL (320 channels, 12 heads -> 26 per
# head) has 12, 24 and 49 heads whose attention runs at 312, 624 and 1274 channels inside its
# 320/640/1280-wide blocks, exactly as the published model (612.7M parameters).
_LDM = dict(mult=(1, 2, 4), attention=(True, True, True), layers=2, dropout=0.4)  # the published family's shape
UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(channels=32, heads=2, context_dim=32, mult=(1, 2), attention=(False, True), layers=1, dropout=0.0),
    "demo": dict(
        channels=64, heads=4, context_dim=64, mult=(1, 2, 2), attention=(False, True, True), layers=1, dropout=0.0
    ),
    "XS": dict(channels=64, heads=4, context_dim=128, **_LDM),
    "S": dict(channels=128, heads=4, context_dim=256, **_LDM),
    "M": dict(channels=192, heads=6, context_dim=384, **_LDM),
    "L": dict(channels=256, heads=8, context_dim=512, **_LDM),
    "XL": dict(channels=320, heads=12, context_dim=640, **_LDM),
}

# Parameters of the published presets with 15 classes (reference implementation facts).
PUBLISHED_PARAMETERS: dict[str, float] = {"XS": 24.7e6, "S": 98.8e6, "M": 222.2e6, "L": 395.0e6, "XL": 612.7e6}
