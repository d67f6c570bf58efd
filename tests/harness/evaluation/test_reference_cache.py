"""The test set's z and Decoder(z) kept for later evaluations: the same numbers bit for bit, one
decode per batch instead of two and no encode, and a damaged file computed again."""

import numpy as np
import pytest
import torch

from decodiff.harness.config import build_config
from decodiff.harness.data import prepare_data
from decodiff.harness.evaluation import reference_cache
from decodiff.harness.evaluation.evaluate import evaluate
from decodiff.harness.evaluation.reference_cache import reference_cache_key, use_reference_cache
from decodiff.harness.training.vae_fit import get_vae
from decodiff.models.unet import build_unet


def _common(tmp_path):
    return [
        f"run.cache_dir={tmp_path / 'cache'}",
        "vae.pretrained=builtin:demo-vae",
        "vae.small=f8-small",
        "data.categories=[coins,brick]",
        "run.threads=1",
        "infer.baselines=[vae-recon]",
        "metrics.bootstrap=0",
        "tracking.enabled=false",
    ]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refs")
    cfg = build_config("tiny", _common(tmp))
    data = prepare_data(cfg)
    vae = get_vae(cfg, data)
    torch.manual_seed(0)
    model = build_unet("tiny", num_classes=len(data.categories))  # untrained: any fixed network will do
    return tmp, data, vae, model


def _counting(vae):
    calls = {"encode": 0, "decode": 0}
    encode, decode = vae.encode, vae.decode

    def counted_encode(x):
        calls["encode"] += 1
        return encode(x)

    def counted_decode(z):
        calls["decode"] += 1
        return decode(z)

    vae.encode, vae.decode = counted_encode, counted_decode
    return calls, (encode, decode)


def test_cached_references_give_the_same_numbers_without_an_encode_and_with_one_decode(setup):
    tmp, data, vae, model = setup
    # batches of 3: shards of several batches and a short last one, so that a batch's position matters
    off = build_config("tiny", _common(tmp) + ["infer.reference_cache=false", "infer.batch_size=3"])
    on = build_config("tiny", _common(tmp) + ["infer.reference_cache=true", "infer.batch_size=3"])
    classes = data.categories
    plain = evaluate(off, data, model, vae, classes, out=tmp / "plain")
    built = evaluate(on, data, model, vae, classes, out=tmp / "built")
    batches = sum(-(-n // on.infer.batch_size) for n in data.counts("test"))
    files = sorted((tmp / "cache" / "references").glob("*/*/*.npz"))
    assert len(files) == batches  # one per evaluation batch, under its shard's name
    calls, originals = _counting(vae)
    try:
        cached = evaluate(on, data, model, vae, classes, out=tmp / "cached")
    finally:
        vae.encode, vae.decode = originals
    assert calls == {"encode": 0, "decode": batches}  # Decoder(z0_hat) only

    plain_maps = np.load(tmp / "plain" / "maps.npz")["maps"]
    for run, name in ((built, "built"), (cached, "cached")):
        assert run.records == plain.records
        assert run.baseline_records == plain.baseline_records  # vae-recon reads the cached Decoder(z)
        assert np.array_equal(np.load(tmp / name / "maps.npz")["maps"], plain_maps)

    whole = files[0].read_bytes()
    for damaged in (b"not an npz file", b"", whole[: len(whole) // 2]):  # computed again, written again
        files[0].write_bytes(damaged)
        assert evaluate(on, data, model, vae, classes, out=tmp / "again").records == plain.records
    with np.load(files[0]) as f:
        assert len(f["keys"]) == min(on.infer.batch_size, data.counts("test")[0])
    files[0].write_bytes(files[-1].read_bytes())  # another batch's images under this batch's name
    assert evaluate(on, data, model, vae, classes, out=tmp / "other").records == plain.records


def test_a_cache_that_cannot_be_written_does_not_stop_the_evaluation(setup, capsys):
    tmp, data, vae, model = setup
    blocked = tmp / "blocked"
    blocked.write_text("a file where the cache folder should be")
    cfg = build_config("tiny", _common(tmp) + [f"run.cache_dir={blocked}", "infer.reference_cache=true"])
    plain = build_config("tiny", _common(tmp) + ["infer.reference_cache=false"])
    assert evaluate(cfg, data, model, vae, data.categories).records == (
        evaluate(plain, data, model, vae, data.categories).records
    )
    err = capsys.readouterr().err
    assert err.count("reference cache: cannot write under") == 1 and "keeps nothing" in err


def test_the_key_follows_what_changes_the_tensors_and_nothing_else(setup):
    tmp, data, vae, _ = setup
    base = build_config("tiny", _common(tmp))
    key = reference_cache_key(base, data, vae, True)
    for change in ("infer.batch_size=4", "infer.precision=bf16", "data.crop=48", "vae.micro_batch=2"):
        assert reference_cache_key(build_config("tiny", _common(tmp) + [change]), data, vae, True) != key, change
    assert reference_cache_key(base, data, vae, False) != key  # memory layout rounds convolutions differently
    assert reference_cache_key(base, data, vae, True, torch.device("cpu")) == key
    for same in ("infer.gamma_p=0.2", "infer.reverse_steps=3", "model.size=demo", "infer.reference_cache=true"):
        assert reference_cache_key(build_config("tiny", _common(tmp) + [same]), data, vae, True) == key, same


def test_auto_keeps_references_on_a_cpu_below_the_size_limit(setup, monkeypatch):
    tmp, data, _, _ = setup
    auto = build_config("tiny", _common(tmp))
    assert use_reference_cache(auto, data, torch.device("cpu"))
    assert not use_reference_cache(auto, data, torch.device("cuda"))  # auto: off on a GPU
    odd = build_config("tiny", _common(tmp) + ["data.resize=null", "data.crop=null"])
    data.manifest.image_size, size = None, data.manifest.image_size  # images of several sizes
    try:
        assert not use_reference_cache(odd, data, torch.device("cpu"))  # auto: off, no error
    finally:
        data.manifest.image_size = size
    forced = build_config("tiny", _common(tmp) + ["infer.reference_cache=true"])
    assert use_reference_cache(forced, data, torch.device("cuda"))
    monkeypatch.setattr(reference_cache, "AUTO_LIMIT_BYTES", 1000)
    assert not use_reference_cache(auto, data, torch.device("cpu"))
