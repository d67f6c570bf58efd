"""Each native layout -> the same sample records: counts, labels, defect types, masks, keys, errors."""

import json

import numpy as np
import pytest

from decodiff.datasets.folder import read_folder
from decodiff.datasets.imageio import DataError
from decodiff.datasets.realiad import read_realiad
from decodiff.datasets.records import Sample
from decodiff.datasets.registry import dataset_names, detect_layout, read_dataset
from decodiff.datasets.visa import read_visa


def by_key(samples):
    return {s.key: s for s in samples}


def test_mpdd_masks_with_either_suffix(mpdd_root):
    samples = by_key(read_dataset("mpdd", mpdd_root))
    assert len(samples) == 2 * (4 + 1 + 2)
    for cat in ("bracket_black", "tubes"):
        s = samples[f"{cat}/test/scratches/001"]
        assert (s.dataset, s.category, s.split, s.label, s.defect) == ("mpdd", cat, "test", 1, "scratches")
        assert s.mask().sum() == 6 * 6
    # plain MVTec-AD reading wants <stem>_mask.png: tubes' masks are missing for it
    with pytest.raises(DataError, match=r"tubes/test/scratches/000.png: anomalous test image without a mask"):
        list(read_dataset("mvtec", mpdd_root))


def test_visa_raw_layout_follows_the_split_csv(visa_raw_root):
    samples = list(read_dataset("visa", visa_raw_root))
    keys = by_key(samples)
    assert len(samples) == 2 * 9
    train = [s for s in samples if s.split == "train"]
    assert len(train) == 8 and all(s.label == 0 and s.defect == "good" for s in train)
    a = keys["candle/Data/Images/Anomaly/002"]
    assert (a.split, a.label, a.defect) == ("test", 1, "damaged corner,weird candle wick")  # from image_anno.csv
    assert a.mask().sum() == 36  # mask values are 3: any non-zero value is anomalous
    assert keys["candle/Data/Images/Anomaly/000"].defect == "chunk of wax missing"
    assert keys["pcb1/Data/Images/Anomaly/000"].defect == "bad"  # no image_anno.csv for pcb1
    assert keys["candle/Data/Images/Normal/0005"].split == "test"
    assert a.image().shape == (20, 28, 3)
    assert [s.category for s in read_visa(visa_raw_root, categories=["pcb1"])] == ["pcb1"] * 9


def test_visa_raw_bad_input(visa_raw_root):
    csv = visa_raw_root / "split_csv" / "1cls.csv"
    text = csv.read_text()
    with pytest.raises(DataError, match=r"unknown categories \['cashew'\]"):
        list(read_visa(visa_raw_root, categories=["cashew"]))
    (visa_raw_root / "candle" / "Data" / "Masks" / "Anomaly" / "001.png").unlink()
    with pytest.raises(DataError, match=r"Anomaly/001.JPG: anomalous test image without a mask"):
        list(read_visa(visa_raw_root))
    bad = []
    samples = list(read_visa(visa_raw_root, on_bad=lambda p, r: bad.append((p, r))))
    assert len(samples) == 17 and len(bad) == 1 and bad[0][0].endswith("Anomaly/001.JPG")
    csv.write_text(text.replace("object,split,label,image,mask", "object,set,label,image_path,mask_path"))
    with pytest.raises(DataError, match=r"1cls.csv: columns .* expected object,split,label,image,mask"):
        list(read_visa(visa_raw_root))
    csv.write_text(text.replace("candle,train,normal", "candle,train,anomaly", 1))
    with pytest.raises(DataError, match=r"1cls.csv:2: an anomalous training image"):
        list(read_visa(visa_raw_root))
    csv.write_text(text)
    import shutil

    shutil.rmtree(visa_raw_root / "pcb1")
    with pytest.raises(DataError, match=r"pcb1: missing category folder"):
        list(read_visa(visa_raw_root, categories=["pcb1"]))


def test_visa_converted_layout(visa_converted_root):
    assert detect_layout(visa_converted_root) == "visa"
    samples = by_key(read_dataset("visa", visa_converted_root))
    assert len(samples) == 2 * 6
    s = samples["capsules/test/bad/001"]
    assert (s.label, s.defect) == (1, "bad") and s.mask_source.endswith("ground_truth/bad/001.png")
    assert s.mask().sum() == 36


def test_realiad_json_over_image_folders(realiad_root):
    samples = list(read_dataset("realiad", realiad_root))
    assert len(samples) == 2 * (5 + 5 + 2)
    keys = by_key(samples)
    ng = keys["audiojack/NG/HS/S0003/audiojack_0003_NG_C3_20230922093358"]
    assert (ng.split, ng.label, ng.defect) == ("test", 1, "HS")
    assert ng.meta()["view"] == "C3" and ng.meta()["defect_name"] == "scratch"
    assert ng.image().shape == (16, 16, 3) and ng.mask().sum() == 36  # realiad_256 by default
    ok = keys["toy/OK/S0001/toy_0001_OK_C5_20230922093358"]
    assert (ok.split, ok.label, ok.defect, ok.meta()["view"]) == ("train", 0, "good", "C5")
    # the same keys at another resolution
    big = list(read_realiad(realiad_root, resolution=512))
    assert [s.key for s in big] == [s.key for s in samples]
    assert big[0].image().shape == (32, 32, 3)


def test_realiad_bad_input(realiad_root):
    path = realiad_root / "realiad_jsons" / "toy.json"
    doc = json.loads(path.read_text())
    with pytest.raises(DataError, match="realiad_1024.*image folder not found"):
        list(read_realiad(realiad_root, resolution=1024))
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DataError, match=r"toy.json: expected a JSON object with 'train' and 'test' lists"):
        list(read_realiad(realiad_root))
    doc["test"][-1]["mask_path"] = None
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"toy_0003_NG_C3_20230922093358.jpg: anomalous test image without a mask"):
        list(read_realiad(realiad_root, categories=["toy"]))
    kept = list(read_dataset("realiad", realiad_root, ["toy"], masks_optional=True))
    assert len(kept) == 12 and not kept[-1].has_mask and kept[-1].mask() is None
    doc["train"][0] = {"category": "toy", "image": "x.jpg"}
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"toy.json: train\[0\] must be an object with image_path and anomaly_class"):
        list(read_realiad(realiad_root, categories=["toy"]))


def test_folder_single_category_with_masks(folder_root, image_writer):
    samples = list(read_dataset("folder", folder_root))
    assert {s.category for s in samples} == {"widgets"}
    normal_test = [s for s in samples if s.split == "test" and s.label == 0]
    assert 1 <= len(normal_test) <= 10 and sum(s.split == "train" for s in samples) == 20 - len(normal_test)
    anomalous = by_key(s for s in samples if s.label)
    assert sorted(anomalous) == [
        "anomalous/dent/dent0",
        "anomalous/dent/dent1",
        "anomalous/scratch/scratch0",
        "anomalous/scratch/scratch1",
    ]
    assert anomalous["anomalous/dent/dent1"].defect == "dent" and anomalous["anomalous/dent/dent1"].mask().sum() == 36
    # the split is a function of each file's name: adding images never moves the others
    for i in range(20, 40):
        image_writer(folder_root / "normal" / f"img{i:02d}.png", np.zeros((16, 16, 3), np.uint8))
    again = {s.key: s.split for s in read_folder(folder_root) if s.label == 0}
    assert len(again) == 40 and all(again[s.key] == s.split for s in samples if s.label == 0)


def test_folder_without_masks_and_several_categories(folder_root, tmp_path, image_writer):
    import shutil

    multi = tmp_path / "mine"
    shutil.copytree(folder_root, multi / "a")
    shutil.rmtree(multi / "a" / "masks")
    shutil.copytree(folder_root / "normal", multi / "b" / "good")
    image_writer(multi / "b" / "bad" / "x.png", np.zeros((16, 16, 3), np.uint8))
    assert detect_layout(multi) == "folder"
    samples = list(read_dataset("folder", multi, normal_test=None, test_fraction=0.5))
    assert {s.category for s in samples} == {"a", "b"}
    anomalous = [s for s in samples if s.label]
    assert len(anomalous) == 5 and not any(s.has_mask for s in anomalous)  # no masks: pixel metrics n/a
    assert by_key(anomalous)["b/bad/x"].defect == "anomalous"
    with pytest.raises(DataError, match=r"mask folder not found"):
        list(read_dataset("folder", multi, masks="gt"))
    with pytest.raises(DataError, match=r"no normal-image folder"):
        list(read_dataset("folder", multi / "a" / "anomalous"))


def test_registry(mpdd_root, realiad_root, visa_raw_root, folder_root, tmp_path):
    assert set(dataset_names()) >= {"mvtec", "visa", "mpdd", "realiad", "folder", "demo"}
    assert detect_layout(mpdd_root) == "mpdd"
    assert detect_layout(realiad_root) == "realiad"
    assert detect_layout(visa_raw_root) == "visa"
    assert detect_layout(folder_root) == "folder"
    assert detect_layout(tmp_path / "nothing") is None
    with pytest.raises(DataError, match=r"--resolution: not an option of the mvtec reader"):
        read_dataset("mvtec", mpdd_root, resolution=256)
    with pytest.raises(DataError, match=r"dataset 'kolektor': unknown"):
        read_dataset("kolektor", mpdd_root)


@pytest.mark.parametrize(
    "fault, message",
    [
        ("extra-field", r"1cls.csv:3: 6 fields, expected 5"),
        ("short-row", r"1cls.csv:3: fewer fields than the 5 columns"),
        ("non-utf8", r"1cls.csv: not UTF-8 text"),
        ("dotdot", r"1cls.csv:3: image path '\.\./outside/x.JPG' leaves the data set folder"),
        ("absolute", r"1cls.csv:3: image path '/etc/x.JPG' leaves the data set folder"),
    ],
)
def test_visa_split_csv_faults_name_the_file(visa_raw_root, fault, message):
    csv = visa_raw_root / "split_csv" / "1cls.csv"
    lines = csv.read_text().splitlines()
    row = lines[2].split(",")
    if fault == "extra-field":
        lines[2] += ",surplus"
    elif fault == "short-row":
        lines[2] = ",".join(row[:3])
    elif fault in ("dotdot", "absolute"):
        row[3] = "../outside/x.JPG" if fault == "dotdot" else "/etc/x.JPG"
        lines[2] = ",".join(row)
    data = ("\n".join(lines) + "\n").encode()
    csv.write_bytes(data + b"pcb1,test,normal,caf\xe9.JPG,\n" if fault == "non-utf8" else data)
    with pytest.raises(DataError, match=message):
        list(read_visa(visa_raw_root))


def test_visa_split_csv_with_a_bom_reads_as_without(visa_raw_root):
    csv = visa_raw_root / "split_csv" / "1cls.csv"
    plain = [s.key for s in read_visa(visa_raw_root)]
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())
    assert [s.key for s in read_visa(visa_raw_root)] == plain


def test_realiad_null_anomaly_class_is_refused(realiad_root):
    path = realiad_root / "realiad_jsons" / "toy.json"
    doc = json.loads(path.read_text())
    doc["test"][0]["anomaly_class"] = None
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"toy.json: test\[0\] must be an object with image_path and anomaly_class"):
        list(read_realiad(realiad_root, categories=["toy"]))


def test_an_empty_category_is_named(mpdd_root):
    (mpdd_root / "empty" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty/train: no images in category 'empty'"):
        list(read_dataset("mpdd", mpdd_root))
    skipped = []
    kept = list(read_dataset("mpdd", mpdd_root, on_bad=lambda p, r: skipped.append(p)))
    assert skipped == [str(mpdd_root / "empty" / s) for s in ("train", "test")]  # empty, and missing
    assert {s.category for s in kept} == {"bracket_black", "tubes"}


def test_a_files_sample_is_keyed_by_its_path_under_the_root_without_extension(tmp_path):
    img, mask = tmp_path / "cat" / "test" / "crack" / "000.png", tmp_path / "cat" / "gt" / "000_mask.png"
    s = Sample.from_file(tmp_path, img, mask, dataset="d", category="cat", split="test", label=1, defect="crack")
    assert (s.key, s.source, s.mask_source) == ("cat/test/crack/000", str(img), str(mask))
    assert (s.dataset, s.category, s.split, s.label, s.defect, s.extra) == ("d", "cat", "test", 1, "crack", {})
    normal = Sample.from_file(
        tmp_path, tmp_path / "a.JPG", dataset="d", category="a", split="train", label=0, defect="good"
    )
    assert (normal.key, normal.mask_source, normal.has_mask) == ("a", None, True)
    with pytest.raises(ValueError):  # an image outside the root has no key
        Sample.from_file(
            tmp_path / "cat", tmp_path / "x.png", dataset="d", category="c", split="test", label=0, defect=""
        )
