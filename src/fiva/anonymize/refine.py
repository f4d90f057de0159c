"""The refiner's correction (models/refiner.py) laid onto a drawing at the face's own resolution.

The refiner works on the 112 px aligned crop of the frame with the drawing on it (aligned by the
drawn shape's 5 key points, as the pairs it learned from were by the detector's). Its correction
(refined minus drawn) is warped back onto the drawing's box and added there, faded out towards the
edge of what the drawing covers and of the crop: the drawing's own detail at native resolution
stays, and only what the refiner changes at 112 px (streaks, seams, shading) is laid over it.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
import torch

from ..faces.align import align_faces
from ..faces.landmarks68 import EYE_L, EYE_R, five_points

FADE = 0.15  # eye distances over which the correction fades in from the drawing's edge
_CROP_EDGE = 6  # crop pixels over which it fades in from the crop's edge


@functools.lru_cache(maxsize=1)
def shipped_refiner():
    """The refiner at weights.DEFAULT_REFINER (FIVA_REFINER names another), loaded once. None ships
    yet: the runs so far drew blotches (MODEL_CARD, "The refiner")."""
    from ..models.refiner import load_refiner
    from ..weights import DEFAULT_REFINER

    if not DEFAULT_REFINER.is_file():
        raise FileNotFoundError(f"{DEFAULT_REFINER}: no refiner weights (RenderConfig.refine > 0 needs them: train one with "
                                "`fiva train refiner`, name it with FIVA_REFINER)")
    return load_refiner(DEFAULT_REFINER)


@functools.lru_cache(maxsize=1)
def _crop_weight() -> np.ndarray:
    r = np.minimum(np.arange(112), np.arange(112)[::-1]).astype(np.float32)
    ramp = np.clip(r / _CROP_EDGE, 0, 1)
    return np.minimum(ramp[:, None], ramp[None, :])


def refine_drawing(refiner, rgb: np.ndarray, drawing, shape: np.ndarray, strength: float = 1.0) -> None:
    """Add the refiner's correction to `drawing.patch` (in place). `rgb`: the frame the drawing is
    for (left as it was); `shape`: the drawn 68 points (image pixels)."""
    x0, y0, x1, y1 = drawing.box
    if x1 - x0 < 8 or y1 - y0 < 8 or not drawing.covered.any():
        return
    drawing.paste(rgb)
    crops, mats = align_faces(rgb, five_points(shape)[None], 112)  # as the training pairs were cut
    drawing.lift(rgb)
    crop, m = crops[0], mats[0]
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    with torch.no_grad():
        c = refiner.correction(x)[0].permute(1, 2, 0).numpy() * (127.5 * strength)
    back = cv2.invertAffineTransform(m)
    back[:, 2] -= (x0, y0)
    size = (x1 - x0, y1 - y0)
    c = cv2.warpAffine(c * _crop_weight()[..., None], back, size, flags=cv2.INTER_LINEAR, borderValue=0)
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
    inside = cv2.distanceTransform(drawing.covered.astype(np.uint8), cv2.DIST_L2, 3)
    w = np.clip(inside / max(FADE * iod, 1.0), 0, 1)
    patch = drawing.patch.astype(np.float32) + c * w[..., None]
    drawing.patch = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
