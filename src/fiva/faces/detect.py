"""YuNet face detection with fixed-shape outputs.

Landmark order (image left to right as seen): eye, eye, nose tip, mouth corner, mouth corner,
the same order as the ArcFace template in `align.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..weights import yunet_path


@dataclass
class Detections:
    """Faces of one image: boxes [N,4] (x1,y1,x2,y2), scores [N], landmarks [N,5,2]; N may be 0."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.scores)

    def largest(self) -> int:
        """Index of the largest face (one-subject photos such as LFW: the subject). N must be > 0."""
        return int(np.argmax((self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])))

    def __getitem__(self, idx) -> "Detections":
        return Detections(self.boxes[idx], self.scores[idx], self.landmarks[idx])

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))


class FaceDetector:
    """YuNet (OpenCV FaceDetectorYN) on images of any size.

    Args:
        score_threshold: minimum face score (default 0.6).
        nms_threshold: box overlap above which the weaker box is dropped (default 0.3).
        max_side: images larger than this are detected on a downscaled copy (default 1920);
            coordinates are always returned in the original image's pixels.
    """

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, max_side: int = 1920):
        self.score_threshold = score_threshold
        self.max_side = max_side
        try:  # OpenCV 5 warns about backend targets on every model load: noise for users
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass
        self._net = cv2.FaceDetectorYN.create(str(yunet_path()), "", (320, 320), score_threshold, nms_threshold, 5000)
        self._size = (320, 320)

    def __call__(self, rgb: np.ndarray) -> Detections:
        """Detect faces in an RGB uint8 image [H,W,3]."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H,W,3], got shape {rgb.shape}")
        h, w = rgb.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        size = (bgr.shape[1], bgr.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, faces = self._net.detect(bgr)
        if faces is None or len(faces) == 0:
            return Detections.empty()
        faces = faces.astype(np.float32) / np.float32(scale)
        faces[:, 14] *= scale  # the score is not a coordinate
        boxes = faces[:, :4].copy()
        boxes[:, 2:] += boxes[:, :2]
        order = np.argsort(-faces[:, 14])
        return Detections(boxes[order], faces[order, 14], faces[order, 4:14].reshape(-1, 5, 2))


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a [4] with each box of b [N,4] (x1,y1,x2,y2)."""
    x1, y1 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x2, y2 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


def match_face(box: np.ndarray, boxes: np.ndarray, min_iou: float = 0.3) -> int | None:
    """Index of the box of `boxes` overlapping `box` best (IoU > min_iou), else None."""
    if len(boxes) == 0:
        return None
    o = iou(box, boxes)
    return int(np.argmax(o)) if o.max() > min_iou else None
