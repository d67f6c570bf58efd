"""Shared by the training tests: the smallest demo set a VAE and a UNet can be trained on."""

import pytest

from decodiff.harness.config import build_config


@pytest.fixture(scope="session")
def tiny_grass():
    """build_config("tiny") on one category of a few images, caches under `cache`; `extra` overrides last."""

    def make(cache, *extra):
        return build_config(
            "tiny",
            [
                f"run.cache_dir={cache}",
                "vae.steps=2",
                "data.categories=[grass]",
                "data.demo.categories=[grass]",
                "data.demo.n_train=4",
                "data.demo.n_test_good=1",
                "data.demo.n_test_per_defect=1",
                "run.threads=1",
                *extra,
            ],
        )

    return make
