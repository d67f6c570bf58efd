"""The shard reader: the same records as WebDataset's tar reader, and one-line errors naming the shard."""

import io
import tarfile

import pytest
import webdataset as wds

from decodiff.datasets.imageio import DataError
from decodiff.datasets.stream import ShardStream
from decodiff.datasets.tar_records import open_records, tar_records


def _tar(path, members, fmt):
    with tarfile.open(path, "w", format=fmt) as tar:
        d = tarfile.TarInfo("some/dir")
        d.type = tarfile.DIRTYPE
        tar.addfile(d)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _wds(path):
    return [
        {k: v for k, v in r.items() if k != "__local_path__"}
        for r in wds.tarfile_to_samples()(iter([{"url": str(path)}]))
    ]


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_same_records_as_webdataset(tmp_path, fmt):
    deep = "d" * 60 + "/" + "e" * 60 + "/" + "k" * 40  # > 100 characters: pax, GNU long name or ustar prefix
    members = [
        (f"{deep}.image.png", b"\x89PNG" * 300),
        (f"{deep}.meta.json", b"{}"),
        ("x/y.z/plain.image.jpg", b"j" * 513),
        ("x/y.z/plain.meta.json", b"[1]"),
        ("no_extension", b"?"),
        ("\u00e9t\u00e9/k.txt" if fmt != tarfile.USTAR_FORMAT else "ete/k.txt", b""),
    ]
    path = _tar(tmp_path / "a.tar", members, fmt)
    ours = list(open_records(str(path)))
    assert ours == _wds(path)
    assert [r["__key__"] for r in ours] == [deep, "x/y.z/plain", ours[2]["__key__"]]
    assert ours[0]["image.png"] == b"\x89PNG" * 300 and ours[1]["image.jpg"] == b"j" * 513


def test_shards_read_the_same_and_broken_shards_fail_with_their_name(mpdd_root, tmp_path):
    from decodiff.datasets.shards import shard_dataset

    m = shard_dataset("mpdd", mpdd_root, tmp_path / "s", max_count=3)
    path = tmp_path / "s" / m.shards[0].name
    assert list(open_records(str(path))) == _wds(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(DataError, match=rf"{path}: truncated tar"):
        list(ShardStream.from_manifest(tmp_path / "s", "train"))
    bad = bytearray(data)
    bad[3] ^= 0x55  # inside the first header's name: the header checksum no longer matches
    with pytest.raises(DataError, match="corrupt tar header"):
        list(tar_records(io.BytesIO(bytes(bad)), "x.tar"))
    with pytest.raises(DataError, match="corrupt tar header|not a tar file"):
        list(tar_records(io.BytesIO(b"\x89PNG not a tar" * 100), "x.tar"))
    with pytest.raises(DataError, match=r"pipe:false: read failed"):
        list(open_records("pipe:false"))
