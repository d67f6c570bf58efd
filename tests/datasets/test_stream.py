"""Streams: every sample exactly once over ranks x workers (remainders too), known per-rank counts,
per-category streams, fixed evaluation order, and remote locations (http, pipe:, s3 through a pipe)."""

import functools
import http.server
import random
import threading
from collections import Counter

import numpy as np
import pytest
from torch.utils.data import DataLoader

from decodiff.datasets.imageio import DataError
from decodiff.datasets.inspect import inspect_location
from decodiff.datasets.records import Sample
from decodiff.datasets.shards import write_shards
from decodiff.datasets.stream import (
    ShardStream,
    assigned,
    category_streams,
    load_manifest,
    plan_epoch,
    resolve,
    shard_urls,
)


def _samples(n_per_cat, size=8):
    out = []
    for cat, n in n_per_cat.items():
        for i in range(n):
            arr = np.full((size, size, 3), i % 251, np.uint8)
            out.append(
                Sample(
                    key=f"{cat}/train/good/{i:03d}",
                    dataset="x",
                    category=cat,
                    split="train",
                    label=0,
                    defect="good",
                    source=f"{cat}-{i}",
                    load_image=lambda a=arr: a,
                )
            )
    return out


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Train shards of 4, 4, 4, 1 (cat a), 4, 3 (cat b) and 2 (cat c) samples: 7 shards, 22 samples."""
    out = tmp_path_factory.mktemp("uneven")
    m = write_shards(_samples({"a": 13, "b": 7, "c": 2}), out, dataset="x", max_count=4)
    assert [s.count for s in m.shards] == [4, 4, 4, 1, 4, 3, 2]
    return out


def test_plan_deals_every_shard_once_and_balances_ranks():
    rng = random.Random(0)
    for _trial in range(20):
        counts = [2000] * rng.randint(0, 30) + [rng.randint(1, 2000) for _ in range(rng.randint(1, 12))]
        world, workers = rng.randint(1, 8), rng.randint(1, 4)
        order = list(range(len(counts)))
        rng.shuffle(order)
        plan = plan_epoch(counts, world, workers, order=order)
        dealt = [i for rank in plan.shards for w in rank for i in w]
        assert sorted(dealt) == list(range(len(counts)))  # each shard exactly once
        rc = plan.rank_counts()
        assert sum(rc) == sum(counts) and max(rc) - min(rc) <= max(counts)
        # known before the epoch: the same for any shard order (epoch) and any number of loader workers
        assert plan_epoch(counts, world, 1).rank_counts() == rc
        for rank in range(world):  # each worker reads its shards in the epoch's order
            for w in plan.shards[rank]:
                assert list(w) == sorted(w, key=order.index)


def test_plan_by_samples_splits_to_within_one():
    plan = plan_epoch([5, 3], world_size=3, num_workers=2, split_by="samples")
    assert plan.rank_counts() == [3, 3, 2] and plan.counts == ((2, 1), (2, 1), (1, 1))
    assert plan.batches(0, 2) == 2 and plan.min_batches(2) == 2 and plan.min_batches(2, drop_last=True) == 0


@pytest.mark.parametrize("world,workers,split_by", [(2, 2, "shards"), (3, 2, "shards"), (2, 2, "samples")])
def test_ranks_and_workers_read_every_sample_once(uneven, world, workers, split_by):
    seen, batches = Counter(), []
    for rank in range(world):
        stream = ShardStream.from_manifest(
            uneven, "train", rank=rank, world_size=world, split_by=split_by, shuffle_buffer=3, seed=7
        )
        stream.set_epoch(3)
        loader = DataLoader(stream, batch_size=2, num_workers=workers, collate_fn=lambda b: b)
        got = [s["key"] for batch in loader for s in batch]
        plan = stream.epoch_plan(num_workers=workers)
        assert len(got) == stream.rank_counts()[rank] == plan.rank_counts()[rank]
        batches.append((len(loader_batches := list(loader)), plan.batches(rank, 2)))
        assert sum(len(b) for b in loader_batches) == len(got)
        seen.update(got)
    assert len(seen) == 22 and set(seen.values()) == {1}  # none twice, none lost
    assert all(real == planned for real, planned in batches)


def test_training_order_changes_with_the_epoch_evaluation_order_is_fixed(uneven):
    stream = ShardStream.from_manifest(uneven, "train", shuffle_buffer=4, seed=1)
    a = [s["key"] for s in stream]
    stream.set_epoch(1)
    b = [s["key"] for s in stream]
    assert sorted(a) == sorted(b) and a != b
    fixed = [s["key"] for s in ShardStream.from_manifest(uneven, "train")]
    assert fixed == [s.key for s in _samples({"a": 13, "b": 7, "c": 2})]


def test_one_stream_per_category(uneven):
    streams = category_streams(uneven, "train")
    assert list(streams) == ["a", "b", "c"]
    assert {s["meta"]["category"] for s in streams["b"]} == {"b"} and len(list(streams["b"])) == 7
    multi = ShardStream.from_manifest(uneven, "train", ["a", "c"])
    assert Counter(s["meta"]["category"] for s in multi) == {"a": 13, "c": 2}
    with pytest.raises(DataError, match=r"unknown categories \['z'\]"):
        ShardStream.from_manifest(uneven, "train", ["z"])
    assert assigned(["u0", "u1", "u2"], 1, 2, 0, 1, counts=[5, 1, 1]) == ["u1", "u2"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_remote_locations_http_pipe_and_s3(uneven, tmp_path, monkeypatch):
    local = [s["key"] for s in ShardStream.from_manifest(uneven, "train")]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(uneven)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        m = load_manifest(url)
        assert m.checksum == load_manifest(uneven).checksum
        assert [s["key"] for s in ShardStream.from_manifest(url, "train", manifest=m)] == local
        with pytest.raises(DataError, match=r"could not read the shard manifest"):
            load_manifest(url + "missing")
        remote = inspect_location(url, verify=True)  # every shard fetched and its sha256 checked
        assert remote.ok and remote.shards["count"] == 7 and remote.totals()["train"]["normal"] == 22
    finally:
        server.shutdown()
        server.server_close()
    pipe = f"pipe:cat {uneven}/{{name}}"
    assert resolve(pipe, "train-a-00000.tar") == f"pipe:cat {uneven}/train-a-00000.tar"
    assert [s["key"] for s in ShardStream.from_manifest(pipe, "train", world_size=2, rank=1)] == [
        s["key"] for s in ShardStream.from_manifest(uneven, "train", world_size=2, rank=1)
    ]
    with pytest.raises(DataError, match=r"needs \{name\}"):
        load_manifest(f"pipe:cat {uneven}/manifest.json")
    # s3: the URL goes through the configured command (here a script that maps the bucket to the folder)
    script = tmp_path / "fake-s3-cat"
    script.write_text(f'#!/bin/sh\nexec cat "{uneven}/${{1#s3://bucket/shards/}}"\n')
    script.chmod(0o755)
    monkeypatch.setenv("DECODIFF_S3_CMD", f"{script} {{url}}")
    m = load_manifest("s3://bucket/shards")
    urls = shard_urls("s3://bucket/shards", m, "train", ["c"])
    assert urls == [f"pipe:{script} s3://bucket/shards/train-c-00000.tar"]
    assert [s["key"] for s in ShardStream.from_manifest("s3://bucket/shards", "train", ["c"])] == [
        "c/train/good/000",
        "c/train/good/001",
    ]


def _cut(tar, keep_members):
    """Truncate a tar after its first `keep_members` members (a member boundary)."""
    import tarfile

    with tarfile.open(tar) as t:
        offsets = [m.offset for m in t.getmembers()]
    with open(tar, "r+b") as f:
        f.truncate(offsets[keep_members])


@pytest.mark.parametrize(
    "keep, message",
    [
        (4, r"2 samples, the shard manifest says 4"),  # whole samples
        (5, r"sample b/train/good/002 has no meta\.json"),
    ],
)  # inside one
def test_a_truncated_shard_stops_the_read_naming_it(tmp_path, keep, message):
    import shutil

    from decodiff.datasets.stream import check_shards

    m = write_shards(_samples({"b": 7}), tmp_path / "s", dataset="x", max_count=4)
    tar = tmp_path / "s" / m.shards[0].name
    whole = tar.read_bytes()
    _cut(tar, keep)  # a sample without masks is 2 members: image.png, meta.json
    with pytest.raises(DataError, match=rf"{tar.name}: .*bytes, the manifest says"):
        check_shards(tmp_path / "s", m, ("train",))
    stream = ShardStream.from_manifest(tmp_path / "s", "train")
    with pytest.raises(DataError, match=rf"{tar.name}: {message}"):
        list(stream)
    with pytest.raises(DataError, match=message):  # through a DataLoader worker too
        list(DataLoader(stream, batch_size=None, num_workers=1))
    tar.write_bytes(whole)
    check_shards(tmp_path / "s", m, ("train",), sha256=True)
    assert len(list(stream)) == 7
    shutil.copy(tmp_path / "s" / m.shards[1].name, tar)  # the same size class, other content
    with pytest.raises(DataError, match=rf"{tar.name}: (.*bytes, the manifest says|sha256 differs)"):
        check_shards(tmp_path / "s", m, ("train",), sha256=True)
