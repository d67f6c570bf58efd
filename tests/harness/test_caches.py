"""`decodiff cache list|prune` on a cache that real `decodiff bench` runs built: every kind is
found and sized, reuse marks entries as used, `--older-than` removes only what no run read, a
pruned model is trained again, an entry whose build lock is held is skipped, and bad requests
stop in one line."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from decodiff.datasets.locks import FileLock
from decodiff.datasets.shards import STATE
from decodiff.harness import caches
from decodiff.harness.data import lock_path
from decodiff.harness.sweep.trial import training_lock
from decodiff.harness.training.loop import TRAIN_LOCK

DECODIFF = str(Path(sys.executable).with_name("decodiff"))
DAY = 86400


def _cli(*args, check=True):
    proc = subprocess.run(
        [DECODIFF, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _bench(tmp, *overrides):
    return _cli(
        "bench",
        "--config",
        "tiny",
        f"run.cache_dir={tmp / 'cache'}",
        f"run.out_dir={tmp / 'runs'}",
        "tracking.enabled=false",
        "metrics.bootstrap=0",
        "infer.reference_cache=true",
        *overrides,
    )


def _entries(cache):
    return json.loads(_cli("cache", "list", "--json", "--cache-dir", cache).stdout)["entries"]


def _age_everything(cache, days):
    """Every file and folder of the cache as if last written `days` ago."""
    stamp = time.time() - days * DAY
    for root, dirs, files in os.walk(cache):
        for name in dirs + files:
            os.utime(os.path.join(root, name), (stamp, stamp))


def _du(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("caches")
    _bench(tmp)
    return tmp


@pytest.mark.slow
def test_list_finds_every_kind_a_run_builds_with_its_size(built):
    cache = built / "cache"
    entries = _entries(cache)
    kinds = sorted(e["kind"] for e in entries)
    assert kinds == sorted(["models", "latents", "references", "vae", "shards", "demo"]), entries
    for e in entries:
        assert e["state"] == "finished", e
        assert e["bytes"] == _du(e["path"]) > 0, e
    model = next(e for e in entries if e["kind"] == "models")
    assert "deco-diff, 20 steps" in model["note"]
    table = _cli("cache", "list", "--cache-dir", cache).stdout
    assert f"6 entries, {caches.human_bytes(sum(e['bytes'] for e in entries))}" in table


@pytest.mark.slow
def test_reuse_marks_entries_and_prune_removes_only_what_no_run_read(built):
    cache = built / "cache"
    first_model = next(e["name"] for e in _entries(cache) if e["kind"] == "models")
    _bench(built, "train.max_steps=21")  # a second model; data, shards, VAE, latents and references reused
    second_model = next(e["name"] for e in _entries(cache) if e["kind"] == "models" and e["name"] != first_model)
    _age_everything(cache, 40)
    assert all(e["used"] < time.time() - 39 * DAY for e in _entries(cache))
    _bench(built)  # the first settings again: everything read, nothing built
    fresh = {(e["kind"], e["name"]) for e in _entries(cache) if e["used"] > time.time() - DAY}
    old = {(e["kind"], e["name"]) for e in _entries(cache) if e["used"] < time.time() - 39 * DAY}
    assert old == {("models", second_model)}, (old, fresh)
    assert {k for k, _ in fresh} == {"models", "latents", "references", "vae", "shards", "demo"}

    dry = _cli("cache", "prune", "--older-than", "30d", "--dry-run", "--json", "--cache-dir", cache)
    assert [e["name"] for e in json.loads(dry.stdout)["removed"]] == [second_model]
    assert (cache / "models" / second_model).is_dir()  # a dry run removes nothing

    done = json.loads(_cli("cache", "prune", "--older-than", "30d", "--json", "--cache-dir", cache).stdout)
    assert [e["name"] for e in done["removed"]] == [second_model] and done["freed_bytes"] > 0
    assert not (cache / "models" / second_model).exists()
    assert not list((cache / "models").glob(f".*{caches._PRUNING}*"))  # nothing half-removed left behind
    assert len(_entries(cache)) == 6

    again = _bench(built, "train.max_steps=21")  # the pruned model's settings: trained again, not read half-gone
    assert "train: reusing" not in again.stderr
    assert (cache / "models" / second_model / "checkpoint" / "model.safetensors").is_file()

    _age_everything(cache, 40)  # a model only evaluated is used too
    _cli(
        "evaluate",
        "--checkpoint",
        cache / "models" / first_model / "checkpoint",
        "--config",
        "tiny",
        f"run.cache_dir={cache}",
        f"run.out_dir={built / 'runs'}",
        "tracking.enabled=false",
        "metrics.bootstrap=0",
    )
    fresh = {e["name"] for e in _entries(cache) if e["used"] > time.time() - DAY}
    assert first_model in fresh and second_model not in fresh


@pytest.mark.slow
def test_an_entry_being_built_is_skipped_and_named(built):
    cache = built / "cache"
    latents = next(e for e in _entries(cache) if e["kind"] == "latents")
    folder = Path(latents["path"])
    with FileLock(lock_path(folder), what="a test build"):
        proc = _cli("cache", "prune", "--kind", "latents", "--all", "--json", "--cache-dir", cache)
        out = json.loads(proc.stdout)
        assert out["removed"] == [] and [s["name"] for s in out["skipped"]] == [folder.name]
        assert f"skipped latents/{folder.name}: in use" in proc.stderr
        assert folder.is_dir()
    tmp = folder.parent / f"{folder.name}.tmp"  # an encoding that stopped half-way (or runs on another machine)
    tmp.mkdir()
    listed = {e["name"]: e["state"] for e in _entries(cache) if e["kind"] == "latents"}
    assert listed == {folder.name: "finished", tmp.name: "interrupted"}
    out = json.loads(_cli("cache", "prune", "--kind", "latents", "--all", "--json", "--cache-dir", cache).stdout)
    assert [e["name"] for e in out["removed"]] == [folder.name] and [s["name"] for s in out["skipped"]] == [tmp.name]
    stamp = time.time() - 2 * caches.TMP_GRACE  # old enough to be a leftover
    os.utime(tmp, (stamp, stamp))
    out = json.loads(_cli("cache", "prune", "--kind", "latents", "--all", "--json", "--cache-dir", cache).stdout)
    assert [e["name"] for e in out["removed"]] == [tmp.name]
    assert not any(p for p in folder.parent.iterdir() if not p.name.endswith(".lock"))  # locks stay for waiters


def test_only_what_builders_name_is_an_entry(tmp_path):
    """A folder of one's own in the cache (shards written there by hand, a data root, notes) is
    neither listed nor removed."""
    own = [
        tmp_path / "shards" / "my-own-shards",
        tmp_path / "demo-mine",
        tmp_path / "models" / "best",
        tmp_path / "notes",
    ]
    for p in own:
        p.mkdir(parents=True)
        (p / "file.txt").write_text("mine")
    key = tmp_path / "models" / ("0" * 16)
    (key / "checkpoint").mkdir(parents=True)
    assert [e["name"] for e in _entries(tmp_path)] == [key.name]
    _cli("cache", "prune", "--all", "--cache-dir", tmp_path)
    assert not key.exists() and all((p / "file.txt").is_file() for p in own)


def test_the_kinds_name_the_builders_own_locks(tmp_path):
    kinds = {k.name: k for k in caches.KINDS}
    assert TRAIN_LOCK in kinds["models"].inner_locks
    key = "0" * 16
    with training_lock(str(tmp_path), key):  # the sweep's training lock, beside the model
        assert [p.name for p in (tmp_path / "models").iterdir()] == [kinds["models"].beside_locks[0].format(name=key)]
    assert f"{STATE}/lock" in kinds["shards"].inner_locks
    for name in ("latents", "vae", "shards", "demo"):
        beside = kinds[name].beside_locks[0].format(name="x")
        assert lock_path(tmp_path / "x").name == beside, name


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["prune"], "give --older-than AGE"),
        (["prune", "--kind", "models"], "give --older-than AGE"),  # a kind alone is not consent to remove all
        (["prune", "--all", "--older-than", "3d"], "one of them"),
        (["prune", "--older-than", "soon"], "--older-than 'soon': expected an age"),
        (["prune", "--older-than", ""], "--older-than '': expected an age"),
        (["prune", "--kind", "bogus", "--all"], "--kind bogus: expected one of models"),
        (["list", "--kind", "bogus"], "--kind bogus"),
    ],
)
def test_bad_requests_stop_in_one_line(tmp_path, args, says):
    (tmp_path / "models").mkdir()
    proc = _cli("cache", *args, "--cache-dir", tmp_path, check=False)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_missing_cache_folder_is_named(tmp_path):
    proc = _cli("cache", "list", "--cache-dir", tmp_path / "nowhere", check=False)
    assert proc.returncode == 2 and f"{tmp_path / 'nowhere'}: no cache folder there" in proc.stderr
