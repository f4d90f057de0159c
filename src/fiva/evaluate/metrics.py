"""The paper's metrics (Section 3.5) and the attribute checks, on plain arrays.

- retrieval: is the nearest gallery identity the true one, at a distance below the calibrated
  threshold? (ID; ¬ID searches with the negated embedding)
- temporal consistency (Eq. 7): mean and standard deviation of the pairwise cosine distances of
  one face's embeddings over N frames, averaged over videos
- attributes: 5-landmark error / inter-ocular distance, head pose from the 5 landmarks, detection
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


from .models import IdentityModel


@dataclass
class Gallery:
    """Embeddings [N,D] per model of the gallery images, with their identity names [N]."""

    emb: dict[str, np.ndarray]
    names: np.ndarray


def retrieve(model: IdentityModel, q: np.ndarray, gallery: Gallery, exclude: np.ndarray | None = None) -> tuple[str, float]:
    """Nearest gallery identity of embedding q, and its distance; rows in `exclude` are skipped."""
    d = model.distances(q, gallery.emb[model.name])
    if exclude is not None:
        d = np.where(exclude, np.inf, d)
    i = int(np.argmin(d))
    return str(gallery.names[i]), float(d[i])


def retrieved(model: IdentityModel, q: np.ndarray, truth: str, gallery: Gallery, threshold: float,
              exclude: np.ndarray | None = None) -> bool:
    """The paper's success: the nearest identity is the true one AND closer than the threshold."""
    name, dist = retrieve(model, q, gallery, exclude)
    return name == truth and dist < threshold


def cosine_distance_matrix(emb: np.ndarray) -> np.ndarray:
    e = emb / (np.linalg.norm(emb, axis=1, keepdims=True) + 1e-12)
    return np.clip(1.0 - e @ e.T, 0.0, 2.0)


def temporal_consistency(emb: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Eq. 7 for one video: (mu, sigma, D) of the pairwise cosine distances D of N embeddings."""
    D = cosine_distance_matrix(emb)
    mu = float(D.mean())
    return mu, float(np.sqrt(((D - mu) ** 2).mean())), D


def landmark_error(ref: np.ndarray, other: np.ndarray) -> float:
    """Mean 5-landmark distance normalized by the reference's inter-ocular distance."""
    return float(np.linalg.norm(ref - other, axis=1).mean() / (np.linalg.norm(ref[0] - ref[1]) + 1e-9))


# A generic 3D face at the 5 landmarks (eyes, nose tip, mouth corners), in image-like axes: x right,
# y down, z away from the camera; millimetre-like units (only the proportions matter).
_FACE_3D = np.array([[-165.0, -170.0, 135.0], [165.0, -170.0, 135.0], [0.0, 0.0, 0.0],
                     [-150.0, 150.0, 125.0], [150.0, 150.0, 125.0]])


def head_pose(landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(pitch, yaw, roll) in degrees from 5 landmarks, by PnP against a generic 3D face."""
    h, w = image_size
    f = float(max(h, w))
    cam = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1]], np.float64)
    pts = np.ascontiguousarray(landmarks, np.float64).reshape(5, 1, 2)
    ok, rvec, tvec = cv2.solvePnP(_FACE_3D, pts, cam, None, flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, tvec = cv2.solvePnP(_FACE_3D, pts, cam, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.full(3, np.nan)
    R, _ = cv2.Rodrigues(rvec)
    angles = cv2.RQDecomp3x3(R)[0]
    return np.array(angles, np.float64)


def pose_error(ref: np.ndarray, other: np.ndarray, image_size: tuple[int, int]) -> float:
    """Mean absolute difference of (pitch, yaw, roll) in degrees, angle wrap-around handled."""
    d = head_pose(ref, image_size) - head_pose(other, image_size)
    d = (d + 180.0) % 360.0 - 180.0
    return float(np.abs(d).mean())
