"""Alignment to the ArcFace 5-point template and the inverse warp that pastes a crop back."""
from __future__ import annotations

import cv2
import numpy as np

# ArcFace template for a 112x112 crop (eyes, nose tip, mouth corners).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    np.float32,
)


def template(size: int) -> np.ndarray:
    """The ArcFace template scaled to a `size` x `size` crop."""
    return ARCFACE_112 * (size / 112.0)


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Points `pts` [...,2] through the 2x3 affine matrix `m` (as cv2.warpAffine maps pixels)."""
    return pts @ m[:, :2].T + m[:, 2]


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama) mapping points src [N,2] onto dst [N,2]; returns a 2x3 matrix."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m.astype(np.float32)


def align_faces(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112, antialias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Warp each face to the template.

    Args:
        rgb: image [H,W,3] uint8.
        landmarks: [N,5,2] in image pixels.
        size: crop side in pixels.
        antialias: blur a face the warp shrinks first (`_warp_down`); False: sample it bilinearly
            as the fake detector was trained (a blurred big real face reads as manipulated to it).
    Returns:
        crops [N,size,size,3] uint8 and the 2x3 image->crop matrices [N,2,3].
    """
    tpl = template(size)
    crops = np.zeros((len(landmarks), size, size, 3), np.uint8)
    mats = np.zeros((len(landmarks), 2, 3), np.float32)
    for i, lm in enumerate(landmarks):
        mats[i] = similarity_transform(lm, tpl)
        crops[i] = _warp_down(rgb, mats[i], size, antialias)
    return crops, mats


def _warp_down(rgb: np.ndarray, m: np.ndarray, size: int, blur: bool = True) -> np.ndarray:
    """`rgb` warped by the 2x3 matrix `m` to a `size` crop, with `blur` blurred first where `m` shrinks it (a
    Gaussian of 0.5 / scale - 0.5 pixels over the crop's source region only): bilinear sampling
    reads 4 source pixels per crop pixel and aliases the rest, so a big face's crop was a
    different grain of it at each size (SFace on portrait_shea_whigham at 1/2 and 1/8 of its
    size: 0.042 and 0.058 from itself; blurred first, 0.001 and 0.018)."""
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2].astype(np.float64)))))
    sigma = 0.5 / scale - 0.5 if blur and scale > 0 else 0.0
    if sigma > 0.3:
        inv = cv2.invertAffineTransform(m)
        corners = transform_points(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float32))
        pad = 3 * sigma + 2
        x0, y0 = np.maximum(np.floor(corners.min(0) - pad), 0).astype(int)
        x1, y1 = np.minimum(np.ceil(corners.max(0) + pad), (rgb.shape[1], rgb.shape[0])).astype(int)
        if x1 > x0 and y1 > y0:
            sub = cv2.GaussianBlur(np.ascontiguousarray(rgb[y0:y1, x0:x1]), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
            shifted = m.astype(np.float32).copy()
            shifted[:, 2] += shifted[:, :2] @ np.array([x0, y0], np.float32)
            return cv2.warpAffine(sub, shifted, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return cv2.warpAffine(rgb, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def feather_mask(size: int, margin: float = 0.1) -> np.ndarray:
    """A [size,size] float mask: 1 inside, falling smoothly to 0 over `margin` of the side at the border."""
    ramp = np.clip(np.minimum(np.arange(size) + 0.5, size - np.arange(size) - 0.5) / (margin * size), 0, 1)
    ramp = 0.5 - 0.5 * np.cos(np.pi * ramp)
    return np.outer(ramp, ramp).astype(np.float32)


def paste_back(rgb: np.ndarray, crop: np.ndarray, mat: np.ndarray, mask: np.ndarray | None = None,
               inplace: bool = False) -> np.ndarray:
    """Inverse-warp `crop` [S,S,3] into a copy of `rgb` (into `rgb` itself if `inplace`) through
    the image->crop matrix `mat`.

    `mask` [S,S] in [0,1] says how much of each crop pixel replaces the image (default: a feathered
    square); pixels outside the warped mask are left bit-exact.
    """
    size = crop.shape[0]
    if mask is None:
        mask = feather_mask(size)
    h, w = rgb.shape[:2]
    inv = cv2.invertAffineTransform(mat)
    scale = float(np.sqrt(abs(np.linalg.det(inv[:, :2]))))  # image pixels per crop pixel
    if scale < 0.9:  # a small face: shrink the crop first (area-averaged), else bilinear sampling aliases into a pixel grid
        small = max(8, int(round(size * scale)))
        f = small / size
        crop = cv2.resize(crop, (small, small), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.float32), (small, small), interpolation=cv2.INTER_AREA)
        inv = inv.copy()
        inv[:, :2] /= f
        size = small
    # Only touch the bounding box of the warped crop: cheap on large frames.
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float32) @ inv.T
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out = rgb if inplace else rgb.copy()
    if x1 <= x0 or y1 <= y0:
        return out
    shift = inv.copy()
    shift[:, 2] -= (x0, y0)
    roi = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(crop, shift, roi, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask.astype(np.float32), shift, roi, flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
    region = out[y0:y1, x0:x1].astype(np.float32)
    blended = alpha * warped.astype(np.float32) + (1 - alpha) * region
    keep = alpha[..., 0] <= 0
    blended[keep] = region[keep]
    out[y0:y1, x0:x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def paste_change(rgb: np.ndarray, crop: np.ndarray, new: np.ndarray, mat: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """What a model changed on the aligned `crop` of `rgb` (its output `new`), in image space: int16
    [H,W,3], zero outside the warped `mask`. Pasting `new` alone would also carry the crop's own
    resampling (warped in and back), a blur of its own; the difference leaves only the model's change."""
    return paste_back(rgb, new, mat, mask).astype(np.int16) - paste_back(rgb, crop, mat, mask)
