"""Small data sets in each native layout, written as real image files at test time."""

import json

import numpy as np
import pytest
from PIL import Image


def write_image(path, arr, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)
    return path


def noise(rng, shape):
    return rng.integers(0, 255, shape, dtype=np.uint8)


def box_mask(shape, i, value=255):
    m = np.zeros(shape, np.uint8)
    m[2 + i : 8 + i, 3:9] = value
    return m


@pytest.fixture()
def image_writer():
    return write_image


@pytest.fixture()
def mpdd_root(tmp_path):
    """MPDD: MVTec-AD layout; one category names masks <stem>_mask.png, the other <stem>.png."""
    rng = np.random.default_rng(1)
    root = tmp_path / "mpdd"
    for cat, suffix in (("bracket_black", "_mask"), ("tubes", "")):
        for i in range(4):
            write_image(root / cat / "train" / "good" / f"{i:03d}.png", noise(rng, (24, 24, 3)))
        write_image(root / cat / "test" / "good" / "000.png", noise(rng, (24, 24, 3)))
        for i in range(2):
            write_image(root / cat / "test" / "scratches" / f"{i:03d}.png", noise(rng, (24, 24, 3)))
            write_image(root / cat / "ground_truth" / "scratches" / f"{i:03d}{suffix}.png", box_mask((24, 24), i))
    return root


@pytest.fixture()
def visa_raw_root(tmp_path):
    """VisA as released: <cat>/Data/Images/{Normal,Anomaly}/*.JPG, masks with values 0/1 ... (any non-zero
    is anomalous), split_csv/1cls.csv (object,split,label,image,mask) and candle's image_anno.csv."""
    rng = np.random.default_rng(2)
    root = tmp_path / "VisA"
    rows = ["object,split,label,image,mask"]
    anno = {"candle": ["image,label,mask"]}
    for cat in ("candle", "pcb1"):
        for i in range(6):
            rel = f"{cat}/Data/Images/Normal/{i:04d}.JPG"
            write_image(root / rel, noise(rng, (20, 28, 3)), "JPEG")
            rows.append(f"{cat},{'train' if i < 4 else 'test'},normal,{rel},")
            anno.get(cat, []).append(f"{rel},normal,")
        for i in range(3):
            rel, mrel = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG", f"{cat}/Data/Masks/Anomaly/{i:03d}.png"
            write_image(root / rel, noise(rng, (20, 28, 3)), "JPEG")
            write_image(root / mrel, box_mask((20, 28), i, value=i + 1))
            rows.append(f"{cat},test,anomaly,{rel},{mrel}")
            label = "chunk of wax missing" if i < 2 else '"damaged corner,weird candle wick"'
            anno.get(cat, []).append(f"{rel},{label},{mrel}")
    (root / "split_csv").mkdir(parents=True)
    (root / "split_csv" / "1cls.csv").write_text("\n".join(rows) + "\n")
    (root / "candle" / "image_anno.csv").write_text("\n".join(anno["candle"]) + "\n")
    return root


@pytest.fixture()
def visa_converted_root(tmp_path):
    """VisA as spot-diff's prepare_data.py writes it: 1cls/<cat>/{train/good,test/good,test/bad,ground_truth/bad}."""
    rng = np.random.default_rng(3)
    root = tmp_path / "VisA_pytorch"
    for cat in ("capsules", "fryum"):
        base = root / "1cls" / cat
        for i in range(3):
            write_image(base / "train" / "good" / f"{i:03d}.JPG", noise(rng, (16, 16, 3)), "JPEG")
        write_image(base / "test" / "good" / "010.JPG", noise(rng, (16, 16, 3)), "JPEG")
        for i in range(2):
            write_image(base / "test" / "bad" / f"{i:03d}.JPG", noise(rng, (16, 16, 3)), "JPEG")
            write_image(base / "ground_truth" / "bad" / f"{i:03d}.png", box_mask((16, 16), i))
    return root


def _realiad_name(cat, sample, ok, view, t="20230922093358"):
    return f"{cat}_{sample:04d}_{'OK' if ok else 'NG'}_C{view}_{t}"


@pytest.fixture()
def realiad_root(tmp_path):
    """Real-IAD: realiad_jsons/<cat>.json ({meta, train, test} of {category, anomaly_class, image_path,
    mask_path}) over realiad_256/ and realiad_512/ (<cat>/OK/S0001/..._C1_...jpg, <cat>/NG/<code>/S0003/...)."""
    rng = np.random.default_rng(4)
    root = tmp_path / "Real-IAD"
    for cat in ("audiojack", "toy"):
        doc = {"meta": {"prefix": "", "normal_class": "OK", "pre_transform": None}, "train": [], "test": []}
        for sample, split in ((1, "train"), (2, "test")):
            for view in range(1, 6):
                rel = f"OK/S{sample:04d}/{_realiad_name(cat, sample, True, view)}.jpg"
                doc[split].append({"category": cat, "anomaly_class": "OK", "image_path": rel, "mask_path": None})
        for view in (1, 3):
            rel = f"NG/HS/S0003/{_realiad_name(cat, 3, False, view)}.jpg"
            mrel = f"NG/HS/S0003/{_realiad_name(cat, 3, False, view)}.png"
            doc["test"].append({"category": cat, "anomaly_class": "HS", "image_path": rel, "mask_path": mrel})
        for res in (256, 512):
            side = res // 16  # small stand-ins for 256 and 512 pixels
            for e in doc["train"] + doc["test"]:
                write_image(root / f"realiad_{res}" / cat / e["image_path"], noise(rng, (side, side, 3)), "JPEG")
                if e["mask_path"]:
                    write_image(root / f"realiad_{res}" / cat / e["mask_path"], box_mask((side, side), 1))
        (root / "realiad_jsons").mkdir(parents=True, exist_ok=True)
        (root / "realiad_jsons" / f"{cat}.json").write_text(json.dumps(doc))
    return root


@pytest.fixture()
def folder_root(tmp_path):
    """The user's own folders: <root>/{normal, anomalous/{scratch,dent}, masks/{scratch,dent}}."""
    rng = np.random.default_rng(5)
    root = tmp_path / "widgets"
    for i in range(20):
        write_image(root / "normal" / f"img{i:02d}.png", noise(rng, (16, 16, 3)))
    for defect in ("scratch", "dent"):
        for i in range(2):
            write_image(root / "anomalous" / defect / f"{defect}{i}.png", noise(rng, (16, 16, 3)))
            write_image(root / "masks" / defect / f"{defect}{i}_mask.png", box_mask((16, 16), i))
    return root
