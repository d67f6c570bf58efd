"""Image and mask decoding with errors that name the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class DataError(ValueError):
    """Bad input data: the message names the file and what was expected."""


def _open(path_or_bytes: Path | bytes, name: str) -> Image.Image:
    try:
        src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
        img = Image.open(src)
        img.load()
        return img
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: not a readable image (unknown format or corrupt header)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{name}: not a readable image ({exc})") from None


def read_rgb(path: Path | bytes, name: str | None = None) -> np.ndarray:
    """HxWx3 uint8; grey-scale and palette images become 3 channels, alpha is dropped."""
    img = _open(path, name or str(path))
    return np.array(img if img.mode == "RGB" else img.convert("RGB"))  # a writable array (torch warns otherwise)


def read_mask(path: Path | bytes, name: str | None = None) -> np.ndarray:
    """HxW bool: any non-zero value is anomalous."""
    img = _open(path, name or str(path))
    arr = np.asarray(img.convert("L") if img.mode not in ("L", "1", "I", "I;16") else img)
    return arr > 0


def encode_png(array: np.ndarray) -> bytes:
    """Lossless PNG bytes of an HxW(x3) uint8 or bool array."""
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def image_size(path: Path, name: str | None = None) -> tuple[int, int]:
    """(H, W) from the file's header only (cheap: nothing is decoded)."""
    try:
        with Image.open(path) as img:
            w, h = img.size
        return h, w
    except FileNotFoundError:
        raise DataError(f"{name or path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"{name or path}: not a readable image ({exc})") from None
