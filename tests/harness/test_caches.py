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
from decodiff.harness import caches
from decodiff.harness.data import lock_path
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
    _age_everything(cache, 40)
    assert all(e["used"] < time.time() - 39 * DAY for e in _entries(cache))
    _bench(built, "train.max_steps=21")  # a new model; data, shards, VAE, latent cache and references reused
    fresh = {(e["kind"], e["name"]) for e in _entries(cache) if e["used"] > time.time() - DAY}
    old = {(e["kind"], e["name"]) for e in _entries(cache) if e["used"] < time.time() - 39 * DAY}
    assert old == {("models", first_model)}, (old, fresh)
    assert {k for k, _ in fresh} == {"models", "latents", "references", "vae", "shards", "demo"}

    dry = _cli("cache", "prune", "--older-than", "30d", "--dry-run", "--json", "--cache-dir", cache)
    assert [e["name"] for e in json.loads(dry.stdout)["removed"]] == [first_model]
    assert (cache / "models" / first_model).is_dir()  # a dry run removes nothing

    done = json.loads(_cli("cache", "prune", "--older-than", "30d", "--json", "--cache-dir", cache).stdout)
    assert [e["name"] for e in done["removed"]] == [first_model] and done["freed_bytes"] > 0
    assert not (cache / "models" / first_model).exists()
    assert not list((cache / "models").glob(f".*{caches._PRUNING}*"))  # nothing half-removed left behind
    assert len(_entries(cache)) == 6

    again = _bench(built)  # the pruned model's settings: trained again, not read half-gone
    assert "train: reusing" not in again.stderr
    assert (cache / "models" / first_model / "checkpoint" / "model.safetensors").is_file()


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
    (folder.parent / f"{folder.name}.tmp").mkdir()  # an encoding that stopped half-way
    listed = {e["name"]: e["state"] for e in _entries(cache) if e["kind"] == "latents"}
    assert listed == {folder.name: "finished", f"{folder.name}.tmp": "interrupted"}
    out = json.loads(_cli("cache", "prune", "--kind", "latents", "--all", "--json", "--cache-dir", cache).stdout)
    assert sorted(e["name"] for e in out["removed"]) == [folder.name, f"{folder.name}.tmp"]
    assert not any(p for p in folder.parent.iterdir() if not p.name.endswith(".lock"))


def test_the_kinds_name_the_builders_own_locks(tmp_path):
    kinds = {k.name: k for k in caches.KINDS}
    assert TRAIN_LOCK in kinds["models"].inner_locks
    for name in ("latents", "vae", "shards", "demo"):
        beside = kinds[name].beside_locks[0].format(name="x")
        assert lock_path(tmp_path / "x").name == beside, name


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["prune"], "say what to remove"),
        (["prune", "--older-than", "soon"], "--older-than 'soon': expected an age"),
        (["prune", "--kind", "bogus"], "--kind bogus: expected one of models"),
        (["prune", "--all", "--older-than", "3d"], "contradict"),
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
