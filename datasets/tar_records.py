"""Reading WebDataset records out of a tar byte stream: the reading half of the shard format.

Python's tarfile in stream mode reads in small blocks and copies each member through a
buffer; a shard is read once, front to back, so this reader takes one header and one
`read(size)` per member instead (ustar and pax headers, GNU long names, checksums checked).
Members are grouped into records as WebDataset does: a member `<key>.<ext>` goes to the
record `<key>` (the key ends at the first dot of the file's base name), consecutive members
with the same key form one record: {"__key__", "__url__", "<ext>": bytes, ...}.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from decodiff.datasets.imageio import DataError

BLOCK = 512


def _read(f: BinaryIO, n: int, where: str) -> bytes:
    data = f.read(n)
    while len(data) < n:
        more = f.read(n - len(data))
        if not more:
            raise DataError(f"{where}: truncated tar (a member ends early)")
        data += more
    return data


def _number(field: bytes, where: str) -> int:
    if field[:1] and field[0] & 0x80:  # base-256 (GNU) for sizes of 8 GiB and more
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise DataError(f"{where}: not a tar file (bad header)") from None


def _pax_path(data: bytes) -> str | None:
    """The `path` of a pax extended header ("<len> path=<value>\\n" records)."""
    pos = 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        if key == b"path":
            return value.decode("utf-8")
        pos += length
    return None


def tar_members(f: BinaryIO, where: str = "?") -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of the regular files in a tar stream, in order."""
    long_name: str | None = None
    while True:
        header = f.read(BLOCK)
        if len(header) < BLOCK:
            if header.strip(b"\0"):
                raise DataError(f"{where}: truncated tar (a header ends early)")
            return
        if header == b"\0" * BLOCK:
            return  # end-of-archive blocks
        stored = _number(header[148:156], where)
        if stored != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise DataError(f"{where}: corrupt tar header (checksum mismatch)")
        size = _number(header[124:136], where)
        kind = header[156:157]
        data = _read(f, size, where)
        if size % BLOCK:
            _read(f, BLOCK - size % BLOCK, where)
        if kind == b"x":
            long_name = _pax_path(data) or long_name
            continue
        if kind == b"L":
            long_name = data.rstrip(b"\0").decode("utf-8")
            continue
        if kind not in (b"0", b"\0", b"7"):
            long_name = None  # directories, links, global headers: not members of a record
            continue
        if long_name is not None:
            path, long_name = long_name, None
        else:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8")
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8") if header[257:262] == b"ustar" else ""
            path = f"{prefix}/{name}" if prefix else name
        yield path, data


def tar_records(f: BinaryIO, url: str) -> Iterator[dict[str, Any]]:
    """WebDataset records of a tar stream; `url` goes into each record as "__url__"."""
    record: dict[str, Any] | None = None
    for path, data in tar_members(f, url):
        slash = path.rfind("/") + 1
        dot = path.find(".", slash)
        if dot < 0:
            continue  # not <key>.<ext>
        key, ext = path[:dot], path[dot + 1 :]
        if record is None or record["__key__"] != key:
            if record is not None:
                yield record
            record = {"__key__": key, "__url__": url}
        record[ext] = data
    if record is not None:
        yield record


def open_records(url: str) -> Iterator[dict[str, Any]]:
    """Records of the shard at `url` (a path, or anything WebDataset's gopen opens: pipe:, http(s))."""
    import webdataset as wds  # pulls torch (0.7 s): `decodiff data inspect` of a local folder does without

    try:
        f = wds.gopen(url, "rb")
    except OSError as exc:
        raise DataError(f"{url}: cannot open ({exc})") from None
    complete = False
    try:
        yield from tar_records(f, url)
        complete = True
    except OSError as exc:  # a failing pipe or download
        raise DataError(f"{url}: read failed ({exc})") from None
    finally:
        try:
            f.close()  # a pipe's command is waited for here: its exit status counts once all was read
        except OSError as exc:
            if complete:
                raise DataError(f"{url}: read failed ({exc})") from None
