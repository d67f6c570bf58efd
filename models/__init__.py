"""DeCo-Diff as PyTorch modules, with no configs or data sets: the deviation process and its
DDIM baseline, the UNet and its presets, the frozen VAE, the correction sampler, anomaly maps.

May import: torch, diffusers; never `decodiff.datasets`, `decodiff.reports` or `decodiff.harness`.
"""
