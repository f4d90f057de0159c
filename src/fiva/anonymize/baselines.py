"""Classic obfuscation of detected faces (baselines and fallbacks): blur, pixelate, solid mask."""
from __future__ import annotations

import cv2
import numpy as np

from ..faces import Detections

METHODS = ("blur", "pixelate", "mask")
BLOCKS = 8  # pixelate: the most blocks across a face's (grown) width


def _ellipse_region(shape: tuple[int, int], box: np.ndarray, grow: float) -> tuple[tuple[int, int, int, int], np.ndarray]:
    h, w = shape
    x1, y1, x2, y2 = box
    cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * grow, (y2 - y1) * grow
    X1, Y1 = max(int(cx - bw / 2), 0), max(int(cy - bh / 2), 0)
    X2, Y2 = min(int(np.ceil(cx + bw / 2)), w), min(int(np.ceil(cy + bh / 2)), h)
    mask = np.zeros((Y2 - Y1, X2 - X1), np.uint8)
    if mask.size:
        cv2.ellipse(mask, (int(cx - X1), int(cy - Y1)), (int(bw / 2), int(bh / 2)), 0, 0, 360, 1, -1)
    return (X1, Y1, X2, Y2), mask.astype(bool)


def obfuscate(rgb: np.ndarray, dets: Detections, method: str = "blur", grow: float = 1.3, strength: int = 1) -> np.ndarray:
    """Return a copy of `rgb` with an ellipse over each face (box grown by `grow`) obfuscated;
    `strength` > 1: blur's kernel that many times wider, pixelate's blocks that many times fewer."""
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
    out = rgb.copy()
    for box in dets.boxes:
        (x1, y1, x2, y2), mask = _ellipse_region(rgb.shape[:2], box, grow)
        roi = out[y1:y2, x1:x2]
        if roi.size == 0:
            continue
        if method == "blur":  # a kernel a third of the face, applied at a scale where it is <= 15 px
            k = max(3, max(roi.shape[:2]) * strength // 3)
            f = max(1.0, k / 15)
            small = cv2.resize(roi, (max(1, round(roi.shape[1] / f)), max(1, round(roi.shape[0] / f))), interpolation=cv2.INTER_AREA)
            kk = max(3, int(k / f) | 1)
            new = cv2.resize(cv2.GaussianBlur(small, (kk, kk), 0), (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_LINEAR)
        elif method == "pixelate":  # blocks of 10 px, but never more than BLOCKS across: 10 px blocks left a 1000 px face recognisable
            bw = max(1, min(BLOCKS // strength, roi.shape[1] // 10))
            small = cv2.resize(roi, (bw, max(1, round(bw * roi.shape[0] / roi.shape[1]))), interpolation=cv2.INTER_AREA)
            new = cv2.resize(small, (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_NEAREST)
        else:
            new = np.zeros_like(roi)
        roi[mask] = new[mask]
    return out
