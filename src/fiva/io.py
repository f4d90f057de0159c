"""Image reading and writing with one-line errors that name the file."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm"}
MAX_PIXELS = 100_000_000  # refuse decompression bombs before decoding


class InputError(ValueError):
    """A bad input file; the message is one line naming the file."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H,W,3] (alpha dropped, grey expanded)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    data = np.fromfile(str(path), np.uint8)
    try:
        from PIL import Image

        with Image.open(path) as im:
            w, h = im.size
        if w * h > MAX_PIXELS:
            raise InputError(f"{path}: image too large ({w}x{h} pixels, limit {MAX_PIXELS})")
    except InputError:
        raise
    except Exception:
        pass  # let OpenCV have a go at formats PIL does not know
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return img


def write_image(path: str | Path, rgb: np.ndarray, quality: int = 95) -> None:
    """Write RGB uint8 to `path` in the format its extension names."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix.lower() in (".jpg", ".jpeg") else []
    if path.suffix.lower() == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, quality]
    ok, buf = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise InputError(f"{path}: could not encode image")
    buf.tofile(str(path))
