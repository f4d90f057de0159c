"""Image reading and writing with one-line errors that name the file."""
from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".mkv", ".avi", ".webm"}
MAX_PIXELS = 100_000_000  # refuse decompression bombs before decoding
_PIL_LIMIT = threading.Lock()  # fiva serve reads uploads on worker threads


def files_under(folder: Path, exts: set[str]) -> list[Path]:
    """The files with one of the extensions `exts` anywhere under `folder`, hidden ones left out, sorted."""
    return sorted(f for f in Path(folder).rglob("*") if f.is_file() and f.suffix.lower() in exts and not f.name.startswith("."))


class InputError(ValueError):
    """A bad input file; the message is one line naming the file."""


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as RGB uint8 [H,W,3] (upright per its EXIF orientation, alpha dropped,
    grey expanded, 16-bit reduced to 8). Images over `max_pixels` are refused before decoding."""
    return read_image_alpha(path, max_pixels)[0]


def read_image_alpha(path: str | Path, max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, np.ndarray | None]:
    """Like `read_image`, plus the alpha channel [H,W] uint8 when the file has one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    data = np.fromfile(str(path), np.uint8)
    orientation = 1
    try:
        from PIL import Image

        with _PIL_LIMIT:  # PIL's own bomb guard is a global: off while we read the size and judge it ourselves
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(path) as im:
                    w, h = im.size
                    orientation = int(im.getexif().get(0x0112, 1) or 1)
            finally:
                Image.MAX_IMAGE_PIXELS = limit
        if w * h > max_pixels:
            raise InputError(f"{path}: image too large ({w}x{h} = {w * h} pixels, limit {max_pixels}; "
                             f"--max-pixels raises it)")
    except InputError:
        raise
    except Exception:
        pass  # let OpenCV have a go at formats PIL does not know
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    alpha = None
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    elif img.shape[2] == 4:
        alpha = img[..., 3].copy()
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    img = np.ascontiguousarray(_upright(img, orientation))
    return img, None if alpha is None else np.ascontiguousarray(_upright(alpha, orientation))


def _upright(img: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8), so the pixels are as viewers show them."""
    return {
        2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
        5: lambda x: x.swapaxes(0, 1), 6: lambda x: np.rot90(x, -1), 7: lambda x: np.rot90(x, 2).swapaxes(0, 1),
        8: lambda x: np.rot90(x, 1),
    }.get(orientation, lambda x: x)(img)


def write_image(path: str | Path, rgb: np.ndarray, quality: int = 95, alpha: np.ndarray | None = None,
                source: str | Path | None = None) -> None:
    """Write RGB uint8 to `path` in the format its extension names (with `alpha` where the format
    holds one: png, webp, tiff). No metadata is written: EXIF (GPS, camera serials) is dropped.

    `source`: the file `rgb` was read from, unchanged. When both are JPEG, the source's own
    compressed data is written, without its metadata, rather than a second lossy encoding: a photo
    without faces comes back pixel for pixel."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    if source is not None and ext in (".jpg", ".jpeg") and Path(source).suffix.lower() in (".jpg", ".jpeg"):
        data = _jpeg_without_metadata(Path(source).read_bytes())
        if data is not None:
            path.write_bytes(data)
            if alpha is None and np.array_equal(read_image(path, rgb.shape[0] * rgb.shape[1]), rgb):
                return  # else (shown rotated by the EXIF orientation just dropped): encoded below
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    if ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 101 if alpha is not None else quality]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    if alpha is not None and ext in (".png", ".webp", ".tif", ".tiff"):
        bgr = np.dstack([bgr, alpha])
    ok, buf = cv2.imencode(path.suffix, bgr, params)
    if not ok:
        raise InputError(f"{path}: could not encode image")
    buf.tofile(str(path))


_KEPT_SEGMENTS = {0xE0, 0xE2, 0xEE}  # JFIF, ICC colour profile, Adobe colour transform


def _jpeg_without_metadata(data: bytes) -> bytes | None:
    """A JPEG's bytes without its EXIF, XMP, IPTC, comments and other APPn segments (the compressed
    picture untouched); None when the header cannot be walked."""
    if data[:2] != b"\xff\xd8":
        return None
    out, i = bytearray(data[:2]), 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: the rest is picture data
            return bytes(out + data[i:])
        n = int.from_bytes(data[i + 2:i + 4], "big")
        if (0xE0 <= marker <= 0xEF and marker not in _KEPT_SEGMENTS) or marker == 0xFE:
            i += 2 + n
            continue
        out += data[i:i + 2 + n]
        i += 2 + n
    return None
