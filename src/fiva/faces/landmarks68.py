"""dlib's 68-point landmarks on a face found by YuNet.

The 68-point shape predictor (iBUG 300-W layout, shipped in `face-recognition-models`, CC0) was
trained on boxes of dlib's HOG detector, not YuNet's. So the box it is given is rebuilt from
YuNet's 5 key points the way dlib's detector would have drawn it: a square centred 0.55 of the
way from the eyes' to the mouth's midpoint, 2.38 eye-to-mouth distances wide (medians over 150
LFW training faces found by both detectors).

Point groups (0-based): jaw 0-16, brows 17-26, nose 27-35, eyes 36-47 (36-41 the image-left
eye), outer lips 48-59, inner lips 60-67.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..weights import dlib_model_paths
from .align import transform_points

JAW, BROWS, NOSE = slice(0, 17), slice(17, 27), slice(27, 36)
EYE_L, EYE_R = slice(36, 42), slice(42, 48)  # image left and right as seen
LIPS, INNER_LIPS = slice(48, 60), slice(60, 68)
NOSE_TIP, MOUTH_L, MOUTH_R = 30, 48, 54

_BOX_CENTER, _BOX_SIDE = 0.55, 2.38
# The predictor expects an upright face: a head tilted by more than this many degrees (its eyes'
# slope) is predicted turned upright. 60 upright LFW faces turned by 10-50 degrees, the mean point
# error against their upright points turned alike (eye distances), as the image holds them ->
# upright: 10 deg 0.021 -> 0.017, 20 deg 0.027 -> 0.017, 30 deg 0.042 -> 0.017, 40 deg
# 0.137 -> 0.017 (median; 90th percentile 0.545 -> 0.023). On group_t1.jpg a woman's head
# tilted onto her shoulder had her mouth's points on her chin.
LEVEL_ROLL = 10.0


def predictor_68_path():
    return dlib_model_paths()[1].with_name("shape_predictor_68_face_landmarks.dat")


def dlib_box(kps: np.ndarray) -> np.ndarray:
    """A dlib-detector-like square box (x1,y1,x2,y2) from YuNet's 5 key points [5,2]."""
    eyes, mouth = (kps[0] + kps[1]) / 2, (kps[3] + kps[4]) / 2
    v = mouth - eyes
    c = eyes + _BOX_CENTER * v
    half = _BOX_SIDE * float(np.linalg.norm(v)) / 2
    return np.array([c[0] - half, c[1] - half, c[0] + half, c[1] + half], np.float32)


def roll(kps: np.ndarray) -> float:
    """The head's tilt in degrees: the slope of the line from the image-left eye to the other
    (YuNet's 5 key points [5,2] or any points with the eyes first; positive: clockwise)."""
    e = kps[1] - kps[0]
    return float(np.degrees(np.arctan2(e[1], e[0])))


def upright_view(rgb: np.ndarray, centre: np.ndarray, tilt: float, side: float) -> tuple[np.ndarray, np.ndarray]:
    """The square of `side` px about `centre` (x, y) of `rgb`, turned by `tilt` degrees (`roll`'s
    sign) so that a head tilted so stands upright in it (edges replicated), and the affine map
    [2,3] from the image's pixels to the view's."""
    m = cv2.getRotationMatrix2D(tuple(float(v) for v in centre), tilt, 1.0)
    m[:, 2] += side / 2 - np.asarray(centre)
    n = max(int(round(side)), 1)
    return cv2.warpAffine(rgb, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), m


def five_points(shape: np.ndarray) -> np.ndarray:
    """The 5 key points [5,2] of a 68-point shape, in YuNet's order (eye centres, nose tip,
    mouth corners)."""
    return np.stack([shape[EYE_L].mean(0), shape[EYE_R].mean(0), shape[NOSE_TIP], shape[MOUTH_L], shape[MOUTH_R]])


def mouth_opening(shape: np.ndarray) -> float:
    """Inner-lip gap over the eye distance (0 for a closed mouth)."""
    gap = float(np.mean(np.linalg.norm(shape[[61, 62, 63]] - shape[[67, 66, 65]], axis=1)))
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0))) + 1e-6
    return gap / iod


# each brow, its outer end first, with its eye
BROW_EYE = ((np.arange(17, 22), EYE_L), (np.arange(26, 21, -1), EYE_R))


def face_up(shape: np.ndarray) -> tuple[np.ndarray, float]:
    """The face's up (unit vector across its eye axis) and its eye distance."""
    e = shape[EYE_R].mean(0) - shape[EYE_L].mean(0)
    iod = float(np.linalg.norm(e)) + 1e-6
    return np.array([e[1], -e[0]], np.float32) / iod, iod


def brow_poses(shape: np.ndarray) -> np.ndarray:
    """[2,2]: for each brow (image left, right), its height over its eye and its tilt (the inner
    end's height over the outer end's: a frown's V reads lower), in eye distances along the face's
    up."""
    up, iod = face_up(shape)
    out = np.zeros((2, 2), np.float32)
    for k, (brow, eye) in enumerate(BROW_EYE):
        h = shape[brow] @ up
        out[k] = h.mean() - (shape[eye] @ up).mean(), h[-1] - h[0]
    return out / iod


def brow_pose(shape: np.ndarray) -> tuple[float, float]:
    """The brows' expression, `brow_poses` averaged over both brows: (height, tilt)."""
    h, t = brow_poses(shape).mean(0)
    return float(h), float(t)


def eye_openness(shape: np.ndarray) -> float:
    """Mean eye aspect ratio (lid gap over eye width) of both eyes."""
    out = []
    for s in (EYE_L, EYE_R):
        e = shape[s]
        gap = (np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) / 2
        out.append(gap / (np.linalg.norm(e[0] - e[3]) + 1e-6))
    return float(np.mean(out))


def yaw_share(kps: np.ndarray) -> float:
    """How far the nose tip sits off the eyes' midline, as a share of the eye distance (0 frontal,
    ~0.7 at about 60 degrees of yaw): the same measure the pipeline's profile triage uses."""
    return abs(signed_yaw(kps))


def signed_yaw(kps: np.ndarray) -> float:
    """`yaw_share` with its sign: positive when the nose tip sits towards the second eye."""
    eye = kps[1] - kps[0]
    iod = float(np.linalg.norm(eye)) + 1e-6
    return float(np.dot(kps[2] - (kps[0] + kps[1]) / 2, eye / iod)) / iod


class Landmarker68:
    """`__call__(rgb, kps)`: 68 points [68,2] float32 (image pixels) for each face [N,5,2]."""

    def __init__(self):
        try:
            import dlib
        except ImportError as e:  # pragma: no cover - a broken install
            raise ImportError("68-point landmarks need dlib: pip install dlib-bin face-recognition-models (fiva's dependencies)") from e
        self._dlib = dlib
        self._sp = dlib.shape_predictor(str(predictor_68_path()))

    def __call__(self, rgb: np.ndarray, kps: np.ndarray) -> np.ndarray:
        out = np.zeros((len(kps), 68, 2), np.float32)
        for i, k in enumerate(kps):
            k = np.asarray(k, np.float32)
            tilt = roll(k)
            if abs(tilt) <= LEVEL_ROLL:
                out[i] = self._predict(rgb, k)
                continue
            # a tilted head is turned upright, in its neighbourhood only (3 box sides square about
            # the box, as `_predict` crops), and its points turned back
            box = dlib_box(k)
            upright, m = upright_view(rgb, (box[:2] + box[2:]) / 2, tilt, 3 * float(box[2] - box[0]))
            back = cv2.invertAffineTransform(m)
            pts = self._predict(upright, transform_points(m, k))
            out[i] = transform_points(back, pts)
        return out

    def _predict(self, rgb: np.ndarray, k: np.ndarray) -> np.ndarray:
        """dlib's 68 points [68,2] for the face of key points `k` [5,2], as the image holds it."""
        h, w = rgb.shape[:2]
        x1, y1, x2, y2 = (int(round(float(c))) for c in dlib_box(k))
        # dlib copies the image it is given on every call: a 1080p frame costs more than the
        # prediction, so it gets the face's neighbourhood (a box size around it: the model's
        # features never reach that far, and the points come out the same)
        m = max(x2 - x1, y2 - y1)
        cx0, cy0 = min(max(x1 - m, 0), w), min(max(y1 - m, 0), h)
        crop = np.ascontiguousarray(rgb[cy0:max(y2 + m, cy0), cx0:max(x2 + m, cx0)])
        shape = self._sp(crop, self._dlib.rectangle(x1 - cx0, y1 - cy0, x2 - cx0, y2 - cy0))
        return np.array([(p.x + cx0, p.y + cy0) for p in shape.parts()], np.float32)
