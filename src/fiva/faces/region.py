"""The region a generated face may cover: the face's own outline, not a fixed ellipse.

A fixed ellipse in template space lands on ears, hair and background as soon as a head turns. The
outline here follows the face: its jaw line and a band above the brows, from dlib's 68-point
landmarks where dlib loads, else from a mean 68-point outline mapped onto the
face's 5 key points by a least-squares affine map (which, unlike the alignment's similarity,
narrows the outline as the head turns).
"""
from __future__ import annotations

import cv2
import numpy as np

from .align import ARCFACE_112

# Median jaw (0-16) and brow (17-26) points of dlib's 68-point shape over 300 LFW training faces,
# in the 112 px ArcFace template (faces aligned by their YuNet key points).
MEAN_OUTLINE_112 = np.array([
    [12.9, 55.8], [13.5, 66.8], [15.0, 77.4], [16.9, 88.3], [20.7, 98.4], [26.8, 107.4], [35.4, 114.5], [44.8, 120.1],
    [55.6, 121.7], [66.3, 119.8], [75.2, 113.8], [82.9, 106.6], [88.7, 97.3], [91.7, 87.2], [93.4, 76.3], [94.8, 65.4],
    [95.2, 54.7], [21.2, 47.0], [26.4, 42.5], [33.5, 40.5], [41.0, 41.1], [47.8, 43.6], [61.5, 43.6], [68.2, 40.5],
    [75.3, 39.9], [82.4, 41.4], [87.2, 46.1]], np.float32)
FOREHEAD = 1.0  # the brows are raised by this many brow-to-eye distances: the forehead up to the hair


class FaceOutline:
    """`__call__(rgb, kps [N,5,2]) -> [N,27,2]`: each face's outline (jaw, then brows raised to
    the forehead), in image pixels."""

    def __init__(self, dense: bool | None = None):
        self._lm68 = None
        if dense is not False:
            try:
                from .landmarks68 import Landmarker68

                self._lm68 = Landmarker68()
            except (ImportError, RuntimeError, OSError):
                if dense:
                    raise
        self.dense = self._lm68 is not None

    def __call__(self, rgb: np.ndarray, kps: np.ndarray) -> np.ndarray:
        if len(kps) == 0:
            return np.zeros((0, 27, 2), np.float32)
        if self._lm68 is not None:
            pts = self._lm68(rgb, kps)[:, :27].copy()
        else:
            pts = np.stack([_affine_outline(k) for k in kps])
        for p, k in zip(pts, kps):  # raise the brows along the face's up direction
            eyes = (k[0] + k[1]) / 2
            brows = p[17:27].mean(0)
            p[17:27] += (brows - eyes) * FOREHEAD
        return pts


def _affine_outline(kps: np.ndarray) -> np.ndarray:
    src = np.hstack([ARCFACE_112, np.ones((5, 1), np.float32)])
    a, *_ = np.linalg.lstsq(src, kps.astype(np.float32), rcond=None)
    return (np.hstack([MEAN_OUTLINE_112, np.ones((27, 1), np.float32)]) @ a).astype(np.float32)


def outline_mask(outline: np.ndarray, size: int, feather: float = 0.04) -> np.ndarray:
    """[size,size] float mask in [0,1]: the polygon `outline` [27,2] (crop pixels; jaw left to
    right, then brows) filled, its edge softened over `feather` of the side, inside the outline."""
    ss = 4  # drawn at 4x, then reduced: a smooth edge at any size
    poly = np.concatenate([outline[:17], outline[17:27][::-1]])
    big = np.zeros((size * ss, size * ss), np.uint8)
    cv2.fillPoly(big, [np.round(poly * ss).astype(np.int32)], 255, lineType=cv2.LINE_AA)
    m = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    r = max(1, int(round(feather * size)))
    m = cv2.erode(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))  # feather inside the outline
    return cv2.GaussianBlur(m, (0, 0), r / 1.5)
