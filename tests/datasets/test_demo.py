import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decodiff.datasets.defects import MAX_AREA, MIN_AREA
from decodiff.datasets.demo import (
    CATEGORIES,
    DEMO_CATEGORIES,
    GENERATOR_VERSION,
    demo_checksum,
    demo_example,
    generate_demo,
)

SMALL = dict(size=64, n_train=3, n_test_good=2, n_test_per_defect=2)
ALL = sorted(CATEGORIES)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> tuple[Path, object]:
    root = tmp_path_factory.mktemp("demo") / "set"
    return root, generate_demo(root, categories=ALL, seed=5, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_demo_categories_include_textures_and_objects():
    kinds = {CATEGORIES[c].kind for c in DEMO_CATEGORIES}
    assert kinds == {"texture", "object"} and len(DEMO_CATEGORIES) >= 4
    assert {"grass", "gravel"} & set(DEMO_CATEGORIES)


def test_mvtec_layout_and_counts(small_set):
    """Walk the folders as an MVTec-AD reader would."""
    root, info = small_set
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ALL
    for cat in ALL:
        defects = CATEGORIES[cat].defects
        assert sorted(p.name for p in (root / cat).iterdir()) == ["ground_truth", "test", "train"]
        assert [p.name for p in (root / cat / "train").iterdir()] == ["good"]
        assert sorted(p.name for p in (root / cat / "test").iterdir()) == sorted(("good",) + defects)
        assert sorted(p.name for p in (root / cat / "ground_truth").iterdir()) == sorted(defects)
        counts = {"train/good": SMALL["n_train"], "test/good": SMALL["n_test_good"]}
        counts.update({f"test/{d}": SMALL["n_test_per_defect"] for d in defects})
        assert info.counts[cat] == counts
        for folder, n in counts.items():
            images = sorted(p.name for p in (root / cat / folder).iterdir())
            assert images == [f"{i:03d}.png" for i in range(n)]
            for name in images:
                image = Image.open(root / cat / folder / name)
                assert image.size == (SMALL["size"], SMALL["size"]) and image.mode in ("L", "RGB")
                defect = folder.split("/")[1]
                if defect == "good":
                    continue
                mask = Image.open(root / cat / "ground_truth" / defect / name.replace(".png", "_mask.png"))
                assert mask.mode == "L" and mask.size == image.size
                values = np.unique(np.asarray(mask))
                assert set(values.tolist()) == {0, 255}
        for defect in defects:  # no stray masks
            assert len(list((root / cat / "ground_truth" / defect).iterdir())) == SMALL["n_test_per_defect"]


def test_masks_are_exactly_the_changed_pixels(small_set):
    root, _ = small_set
    for cat in ALL:
        for defect in CATEGORIES[cat].defects:
            for i in range(SMALL["n_test_per_defect"]):
                ex = demo_example(cat, "test", defect, i, size=SMALL["size"], seed=5)
                on_disk = np.asarray(Image.open(root / cat / "test" / defect / f"{i:03d}.png"))
                mask = np.asarray(Image.open(root / cat / "ground_truth" / defect / f"{i:03d}_mask.png")) > 0
                assert np.array_equal(on_disk, ex.image)
                changed = (on_disk != ex.clean).reshape(*mask.shape, -1).any(axis=-1)
                assert np.array_equal(mask, changed), f"{cat}/{defect}/{i}"
                assert MIN_AREA <= mask.mean() <= MAX_AREA, f"{cat}/{defect}/{i}: area {mask.mean():.4f}"


def test_area_bounds_per_defect_kind_at_the_default_size():
    for cat in DEMO_CATEGORIES:
        for defect in CATEGORIES[cat].defects:
            for i in range(3):
                mask = demo_example(cat, "test", defect, i, size=128, seed=0).mask
                assert MIN_AREA <= mask.mean() <= MAX_AREA, f"{cat}/{defect}/{i}"


def test_same_seed_same_bytes_other_seed_other_images(small_set, tmp_path):
    root, info = small_set
    again = generate_demo(tmp_path / "again", categories=ALL, seed=5, **SMALL)
    assert _files(tmp_path / "again") == _files(root)
    assert again.checksum == info.checksum == demo_checksum(root)
    other = generate_demo(tmp_path / "other", categories=["grass", "coins"], seed=6, **SMALL)
    assert other.checksum != info.checksum
    for rel in ("grass/train/good/000.png", "coins/train/good/000.png", "coins/test/scratch/000.png"):
        assert (tmp_path / "other" / rel).read_bytes() != (root / rel).read_bytes()


def test_manifest_records_parameters_version_and_checksum(small_set):
    root, info = small_set
    manifest = json.loads((root / "demo.json").read_text())
    assert manifest["generator"] == GENERATOR_VERSION
    assert manifest["params"] == {**SMALL, "categories": ALL, "seed": 5}
    assert manifest["sha256"] == info.checksum == demo_checksum(root)
    assert manifest["counts"] == info.counts
    assert info.categories == tuple(ALL) and not info.reused


def test_normal_images_vary_and_test_normals_are_not_training_images():
    for cat in CATEGORIES:
        train = [demo_example(cat, "train", "good", i, size=64).image for i in range(6)]
        test = [demo_example(cat, "test", "good", i, size=64).image for i in range(4)]
        for t in test:
            assert all(not np.array_equal(t, x) for x in train)
        diffs = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(train, train[1:])]
        assert min(diffs) > 1.0
        if CATEGORIES[cat].kind == "object":  # roughly aligned, like MVTec-AD objects
            assert max(diffs) < 0.6 * np.mean([x.std() for x in train])


def test_reuse_does_not_rewrite(tmp_path):
    root = tmp_path / "demo"
    first = generate_demo(root, categories=["coins"], **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    time.sleep(0.01)
    second = generate_demo(root, categories=["coins"], **SMALL)
    assert second.reused and second.checksum == first.checksum
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == stamps
    # Other parameters: the old demo set is replaced as a whole.
    third = generate_demo(root, categories=["brick"], **SMALL)
    assert not third.reused and sorted(p.name for p in root.iterdir()) == ["brick", "demo.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_root_appears_only_when_complete(tmp_path):
    root = tmp_path / "demo"
    seen = []

    def progress(done, total):
        assert not root.exists()
        assert (tmp_path / f"demo.tmp-{os.getpid()}").is_dir()
        seen.append((done, total))

    generate_demo(root, categories=["grass"], progress=progress, **SMALL)
    total = SMALL["n_train"] + SMALL["n_test_good"] + SMALL["n_test_per_defect"] * len(CATEGORIES["grass"].defects)
    assert seen[-1] == (total, total) and len(seen) == total
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_an_interrupted_run_leaves_nothing(tmp_path):
    root = tmp_path / "demo"

    def interrupt(done, total):
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_demo(root, categories=["grass"], progress=interrupt, **SMALL)
    assert list(tmp_path.iterdir()) == []


def test_stale_temporaries_of_dead_runs_are_removed(tmp_path):
    stale = tmp_path / "demo.tmp-999999999"  # above any pid_max: no such process
    (stale / "grass").mkdir(parents=True)
    (tmp_path / "demo.old-999999999").mkdir()
    mine = tmp_path / f"demo.tmp-{os.getppid()}"  # a live process: left alone
    mine.mkdir()
    generate_demo(tmp_path / "demo", categories=["grass"], **SMALL)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", mine.name]


def test_refuses_a_folder_that_is_not_a_demo_set(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a demo data set"):
        generate_demo(root, categories=["grass"], **SMALL)
    assert (root / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert generate_demo(empty, categories=["grass"], **SMALL).counts["grass"]["train/good"] == SMALL["n_train"]


def test_bad_parameters_are_named(tmp_path):
    with pytest.raises(ValueError, match="demo categories"):
        generate_demo(tmp_path / "x", categories=["bottle"])
    with pytest.raises(ValueError, match="size"):
        generate_demo(tmp_path / "x", size=16)
    with pytest.raises(ValueError, match="has no 'displaced'"):
        demo_example("grass", "test", "displaced", 0)
    assert not (tmp_path / "x").exists()


def test_default_set_offline_fast_and_the_same_in_a_fresh_process(small_set, tmp_path):
    """The default set, in a fresh process with sockets disabled: nothing is downloaded."""
    script = (
        "import json, socket, sys, time\n"
        "def refuse(*a, **k): raise OSError('network access in demo generation')\n"
        "class Refusing(socket.socket):\n"
        "    connect = connect_ex = sendto = refuse\n"
        "socket.socket = Refusing; socket.create_connection = refuse; socket.getaddrinfo = refuse\n"
        "from pathlib import Path\n"
        "from decodiff.datasets.demo import generate_demo\n"
        "t = time.perf_counter(); info = generate_demo(Path(sys.argv[1]))\n"
        "seconds = time.perf_counter() - t\n"
        "small = generate_demo(Path(sys.argv[2]), **json.loads(sys.argv[3]))\n"
        "print(json.dumps({'seconds': seconds, 'images': sum(sum(c.values()) for c in info.counts.values()),\n"
        "                  'small': small.checksum}))\n"
    )
    args = json.dumps({**SMALL, "categories": ALL, "seed": 5})
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "demo"), str(tmp_path / "small"), args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["images"] == 4 * (80 + 12) + 6 * sum(len(CATEGORIES[c].defects) for c in DEMO_CATEGORIES)
    assert result["seconds"] < 20.0
    assert result["small"] == small_set[1].checksum  # byte-identical across processes
