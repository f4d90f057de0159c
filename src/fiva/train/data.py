"""A folder of face images, aligned once with the face stack and cached as a compact crop pack.

The pack is an .npz (no pickles) of JPEG-encoded aligned crops: `offsets` [N+1] and `data` bytes,
plus `sources` (relative paths). Decoded, the whole set lives in memory as uint8 [N,S,S,3].
"""
from __future__ import annotations

import hashlib
import os
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..faces import FaceDetector, align_faces
from ..io import IMAGE_EXTS, read_image

log = logging.getLogger(__name__)


def list_images(root: str | Path) -> list[Path]:
    """All images under `root` (recursively, following symlinks), sorted."""
    root = Path(root)
    if root.is_file():
        return [root]
    found = []
    for d, _, files in os.walk(root, followlinks=True):
        found += [Path(d) / f for f in files if Path(f).suffix.lower() in IMAGE_EXTS]
    return sorted(found)


def build_pack(paths: list[Path], root: Path, out: Path, size: int = 112, quality: int = 95) -> Path:
    """Detect, align and JPEG-encode the main face of every image; images without a face are skipped."""
    detector = FaceDetector()
    blobs, sources, skipped = [], [], 0
    for p in tqdm(paths, desc="aligning faces", unit="img"):
        try:
            rgb = read_image(p)
        except ValueError as e:
            log.warning("%s", e)
            skipped += 1
            continue
        det = detector(rgb)
        if len(det) == 0:
            skipped += 1
            continue
        crop, _ = align_faces(rgb, det.landmarks[det.largest()][None], size)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(crop[0], cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
        blobs.append(buf.ravel())
        sources.append(str(p.relative_to(root)) if p.is_relative_to(root) else str(p))
    if not blobs:
        raise ValueError(f"{root}: no face found in any of {len(paths)} images")
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, offsets=offsets, data=np.concatenate(blobs), sources=np.array(sources), size=np.int64(size))
    log.info("aligned %d faces from %d images (%d skipped) -> %s", len(blobs), len(paths), skipped, out)
    return out


def load_pack(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Decode a crop pack to uint8 [N,S,S,3] RGB and the source names."""
    z = np.load(path, allow_pickle=False)
    offsets, data = z["offsets"], z["data"]
    crops = np.stack(
        [cv2.cvtColor(cv2.imdecode(data[a:b], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for a, b in zip(offsets[:-1], offsets[1:])]
    )
    sources = [str(s) for s in z["sources"]] if "sources" in z.files else [str(i) for i in range(len(crops))]
    return crops, sources


def crop_pack_for(data: str | Path, size: int, cache: Path) -> Path:
    """The crop pack of a data folder, built on first use and reused (keyed by the file list and size).

    `data` may also be a ready pack (.npz)."""
    data = Path(data)
    if data.suffix == ".npz":
        return data
    paths = list_images(data)
    if not paths:
        raise ValueError(f"{data}: no images found (looked for {', '.join(sorted(IMAGE_EXTS))})")
    key = hashlib.sha1(("\n".join(str(p) for p in paths) + f"|{size}").encode()).hexdigest()[:12]
    out = cache / f"crops-{size}-{key}.npz"
    return out if out.exists() else build_pack(paths, data, out, size)
