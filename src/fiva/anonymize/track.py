"""Face tracks across video frames: never leave a face untouched on a missed frame, no jitter.

Detections are linked frame to frame by box overlap (greedy, highest IoU first). When a track is
missed for up to `max_gap` frames and found again, its box and landmarks are interpolated over the
gap. Landmarks and boxes are smoothed with a centred window over the track (exact for steady
motion, so no lag). Both need a look at the future: frames come out `max_gap` frames after they
go in, each with its final faces.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..faces import Detections
from ..faces.detect import iou


@dataclass
class TrackedFaces:
    """The faces of one frame after tracking: detections plus, per face, its track id and whether
    it was filled in (not detected in this frame)."""

    dets: Detections
    tracks: np.ndarray  # [N] int
    filled: np.ndarray  # [N] bool


@dataclass
class _Frame:
    index: int
    image: np.ndarray
    faces: dict[int, tuple[np.ndarray, np.ndarray, float, bool]] = field(default_factory=dict)  # track -> box, lm, score, filled


class FaceTracker:
    def __init__(self, max_gap: int = 5, min_iou: float = 0.2, smooth_radius: int = 2):
        self.max_gap, self.min_iou, self.radius = max_gap, min_iou, smooth_radius
        self._buf: deque[_Frame] = deque()
        self._hist: dict[int, dict[int, tuple[np.ndarray, np.ndarray]]] = {}  # track -> frame -> (box, lm)
        self._last: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}  # track -> (frame, box, lm)
        self._next_id = 0
        self._index = 0
        self.filled = 0  # faces filled in over detection gaps (for reports)

    def push(self, image: np.ndarray, dets: Detections) -> list[tuple[np.ndarray, TrackedFaces]]:
        """Add the next frame and its detections; returns the frames now final (oldest first)."""
        f = _Frame(self._index, image)
        self._index += 1
        self._buf.append(f)
        for det_i, track in self._associate(f.index, dets).items():
            box, lm = dets.boxes[det_i], dets.landmarks[det_i]
            if track in self._last:
                self._fill_gap(track, f.index, box, lm)
            f.faces[track] = (box, lm, float(dets.scores[det_i]), False)
            self._last[track] = (f.index, box, lm)
            self._hist.setdefault(track, {})[f.index] = (box, lm)
        out = []
        while self._buf and self._buf[0].index <= f.index - max(self.max_gap, self.radius):
            out.append(self._release(self._buf.popleft()))
        return out

    def flush(self) -> list[tuple[np.ndarray, TrackedFaces]]:
        out = [self._release(f) for f in self._buf]
        self._buf.clear()
        return out

    def _associate(self, index: int, dets: Detections) -> dict[int, int]:
        alive = [t for t, (last, _, _) in self._last.items() if index - last - 1 <= self.max_gap]
        pairs = []
        for t in alive:
            if len(dets):
                o = iou(self._last[t][1], dets.boxes)
                pairs += [(float(o[i]), t, i) for i in np.flatnonzero(o > self.min_iou)]
        match, used = {}, set()
        for _, t, i in sorted(pairs, reverse=True):
            if i not in match and t not in used:
                match[i] = t
                used.add(t)
        for i in range(len(dets)):
            if i not in match:
                match[i] = self._next_id
                self._next_id += 1
        for t in list(self._last):  # forget tracks that can no longer be continued
            if index - self._last[t][0] - 1 > self.max_gap:
                del self._last[t]
        return match

    def _fill_gap(self, track: int, index: int, box: np.ndarray, lm: np.ndarray) -> None:
        last, box0, lm0 = self._last[track]
        gap = index - last - 1
        if gap <= 0:
            return
        for f in self._buf:
            if last < f.index < index:
                a = (f.index - last) / (gap + 1)
                b, m = (1 - a) * box0 + a * box, (1 - a) * lm0 + a * lm
                f.faces[track] = (b, m, 0.0, True)
                self._hist[track][f.index] = (b, m)
                self.filled += 1

    def _release(self, f: _Frame) -> tuple[np.ndarray, TrackedFaces]:
        tracks = sorted(f.faces)
        boxes, lms, scores, filled = [], [], [], []
        for t in tracks:
            box, lm, score, was_filled = f.faces[t]
            box, lm = self._smoothed(t, f.index, box, lm)
            boxes.append(box)
            lms.append(lm)
            scores.append(score)
            filled.append(was_filled)
        for t in list(self._hist):  # keep only what later frames' smoothing can use
            for i in [i for i in self._hist[t] if i < f.index - self.radius]:
                del self._hist[t][i]
            if not self._hist[t] and t not in self._last:
                del self._hist[t]
        if not tracks:
            return f.image, TrackedFaces(Detections.empty(), np.zeros(0, int), np.zeros(0, bool))
        dets = Detections(np.array(boxes, np.float32), np.array(scores, np.float32), np.array(lms, np.float32))
        return f.image, TrackedFaces(dets, np.array(tracks), np.array(filled))

    def _smoothed(self, track: int, index: int, box: np.ndarray, lm: np.ndarray):
        hist = self._hist.get(track, {})
        ws, bs, ls = [], [], []
        for d in range(-self.radius, self.radius + 1):
            if index + d in hist and (index - d) in hist:  # symmetric pairs only: no lag on steady motion
                w = self.radius + 1 - abs(d)
                ws.append(w)
                bs.append(hist[index + d][0])
                ls.append(hist[index + d][1])
        if len(ws) <= 1:
            return box, lm
        w = np.array(ws, np.float32)[:, None]
        return (w * np.stack(bs)).sum(0) / w.sum(), (w[:, :, None] * np.stack(ls)).sum(0) / w.sum()
