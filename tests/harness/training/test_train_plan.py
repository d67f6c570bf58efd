"""The pieces around the training loop: learning-rate schedules, the per-rank deal of shards,
the epoch's steps, EMA, preemption signals, and `decodiff train --out/--resume` errors."""

import json
import os
import signal

import pytest
import torch

from decodiff.datasets.imageio import DataError
from decodiff.harness.config import TrainSection, build_config
from decodiff.harness.training.ema import EMA
from decodiff.harness.training.feed import split_sizes
from decodiff.harness.training.preemption import PREEMPTED_EXIT, Preempted, PreemptionWatch
from decodiff.harness.training.schedules import Plan, lr_lambda, plan_steps


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_cosine_warms_up_then_reaches_min_at_the_last_step():
    f = lr_lambda("cosine", 10, 100, 1e-3, 1e-5)
    assert [f(i) for i in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert f(9) == 1.0 and f(10) == pytest.approx(1.0)
    assert f(100) == pytest.approx(0.01) and f(55) == pytest.approx(0.01 + 0.99 * 0.5)
    values = [f(i) for i in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_published_schedule_is_per_epoch_over_one_and_a_half_times_and_never_reaches_min():
    f = lr_lambda("published", 10, 800, 1e-4, 1e-5)
    assert f(0) == pytest.approx(0.1) and f(9) == 1.0
    assert f(799) > 0.25  # half-way through its 1200-epoch cosine at the end of training
    assert lr_lambda("constant", 2, 10, 1e-3, 0)(5) == 1.0


def test_plan_counts_every_epoch_and_stops_at_max_steps():
    class Feed:  # an epoch's step count that changes with the epoch, as uneven shard deals do
        def planned_steps(self, epoch):
            return 5 if epoch % 2 else 4

    t = TrainSection(epochs=4)
    assert plan_steps(Feed(), t) == Plan(total=18, per_epoch=4, epochs=4)
    assert plan_steps(Feed(), TrainSection(epochs=4, max_steps=7)) == Plan(total=7, per_epoch=4, epochs=2)
    assert plan_steps(Feed(), TrainSection(epochs=4, max_steps=3)).total == 3
    assert plan_steps(Feed(), TrainSection(epochs=4, max_steps=100)).total == 18


def test_split_sizes():
    assert split_sizes(7, 3) == [3, 2, 2] and split_sizes(2, 4) == [1, 1, 0, 0] and sum(split_sizes(128, 8)) == 128


def test_ema_is_the_exponential_average():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, 0.9)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update(model)
    for s, p0, p in zip(ema.shadow, start, model.parameters()):
        assert torch.allclose(s, 0.9 * p0 + 0.1 * p)
    avg = ema.averaged_state(model)
    assert torch.equal(avg["weight"], ema.shadow[0]) and set(avg) == set(model.state_dict())


def test_sigterm_and_sigusr1_are_caught_and_handlers_restored():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionWatch() as watch:
        os.kill(os.getpid(), signal.SIGUSR1)
        assert watch.requested == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGTERM)
        assert watch.requested == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) == before
    with pytest.raises(SystemExit) as exc:
        raise Preempted("SIGTERM", 12, "/x/train_state/step-00000012")
    assert exc.value.code == PREEMPTED_EXIT == 75


@pytest.fixture(scope="module")
def tiny_overrides(tmp_path_factory):
    root = tmp_path_factory.mktemp("train-cli")
    return [
        f"run.cache_dir={root / 'cache'}",
        "run.device=cpu",
        "vae.steps=4",
        "train.max_steps=4",
        "train.checkpoint_every=2",
    ], root


def test_train_cli_out_resume_and_changed_config(tiny_overrides, capsys):
    from decodiff.harness.cli import main

    ov, root = tiny_overrides
    out = root / "run"
    assert main(["train", "--config", "tiny", "--out", str(out), "--json", *ov]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["info"]["steps"] == 4 and (out / "checkpoint" / "model.safetensors").is_file()

    assert main(["train", "--config", "tiny", "--out", str(out), *ov]) == 1  # would overwrite a training
    assert "already holds a training checkpoint" in capsys.readouterr().err
    assert main(["train", "--config", "tiny", "--out", str(out), "--resume", "train.lr=0.01", *ov]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    lr = build_config("tiny", ov).train.lr
    assert err.startswith("decodiff: error: ") and f"training_spec.train.lr: {lr} -> 0.01" in err
    assert main(["train", "--config", "tiny", "--out", str(out), "--resume", "model.size=demo", *ov]) == 1
    assert "holds a UNet 'tiny'; the config asks for 'demo'" in capsys.readouterr().err

    # resuming a finished training changes nothing; unconditional training works the same way
    assert main(["train", "--config", "tiny", "--out", str(out), "--resume", "--json", *ov]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["resumed_from"] == 4 and again["info"]["weights_sha256"] == first["info"]["weights_sha256"]
    assert (
        main(["train", "--config", "tiny", "--out", str(root / "uncond"), "--json", "model.conditional=false", *ov])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["info"]["steps"] == 4


def test_resume_skip_past_the_epoch_is_a_data_error(tiny_overrides):
    from decodiff.harness.config import build_config
    from decodiff.harness.data import prepare_data
    from decodiff.harness.training.feed import TrainFeed
    from decodiff.harness.training.vae_fit import get_vae

    ov, _ = tiny_overrides
    cfg = build_config("tiny", [*ov, "train.latent_cache=false"])
    data = prepare_data(cfg)
    feed = TrainFeed(cfg, data, get_vae(cfg, data), rank=0, world=1, device=torch.device("cpu"))
    steps = list(feed.steps(0))
    assert sum(s.n_local for s in steps) == data.manifest.count("train") == feed.rank_counts(0)[0]
    assert len(steps) == feed.planned_steps(0)
    with pytest.raises(DataError, match="had used 99 samples of epoch 0"):
        list(feed.steps(0, skip=99))
    stopped = list(feed.steps(0, skip=3, stop=lambda: True))
    assert len(stopped) == 1 and stopped[0].stop
