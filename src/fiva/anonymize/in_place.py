"""Putting a drawn face in place: the detector must find the drawn face's 5 key points where the
original's were (`draw_in_place`: the bank face's texture nudged against the error), and on
photos dlib must read the drawn mouth as the original's (EXPRESSION_STEPS)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..faces.detect import landmark_error
from ..faces.landmarks68 import five_points, mouth_opening
from .anchor_face import AnchorFaceRenderer, Drawing
from .frame import IN_PLACE


def render_in_place(renderer: AnchorFaceRenderer, rgb: np.ndarray, shape: np.ndarray, index: int, kps: np.ndarray,
                    find, tolerance: float = 0.05, tries: int = 2, landmarker=None,
                    limit: float = 0.2) -> tuple[np.ndarray, np.ndarray | None]:
    """A copy of `rgb` with the face drawn by `draw_in_place`, and the nudge it was drawn with."""
    out = rgb.copy()
    _, nudge = draw_in_place(renderer, out, shape, index, kps, find, tolerance, tries, landmarker=landmarker, limit=limit)
    return out, nudge


def draw_in_place(renderer: AnchorFaceRenderer, img: np.ndarray, shape: np.ndarray, index: int, kps: np.ndarray,
                  find, tolerance: float = 0.05, tries: int = 2, colour=None, coarse: bool = False,
                  start: np.ndarray | None = None, step: float = 1.0, limit: float = 0.2, landmarker=None,
                  mouth_tolerance: float = 0.04, rest: np.ndarray | None = None) -> tuple[Drawing, np.ndarray | None]:
    """Draw on `img` itself (only the face's mesh box changes; `Drawing.lift` takes it back), and
    while a detector finds the 5 key points of the drawn face more than `tolerance` eye distances
    (mean) from the original's `kps` [5,2], draw again (up to `tries` renderings) with the bank
    face's texture shifted against the error found so far; keep the closest. Returns the drawing
    left on `img` and the nudge it was drawn with (None: none), which a video can reuse along the
    track instead of searching again on every frame (a nudge that changes from frame to frame
    would make the face jitter).

    The 5 points of the new shape are the target's by construction, but a detector places them
    by the appearance around them (brows, lids, the nose's shading): a different face shifts them
    by ~0.06 eye distances (k-Same trial; YuNet, 40 LFW faces, texture alone). A downstream tool
    (a tracker, a landmark-driven effect) should find the face where it was; this puts it there.
    `find(image) -> [5,2] or None` is the detector's view of the face. `start`: the nudge to try
    first (a video track's, so a re-check that finds it still good does not move the face); `step`:
    the share of the error found that each new rendering corrects; `rest`: the face with its brows
    at rest (a video track's, `AnchorFaceRenderer.new_shape`); `limit`: the largest shift of
    a key point, in eye distances (a large one shows: the bank face's brows and lids beside the
    target's kept eyes).

    With a `landmarker` (68 points, `Landmarker68`: `landmarker(image, kps [1,5,2]) -> [1,68,2]`)
    the expression is checked too: where the drawn mouth reads more than `mouth_tolerance`
    (opening / eye distance) off the original's, the face is drawn again by EXPRESSION_STEPS, and
    of the drawings in place (frame.IN_PLACE) the one whose mouth reads closest is kept. dlib reads a
    chin and a nose base moved towards the bank face's as a closing mouth (12 LFW faces whose
    mouth read 0.09-0.37 off: 0.01-0.06 with no geometry moved, the bank face's texture alone).
    """
    search = dict(tolerance=tolerance, tries=tries, colour=colour, coarse=coarse, start=start, step=step, limit=limit,
                  rest=rest)
    drawn, used, err, got = _nudged(renderer, img, shape, index, kps, find, **search)
    if landmarker is None or got is None:
        return drawn, used
    want = mouth_opening(shape)

    def reading(got: np.ndarray, err: float) -> tuple[bool, float]:  # (out of place, mouth off by)
        return err > IN_PLACE, abs(mouth_opening(landmarker(img, got[None])[0]) - want)

    best, best_key = (drawn, used), reading(got, err)
    steps = EXPRESSION_STEPS + (LAST_STEP,) if renderer.cfg.expression_steps is None else renderer.cfg.expression_steps
    for change in steps:  # invariant: `best` is what is drawn on img
        if not best_key[0] and best_key[1] <= mouth_tolerance:
            break
        best[0].lift(img)
        r = AnchorFaceRenderer(renderer.bank, replace(renderer.cfg, **change))
        drawn, used, err, got = _nudged(r, img, shape, index, kps, find, **search)
        key = None if got is None else reading(got, err)
        if key is not None and key < best_key and (change is not LAST_STEP or not key[0] and key[1] <= mouth_tolerance):
            best, best_key = (drawn, used), key
        else:
            drawn.lift(img)
            best[0].paste(img)
    return best


# The drawings tried, in turn, while the mouth reads off: the chin and the nose base left where
# they were (the points around the mouth), then also the target's own lips (a closed mouth too:
# a bank face's parted lips read as an open mouth), then no identity geometry at all; last, the
# two lip steps again with the target's skin around its lips kept too, half the lips' thickness
# beyond them (masks.kept_lips: dlib places the lips by the philtrum and chin shading as well).
# 200 LFW faces, drawing alone: mouth read within 0.05 93.0% -> 95.5%; of the 5 faces the last two
# steps drew, none came within dlib's 0.6 of the original (with 0.8 beyond the lips, 2 did).
EXPRESSION_STEPS = ({"jaw": 0.0, "nose_base": 0.0}, {"jaw": 0.0, "nose_base": 0.0, "keep_mouth": -1.0},
                    {"alpha": 0.0, "keep_mouth": -1.0},
                    {"jaw": 0.0, "nose_base": 0.0, "keep_mouth": -1.0, "mouth_lips": 1.5},
                    {"alpha": 0.0, "keep_mouth": -1.0, "mouth_lips": 1.5})
# After them, no geometry with the lips' whole thickness beyond them, kept only where it puts the
# mouth right: of the 11 LFW faces whose mouth still read off, it did so on one (Dave Ragone,
# 0.058 -> 0.020, still 0.63 from his original by dlib). Kept wherever it read closer, it took
# Ellen MacArthur to 0.53 from her original for 0.072 -> 0.059.
LAST_STEP = {"alpha": 0.0, "keep_mouth": -1.0, "mouth_lips": 2.0}


def _nudged(renderer, img, shape, index, kps, find, tolerance, tries, colour, coarse, start, step, limit, rest):
    """draw_in_place's search for one renderer: (the drawing left on img, its nudge, its error,
    the points found [5,2] or None)."""
    iod = float(np.linalg.norm(kps[1] - kps[0])) + 1e-6
    nudge = np.zeros((5, 2), np.float32) if start is None else start.astype(np.float32)
    best, best_err, drawn = None, np.inf, None
    for _ in range(tries):
        used = nudge.copy() if nudge.any() else None
        if drawn is not None:
            drawn.lift(img)  # every rendering starts from the original pixels
        drawn = renderer.draw(img, shape, index, nudge=used, colour=colour, coarse=coarse, rest=rest)
        drawn.paste(img)
        got = find(img)
        if got is None:
            if best is None:
                return drawn, used, np.inf, None
            break
        err = landmark_error(got, kps)
        if err < best_err:
            best, best_err = (drawn, used, err, got), err
        if err <= tolerance:
            break
        nudge = np.clip(nudge + step * (kps - got), -limit * iod, limit * iod)
    if best[0] is not drawn:
        drawn.lift(img)
        best[0].paste(img)
    return best


def fit_error(shape: np.ndarray, kps: np.ndarray) -> float:
    """How far the 5 key points of a 68-point `shape` lie from the detector's `kps` [5,2] (mean,
    in eye distances). Near 0.06 on frontal faces (the eye centres are defined differently); large
    where dlib's fit has failed: a tilted head looking down (the 5 points show no pitch) or another
    face under the box."""
    iod = float(np.linalg.norm(kps[1] - kps[0])) + 1e-6
    return float(np.linalg.norm(five_points(shape) - kps, axis=1).mean()) / iod


def local_finder(detector, box: np.ndarray, margin: float | None = 0.6):
    """`find` for `render_in_place`: the detector on the face's neighbourhood only (`margin` face
    sizes around it: cheap on large frames; None: what the whole image's pyramid finds there,
    `FaceDetector.around`), the face overlapping `box` best, its 5 points in image pixels."""
    from ..faces.detect import match_face

    def find(img: np.ndarray):
        if margin is None:
            d = detector.around(img, box)
            j = match_face(box, d.boxes)
            return None if j is None else d.landmarks[j]
        w, h = box[2] - box[0], box[3] - box[1]
        x0, y0 = int(max(box[0] - margin * w, 0)), int(max(box[1] - margin * h, 0))
        x1, y1 = int(min(box[2] + margin * w, img.shape[1])), int(min(box[3] + margin * h, img.shape[0]))
        d = detector(np.ascontiguousarray(img[y0:y1, x0:x1]))
        j = match_face(box - np.array([x0, y0, x0, y0], np.float32), d.boxes)
        return None if j is None else d.landmarks[j] + np.array([x0, y0], np.float32)

    return find
