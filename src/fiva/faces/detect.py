"""YuNet face detection with fixed-shape outputs.

Landmark order (image left to right as seen): eye, eye, nose tip, mouth corner, mouth corner,
the same order as the ArcFace template in `align.py`.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..weights import yunet_path

# look_around's views of a candidate: (box side in px, turn in degrees)
VIEWS = ((60, 0), (100, 0), (160, 0), (100, -90), (100, -45), (100, 45), (100, 90))
# YuNet's box side on a face aligned to `second_look`'s template, over the cell's side: median
# 0.52 on 300 LFW faces (5th-95th percentile 0.47-0.57); the box centres lay within 0.11 cell
# sides of their median (99th percentile), which is 0.03 from the template's centre
ALIGNED_SIDE = 0.52


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
    """YuNet (OpenCV FaceDetectorYN) at every face size, on images of any size.

    YuNet places landmarks well on faces of roughly 10-300 px; on a 600 px face it returns parts of
    the face as faces, with landmarks a mouth-width off, and on upscaled photos it takes blurred
    patches for faces. So an image is searched as a pyramid: a coarse pass with the long side at
    about `coarse_side` (big faces, in YuNet's range there), then passes 3x finer up to full resolution,
    each in tiles of at most `tile` px, keeping from the finer passes only faces up to `max_face`
    px: anything larger is 53+ px in the pass before, where a real face is found too. One face seen
    by several passes, or twice by one, gives one detection: the best-scoring one.

    Args:
        score_threshold: minimum face score (default 0.6).
        nms_threshold: box overlap above which the weaker box of one pass is dropped (default 0.3).
        coarse_side: about the long side of the coarsest pass (default 640).
        max_face: largest face, in a pass's pixels, a finer pass may report (default 160).
        tile: largest tile side of a pass (default 1920); tiles overlap by `max_face`.
    Coordinates are always in the original image's pixels.
    """

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, coarse_side: int = 640,
                 max_face: int = 160, tile: int = 1920):
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.coarse_side, self.max_face, self.tile = coarse_side, max_face, tile
        try:  # OpenCV 5 warns about backend targets on every model load: noise for users
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        except AttributeError:
            pass
        self._net = cv2.FaceDetectorYN.create(str(yunet_path()), "", (320, 320), score_threshold, nms_threshold, 5000)
        self._size = (320, 320)

    def twin(self) -> "FaceDetector":
        """A detector of the same settings with a YuNet of its own, for another thread: an OpenCV
        net is not to be shared between threads (YuNet keeps its input size)."""
        return FaceDetector(self.score_threshold, self.nms_threshold, self.coarse_side, self.max_face, self.tile)

    def scales(self, h: int, w: int) -> list[float]:
        """The pyramid's scale factors, coarsest first: full resolution, then 3x coarser until the
        long side is at most `coarse_side` x 1.5 (a 1280 px frame: 1280 and 427 px; 1920: 1920 and
        640; 2048: 2048 and 683)."""
        out = [1.0]
        while max(h, w) * out[0] > self.coarse_side * 1.5:
            out.insert(0, out[0] / 3)
        return out

    def __call__(self, rgb: np.ndarray) -> Detections:
        """Detect faces in an RGB uint8 image [H,W,3]."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB image [H,W,3], got shape {rgb.shape}")
        return self._pyramid(rgb)

    def around(self, rgb: np.ndarray, box: np.ndarray, context: float = 1.0, least: int = 160) -> Detections:
        """What `__call__` finds near `box` (x1, y1, x2, y2), for a fraction of its cost on a large
        image: each pass of the same pyramid runs on a window of its pixels about the box only (the
        box grown by `context` x its side, at least `least` px, each way), its corner on YuNet's
        32 px grid, so the network sees the face and its surroundings as in the whole pass."""
        return self._pyramid(rgb, (np.asarray(box, np.float32), context, least))

    def _pyramid(self, rgb: np.ndarray, window=None) -> Detections:
        """The passes of `scales`, each on the whole image or on `window` (box, context, least)."""
        h, w = rgb.shape[:2]
        found = []
        for level, s in enumerate(self.scales(h, w)):
            img = rgb if s == 1.0 else cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            x0 = y0 = 0
            if window is not None:
                box, context, least = window
                b = box * s
                grow = max(context * float(max(b[2] - b[0], b[3] - b[1])), least)
                x0, y0 = max(int((b[0] - grow) // 32) * 32, 0), max(int((b[1] - grow) // 32) * 32, 0)
                x1 = min(int(np.ceil((b[2] + grow) / 32)) * 32, img.shape[1])
                y1 = min(int(np.ceil((b[3] + grow) / 32)) * 32, img.shape[0])
                if x1 - x0 < 2 or y1 - y0 < 2:
                    continue
                img = np.ascontiguousarray(img[y0:y1, x0:x1])
            faces = self._tiled(img)
            if level > 0 and len(faces):  # big faces belong to the coarser passes
                faces = faces[np.maximum(faces[:, 2], faces[:, 3]) <= self.max_face]
            faces[:, [0, 4, 6, 8, 10, 12]] += x0
            faces[:, [1, 5, 7, 9, 11, 13]] += y0
            faces[:, :14] /= np.float32(s)
            found.append(faces)
        faces = merge_faces(np.concatenate(found)) if found else np.zeros((0, 15), np.float32)
        if len(faces) == 0:
            return Detections.empty()
        boxes = faces[:, :4].copy()
        boxes[:, 2:] += boxes[:, :2]
        return Detections(boxes, faces[:, 14].copy(), faces[:, 4:14].reshape(-1, 5, 2).copy())

    def second_look(self, rgb: np.ndarray, landmarks: np.ndarray, cell: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Detect again on each face's aligned crop: does it still look like a face there?

        Each candidate is warped (ArcFace template, face ~90 px across in a `cell` px square) into
        one mosaic, detected in one YuNet call, and the best face of its cell whose landmarks land
        on the template counts. A part of a face, a neck or a pattern that YuNet took for a face
        at one scale is rarely found again once it is centred and upright at a comfortable size.

        Returns per face the score of the face found again with its landmarks on the template
        (0 = none), the best score of anything face-like at its place in its cell (centred within
        0.35 of an aligned face's box side of the template's centre, 0.5-2x that side, as
        `look_around` asks; 0 = nothing), and the landmarks found again [N,5,2] in units of the
        template's eye distance (NaN = none), which two looks at the same place (before and after
        an edit) can compare. Anywhere in the cell was too wide: a candidate on a neck, a fist or a
        medal has its neighbour's face in its cell (crowd_selfie.jpg: a box on a man's neck saw his
        face above it at 0.86, and was pixelated under his drawn face).
        """
        from .align import ARCFACE_112, similarity_transform

        n = len(landmarks)
        again, seen, found = np.zeros(n, np.float32), np.zeros(n, np.float32), np.full((n, 5, 2), np.nan, np.float32)
        if n == 0:
            return again, seen, found
        tpl = ARCFACE_112 * (cell * 0.7 / 112) + cell * 0.15
        cols = int(np.ceil(np.sqrt(n)))
        rows = int(np.ceil(n / cols))
        mosaic = np.zeros((rows * cell, cols * cell, 3), np.uint8)
        for i, lm in enumerate(landmarks):
            m = similarity_transform(lm, tpl)
            r, c = divmod(i, cols)
            mosaic[r * cell:(r + 1) * cell, c * cell:(c + 1) * cell] = cv2.warpAffine(
                rgb, m, (cell, cell), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        faces = self._detect(mosaic)
        iod = float(np.linalg.norm(tpl[1] - tpl[0]))
        side, centre = ALIGNED_SIDE * cell, tpl.mean(0)  # an aligned face's box (LFW: 0.47-0.57 of the cell)
        for f in faces:
            cx, cy = f[0] + f[2] / 2, f[1] + f[3] / 2
            r, c = int(cy // cell), int(cx // cell)
            i = r * cols + c
            if not (0 <= r < rows and 0 <= c < cols) or i >= n:
                continue
            if (np.hypot(cx - c * cell - centre[0], cy - r * cell - centre[1]) <= 0.35 * side
                    and 0.5 * side <= f[2] <= 2 * side):
                seen[i] = max(seen[i], f[14])
            lm = f[4:14].reshape(5, 2) - (c * cell, r * cell)
            if np.linalg.norm(lm - tpl, axis=1).mean() <= 0.25 * iod and f[14] > again[i]:
                again[i], found[i] = f[14], lm / iod
        return again, seen, found

    def look_around(self, rgb: np.ndarray, boxes: np.ndarray, views=VIEWS, grow: float = 2.0) -> np.ndarray:
        """Detect again on other views of each box: does anything face-like sit at its place?

        The aligned crop of `second_look` trusts the candidate's 5 landmarks; these views do not:
        the upright square crop about the box (`grow` x its side) with the box at 60, 100 and 160 px,
        and at 100 px turned by -90, -45, 45 and 90 degrees (a head lying sideways, which YuNet
        finds weakly and with landmarks astray, is found upright). Returns [N, len(views)]: per box
        and view the best score of a face found centred on it (centre within 0.35 box sides) at
        about its size (0.5-2x), 0 = none.
        """
        best = np.zeros((len(boxes), len(views)), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            centre, side = ((x1 + x2) / 2, (y1 + y2) / 2), max(x2 - x1, y2 - y1, 1.0)
            for v, (px, angle) in enumerate(views):
                scale = px / side
                n = max(int(round(px * grow)), 1)
                m = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
                m[:, 2] += (n / 2 - centre[0], n / 2 - centre[1])
                crop = cv2.warpAffine(rgb, m, (n, n), flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR,
                                      borderMode=cv2.BORDER_CONSTANT)
                for f in self._detect(crop):
                    off = np.hypot(f[0] + f[2] / 2 - n / 2, f[1] + f[3] / 2 - n / 2)
                    if off <= 0.35 * px and 0.5 * px <= f[2] <= 2 * px:
                        best[i, v] = max(best[i, v], f[14])
        return best

    def _tiled(self, rgb: np.ndarray) -> np.ndarray:
        """YuNet rows [N,15] (x, y, w, h, 5 landmarks, score) for one pass, tile by tile."""
        h, w = rgb.shape[:2]
        step = self.tile - self.max_face  # tiles overlap by the largest face a pass keeps
        rows = []
        for y in range(0, max(h - self.max_face, 1), step) if h > self.tile else [0]:
            for x in range(0, max(w - self.max_face, 1), step) if w > self.tile else [0]:
                part = rgb[y:y + self.tile, x:x + self.tile]
                faces = self._detect(part)
                if len(faces) and (w > self.tile or h > self.tile):
                    faces[:, [0, 4, 6, 8, 10, 12]] += x
                    faces[:, [1, 5, 7, 9, 11, 13]] += y
                rows.append(faces)
        return np.concatenate(rows) if rows else np.zeros((0, 15), np.float32)

    def _detect(self, rgb: np.ndarray) -> np.ndarray:
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        size = (bgr.shape[1], bgr.shape[0])
        if size != self._size:
            self._net.setInputSize(size)
            self._size = size
        _, faces = self._net.detect(bgr)
        return np.zeros((0, 15), np.float32) if faces is None else faces.astype(np.float32)


def merge_faces(faces: np.ndarray, min_overlap: float = 0.4) -> np.ndarray:
    """One row per face from YuNet rows [N,15] of several passes (x, y, w, h in image pixels).

    Rows are taken best score first; a row is dropped when its box overlaps a taken one by more
    than `min_overlap` of the smaller box: the same face seen again, or a part of a face (a big
    face at too fine a scale comes back as several overlapping part-boxes). Sorted by score.
    """
    order = np.argsort(-faces[:, 14], kind="stable")
    boxes = faces[order, :4].copy()
    boxes[:, 2:] += boxes[:, :2]
    # every pair's overlap at once (a crowd photo's two passes bring hundreds of rows: one
    # overlap_of_smaller call per row and kept face took ~17 ms a detection there)
    close = overlap_of_smaller(boxes[:, None], boxes[None]) > min_overlap
    dropped = np.zeros(len(boxes), bool)
    kept: list[int] = []
    for i in range(len(boxes)):
        if not dropped[i]:
            kept.append(i)
            dropped |= close[i]
    return faces[order[kept]]


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a [4] with each box of b [N,4] (x1,y1,x2,y2)."""
    inter, area_a, area_b = _intersections(a, b)
    return inter / (area_a + area_b - inter + 1e-9)


def overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection of box a [4] with each box of b [N,4] over the smaller of the two areas (or of
    boxes a [...,4] and b [...,4] broadcast against each other: [N,1,4] and [1,N,4], every pair)."""
    inter, area_a, area_b = _intersections(a, b)
    return inter / (np.minimum(area_a, area_b) + 1e-9)


def _intersections(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x1, y1 = np.maximum(a[..., 0], b[..., 0]), np.maximum(a[..., 1], b[..., 1])
    x2, y2 = np.minimum(a[..., 2], b[..., 2]), np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter, area(a), area(b)


def landmark_error(found: np.ndarray, ref: np.ndarray) -> float:
    """Mean distance of 5 landmarks [5,2] from the reference ones, over the reference's eye distance."""
    return float(np.linalg.norm(found - ref, axis=1).mean() / (np.linalg.norm(ref[1] - ref[0]) + 1e-6))


def match_face(box: np.ndarray, boxes: np.ndarray, min_iou: float = 0.3) -> int | None:
    """Index of the box of `boxes` overlapping `box` best (IoU > min_iou), else None."""
    if len(boxes) == 0:
        return None
    o = iou(box, boxes)
    return int(np.argmax(o)) if o.max() > min_iou else None
