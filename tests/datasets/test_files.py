import hashlib
import json

import numpy as np
import pytest

from decodiff.datasets.files import read_json, sha256_file, write_atomic, write_json_atomic


def test_text_bytes_and_json_are_written_whole_with_no_temporary_left(tmp_path):
    write_atomic(tmp_path / "sub" / "a.txt", "héllo\n")  # the folder is made
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    write_json_atomic(tmp_path / "c.json", {"path": tmp_path})  # unknown types become strings
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"path": str(tmp_path)}
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.txt", "b.bin", "c.json"]


def test_a_writer_function_gets_a_temporary_path_with_the_suffix(tmp_path):
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    write_atomic(tmp_path / "m.npz", lambda p: np.savez_compressed(p, maps=arr))  # numpy adds .npz when missing
    write_atomic(tmp_path / "a.npy", lambda p: np.save(p, arr))
    assert np.array_equal(np.load(tmp_path / "m.npz")["maps"], arr)
    assert np.array_equal(np.load(tmp_path / "a.npy"), arr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "m.npz"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "r.csv"
    write_atomic(path, "old\n")

    def half(p):
        p.write_text("new, half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, half)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["r.csv"]


def test_sha256_file_matches_hashlib_across_blocks(tmp_path):
    data = bytes(range(256)) * 1000
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f", chunk=4096) == hashlib.sha256(data).hexdigest()


def test_read_json_gives_the_callers_one_line_errors(tmp_path):
    path = tmp_path / "m.json"
    with pytest.raises(KeyError, match="no m.json"):
        read_json(path, KeyError, "no m.json", "bad m.json")
    path.write_text('{"a": [1, 2]')
    with pytest.raises(ValueError, match=r"^bad m.json \(Expecting .* line 1 column 13 \(char 12\)\)$"):
        read_json(path, ValueError, "no m.json", "bad m.json")
    path.write_text('{"a": [1, 2]}')
    assert read_json(path, ValueError, "no m.json", "bad m.json") == {"a": [1, 2]}
