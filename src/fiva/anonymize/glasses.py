"""Whether a face wears glasses, read off its eye band: a logistic regression on the band's
gradient histograms (HOG, reduced to their first principal components) and on the widest thin
line across its nose bridge (`masks.glasses_worn`'s span), fitted on LFW training faces labelled
by eye (`scripts/build_glasses_detector.py`, `glasses.safetensors`).

The bridge's line alone tells a thin frame at LFW's size (eye distance ~40 px) no better than a
bare bridge's pores and creases: of 200 LFW fold-1 faces labelled by eye, 39 wear glasses or
sunglasses and the span reads 0.5 or more on 11 of them. A photo's last tries draw the bank face
in full, over the frame (`native.FULL_RENDER`): glasses vanished, or were left broken, their arms
outside the drawing (Anthony Fauci, Antony Leung, Chang Saio-yue)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..faces.align import align_faces
from ..faces.landmarks68 import EYE_L, EYE_R, five_points
from .masks import glasses_worn, ramp, read_once

# a drawing keeps the target's frame (RenderConfig.rims) as surely as the bridge's line or this
# model, from FRAME_LO (none) to FRAME_HI (in full), tells it (`frame_worn`)
FRAME_LO, FRAME_HI = 0.6, 0.8
BAND = (24, 64)  # rows of the 112 px aligned crop (faces.align.template): brows to the nose bridge, temple to temple
CELL, BINS = 8, 9


def eye_band(rgb: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """[40,112,3] uint8: the face of 68 points `shape` aligned at its 5 points, rows BAND."""
    crop = align_faces(rgb, five_points(shape)[None].astype(np.float32), 112)[0][0]
    return crop[BAND[0]:BAND[1]]


def hog(gray: np.ndarray) -> np.ndarray:
    """Histograms of gradient orientation (BINS, unsigned) over CELL-pixel cells of a grey image,
    each 2x2 block of cells normalised: [(ch-1)(cw-1) * 4 * BINS]."""
    g = gray.astype(np.float32)
    gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
    mag, ang = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
    b = np.minimum((ang / np.pi * BINS).astype(int), BINS - 1)
    ch, cw = g.shape[0] // CELL, g.shape[1] // CELL
    cells = np.zeros((ch, cw, BINS), np.float32)
    for k in range(BINS):
        cells[..., k] = (mag * (b == k))[:ch * CELL, :cw * CELL].reshape(ch, CELL, cw, CELL).sum((1, 3))
    blocks = [cells[i:i + 2, j:j + 2].ravel() for i in range(ch - 1) for j in range(cw - 1)]
    return np.concatenate([v / (np.linalg.norm(v) + 1e-3) for v in blocks])


def raw_features(rgb: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, float]:
    """The eye band's HOG and the bridge's span (`masks.glasses_worn` unramped) of a face."""
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
    band = cv2.cvtColor(eye_band(rgb, shape), cv2.COLOR_RGB2GRAY)
    return hog(band), glasses_worn(rgb, shape, iod, 0.0, 1.0)


@dataclass
class GlassesModel:
    """HOG mean [D] and principal components [K,D]; the features' ([K] components, span) mean and
    std [K+1]; logistic weights [K+1] and bias; the probability from which a face is taken to wear
    glasses (`wears_glasses`)."""
    hog_mean: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    w: np.ndarray
    b: float
    threshold: float = 0.5

    def features(self, hogs: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """[N,K+1] standardised features of HOGs [N,D] and spans [N]."""
        x = np.c_[(hogs - self.hog_mean) @ self.components.T, spans]
        return (x - self.mean) / self.std

    def probabilities(self, hogs: np.ndarray, spans: np.ndarray) -> np.ndarray:
        """[N] P(glasses) of HOGs [N,D] and spans [N] (`raw_features`)."""
        z = (self.features(hogs, spans) @ self.w + self.b).astype(np.float64)
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

    def probability(self, rgb: np.ndarray, shape: np.ndarray) -> float:
        """P(glasses) for the face of 68 points `shape` in `rgb`."""
        h, span = raw_features(rgb, shape)
        return float(self.probabilities(h[None], np.array([span]))[0])

    def save(self, path: str | Path, **meta: str) -> None:
        from safetensors.numpy import save_file

        tensors = {k: np.asarray(getattr(self, k), np.float32) for k in ("hog_mean", "components", "mean", "std", "w")}
        tensors["b"] = np.array([self.b], np.float32)
        save_file(tensors, str(path), metadata={**meta, "threshold": str(self.threshold)})

    @classmethod
    def load(cls, path: str | Path) -> "GlassesModel":
        from safetensors.numpy import load_file

        from ..weights import metadata

        t = load_file(str(path))
        return cls(t["hog_mean"], t["components"], t["mean"], t["std"], t["w"], float(t["b"][0]),
                   float(metadata(path).get("threshold", 0.5)))


@functools.lru_cache(maxsize=1)
def shipped_model() -> GlassesModel:
    from ..weights import GLASSES_MODEL

    return GlassesModel.load(GLASSES_MODEL)


@read_once
def glasses_probability(rgb: np.ndarray, shape: np.ndarray) -> float:
    """The shipped model's P(glasses) for the face of 68 points `shape` in `rgb` (read once per face)."""
    return shipped_model().probability(rgb, shape)


def frame_worn(rgb: np.ndarray, shape: np.ndarray, iod: float) -> float:
    """In [0,1]: how surely the face wears a frame of glasses, by the bridge's line
    (`masks.glasses_worn`) or the model (FRAME_LO to FRAME_HI), whichever is surer."""
    return max(glasses_worn(rgb, shape, iod), float(ramp(glasses_probability(rgb, shape), FRAME_LO, FRAME_HI)))


def wears_glasses(rgb: np.ndarray, shape: np.ndarray) -> bool:
    """Whether the face of 68 points `shape` in `rgb` may wear glasses (or sunglasses): the shipped
    model's probability at or over its threshold (chosen for recall: a face taken for a wearer
    loses only its drawing in full)."""
    return glasses_probability(rgb, shape) >= shipped_model().threshold
