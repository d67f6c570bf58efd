"""A finished cache (shards, VAE, latents, trained model) is reused without taking its lock: a cache that other runs
made can be read where no lock file can be written (a read-only share), and readers never queue."""

from decodiff.harness.data import prepare_data
from decodiff.harness.training.latent_cache import build_latent_cache
from decodiff.harness.training.model_cache import model_folder, trained_model
from decodiff.harness.training.vae_fit import get_vae


def test_finished_caches_are_reused_without_their_locks(tmp_path, tiny_grass):
    cache = tmp_path / "cache"
    cfg = tiny_grass(cache)
    data = prepare_data(cfg)
    vae = get_vae(cfg, data)
    build_latent_cache(cfg, data, vae)
    where = {p.parent.name for p in cache.rglob("*.lock")}
    assert where == {"cache", "shards", "vae", "latents"}  # the builders locked: demo set, shards, VAE, latents
    for p in cache.rglob("*.lock"):
        p.unlink()
    again = prepare_data(cfg)
    vae2 = get_vae(cfg, again)
    location, manifest = build_latent_cache(cfg, again, vae2)
    assert vae2.fingerprint == vae.fingerprint and manifest.count("train") > 0
    assert {p.parent.name for p in cache.rglob("*.lock")} <= {"cache"}  # only the demo set's (it checks its files)


def test_a_finished_model_is_reused_without_its_lock(tmp_path, tiny_grass):
    cache = tmp_path / "cache"
    cfg = tiny_grass(cache, "train.max_steps=2")
    data = prepare_data(cfg)
    vae = get_vae(cfg, data)
    _, _, info, reused = trained_model(cfg, data, vae)
    folder = model_folder(cfg, data, vae)
    locks = [p for p in folder.rglob("*.lock")]
    assert not reused and locks  # the training took the folder's lock
    for p in locks:
        p.unlink()
    _, _, info2, reused2 = trained_model(cfg, data, vae)
    assert reused2 and info2["checkpoint"] == info["checkpoint"]
    assert list(folder.rglob("*.lock")) == []  # read without it
