"""Training states: exact round trip, clear errors for corrupt / other-size / other-config
checkpoints, saves that fail without touching the previous one, and nothing unpickled."""

import json
import pickle
import random

import numpy as np
import pytest
import torch

from decodiff.harness.training import checkpoint as ck
from decodiff.harness.training.checkpoint import (
    CheckpointError,
    Position,
    Trainables,
    latest_state,
    model_spec,
    restore_training,
    save_training,
    state_folders,
)
from decodiff.harness.training.ema import EMA
from decodiff.harness.training.schedules import lr_lambda
from decodiff.models.unet import build_unet


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: small ops on a shared 2-core machine run faster without OpenMP spinning."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SPEC = model_spec("tiny", 3, True, 4, 8, 0.0, ["a", "b", "c"])
META = {
    "training_spec": {"train": {"lr": 1e-3, "epochs": 5}, "model": {"size": "tiny"}},
    "model_spec": SPEC,
    "layout": {"num_workers": 0},
}


def objects(seed: int = 0):
    torch.manual_seed(seed)
    model = build_unet("tiny", num_classes=3, sample_size=8, dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda("cosine", 2, 10, 1e-3, 1e-5))
    return model, opt, sched, EMA(model, 0.9), torch.Generator().manual_seed(seed + 1)


def step(model, opt, sched, ema):
    z = torch.randn(2, 4, 8, 8)
    loss = model(z, torch.tensor([1, 2]), torch.tensor([0, 2])).square().mean()
    loss.backward()
    opt.step()
    opt.zero_grad()
    sched.step()
    ema.update(model)


def save(out, pos, objs, **kw):
    model, opt, sched, ema, gen = objs
    return save_training(
        out,
        pos,
        Trainables(model, opt, sched, ema, None, gen),
        meta=kw.pop("meta", META),
        rank=0,
        world=1,
        keep=kw.pop("keep", 2),
        barrier=lambda: None,
        **kw,
    )


def restore(folder, objs, expect=META, world=1):
    model, opt, sched, ema, gen = objs
    return restore_training(
        folder,
        Trainables(model, opt, sched, ema, None, gen),
        expect=expect,
        rank=0,
        world=world,
    )


@pytest.fixture
def saved(tmp_path):
    objs = objects()
    for _ in range(3):
        step(*objs[:4])
    folder = save(tmp_path, Position(step=3, epoch=1, consumed=5, loss=0.5, loss_sum=1.25, loss_n=2), objs)
    return tmp_path, folder, objs


def test_round_trip_restores_every_state_exactly(saved):
    out, folder, objs = saved
    model, opt, sched, ema, gen = objs
    after = (torch.rand(3), torch.rand(2, generator=gen), np.random.rand(), random.random())
    fresh = objects(seed=5)
    pos = restore(latest_state(out), fresh)
    assert (pos.step, pos.epoch, pos.consumed, pos.loss, pos.loss_sum, pos.loss_n) == (3, 1, 5, 0.5, 1.25, 2)
    m2, opt2, sched2, ema2, gen2 = fresh
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
    for p1, p2 in zip(model.parameters(), m2.parameters()):
        s1, s2 = opt.state[p1], opt2.state[p2]
        assert all(torch.equal(s1[k], s2[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert sched2.last_epoch == sched.last_epoch and opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, ema2.shadow))
    # random states: the next draws are the ones the original process made after saving
    assert torch.equal(torch.rand(3), after[0]) and torch.equal(torch.rand(2, generator=gen2), after[1])
    assert np.random.rand() == after[2] and random.random() == after[3]
    # and both continue identically (from the same global random state: one process holds both)
    rng = torch.get_rng_state()
    step(model, opt, sched, ema)
    torch.set_rng_state(rng)
    step(m2, opt2, sched2, ema2)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))


def test_files_are_safetensors_and_json_only_and_nothing_is_unpickled(saved, monkeypatch):
    out, folder, _ = saved
    assert sorted(p.name for p in folder.iterdir()) == [
        "ema.safetensors",
        "model.safetensors",
        "optimizer.safetensors",
        "rank-0.json",
        "rank-0.safetensors",
        "state.json",
    ]

    def refuse(*a, **k):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    restore(folder, objects())


def test_corrupt_or_truncated_files_are_clear_errors(saved):
    out, folder, _ = saved
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-100] ^= 0xFF
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt checkpoint file"):
        restore(folder, objects())
    opt_file = folder / "optimizer.safetensors"
    opt_file.write_bytes(opt_file.read_bytes()[:1000])
    (folder / "state.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"state\.json: corrupt checkpoint file, not valid JSON"):
        restore(folder, objects())


def test_missing_rank_file_and_other_world_size(saved):
    out, folder, _ = saved
    with pytest.raises(CheckpointError, match="written by 1 processes, resumed with 2"):
        restore(folder, objects(), world=2)
    (folder / "rank-0.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"incomplete checkpoint \(missing rank-0.safetensors\)"):
        restore(folder, objects())


def test_checkpoint_of_another_model_size(saved):
    out, folder, _ = saved
    expect = {**META, "model_spec": {**SPEC, "size": "demo"}}
    with pytest.raises(CheckpointError, match="holds a UNet 'tiny'; the config asks for 'demo'"):
        restore(folder, objects(), expect=expect)


def test_resume_with_a_changed_config_names_the_keys(saved):
    out, folder, _ = saved
    spec = json.loads(json.dumps(META["training_spec"]))
    spec["train"]["lr"] = 2e-3
    expect = {**META, "training_spec": spec, "layout": {"num_workers": 2}}
    with pytest.raises(CheckpointError) as err:
        restore(folder, objects(), expect=expect)
    msg = str(err.value)
    assert "training_spec.train.lr: 0.001 -> 0.002" in msg and "layout.num_workers: 0 -> 2" in msg
    assert "\n" not in msg


def test_a_failed_save_keeps_the_previous_checkpoint(saved, monkeypatch):
    out, folder, objs = saved
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    latest_before = (out / ck.STATE_DIR / ck.LATEST).read_text()
    real = ck.save_file

    def disk_full(tensors, path, *a, **k):
        if path.endswith("optimizer.safetensors"):
            real(tensors, path)  # half-written, then the disk is full
            raise OSError(28, "No space left on device")
        return real(tensors, path, *a, **k)

    monkeypatch.setattr(ck, "save_file", disk_full)
    step(*objs[:4])
    with pytest.raises(OSError, match="No space left"):
        save(out, Position(step=4, epoch=1), objs)
    assert [p.name for p in state_folders(out)] == ["step-00000003"]
    assert latest_state(out) == folder and (out / ck.STATE_DIR / ck.LATEST).read_text() == latest_before
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert not list((out / ck.STATE_DIR).glob(".*tmp*"))  # no half-written state left behind
    restore(latest_state(out), objects())


def test_killed_save_leftovers_are_ignored_and_old_states_pruned(saved):
    out, folder, objs = saved
    junk = out / ck.STATE_DIR / ".step-00000009.tmp"  # what a save killed half-way leaves
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"partial")
    assert latest_state(out) == folder
    (out / ck.STATE_DIR / ck.LATEST).write_text("garbage")  # even a broken pointer falls back to the newest state
    assert latest_state(out) == folder
    for s in (4, 5, 6):
        step(*objs[:4])
        save(out, Position(step=s, epoch=1), objs, keep=2)
    assert [p.name for p in state_folders(out)] == ["step-00000005", "step-00000006"]
    assert not junk.exists()
    assert json.loads((out / ck.STATE_DIR / ck.LATEST).read_text())["state"] == "step-00000006"


def test_a_final_model_with_a_changed_byte_is_refused_naming_the_file(tmp_path):
    model = objects()[0]
    ck.save_model(tmp_path / "checkpoint", model, SPEC, {"weights_sha256": "x"})
    loaded, spec, info = ck.load_model(tmp_path / "checkpoint")
    assert spec == SPEC and set(info["files_sha256"]) == {"model.safetensors", "model.json"}
    path = tmp_path / "checkpoint" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01  # a weight's byte: safetensors itself would load it
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{path}: corrupt checkpoint file \(sha256 differs"):
        ck.load_model(tmp_path / "checkpoint")
