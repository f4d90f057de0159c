"""The per-frame step for renderers that draw at the face's native resolution (anchor-face).

The same contract as `Anonymizer._generate` for the 112 px generators: identities from the ITM
(Eq. 1 on the bank's own anchors), per-track reuse between re-checks, verification with retries
on other bank faces (photos 2, video frames 1: `farther_anchor`), and per face whether it failed
(the caller obfuscates those). What differs is
the drawing: 68 points per face (smoothed along a track, in the face's own frame so head motion
is not smoothed away), then `render_in_place` (the renderer, and more renderings with the
texture shifted when YuNet finds the drawn face's points off) on the frame itself, face after face.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..faces import Detections, align_faces
from ..faces.align import ARCFACE_112, similarity_transform
from ..faces.identity import to_tensor
from .anchor_face import local_finder, render_in_place

DLIB_MATCH = 0.6
SHAPE_SMOOTHING = 0.75  # weight of the previous frame's 68 points (face frame) along a track
STILL_TRIES = 3  # renderings per anchor on a photo (render_in_place); a video frame gets 2
STILL_RETRIES = 2  # other bank faces tried on a photo when the first fails verification; a video frame: 1


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def shapes68(anon, rgb: np.ndarray, dets: Detections, tracks: np.ndarray | None) -> np.ndarray:
    """68 points [N,68,2] per face; along a track, averaged with the last frame's in the frame of
    the face's 5 key points (raw dlib points jitter from frame to frame: identity jitter)."""
    shapes = anon.generator.landmarker(rgb, dets.landmarks)
    if tracks is None:
        return shapes
    for i, t in enumerate(tracks):
        m = similarity_transform(dets.landmarks[i], ARCFACE_112)
        local = _apply(m, shapes[i])
        prev = anon._tracks.get(("shape68", int(t)))
        if prev is not None:
            local = SHAPE_SMOOTHING * prev + (1 - SHAPE_SMOOTHING) * local
        anon._tracks[("shape68", int(t))] = local
        inv = np.vstack([m, [0, 0, 1]])
        shapes[i] = _apply(np.linalg.inv(inv)[:2], local)
    return shapes


def _still_same(anon, rgb: np.ndarray, out: np.ndarray, det: Detections, z_id: np.ndarray, still: bool) -> bool:
    """Does the drawn face still match its original, or is it not found again in place? SFace on
    the output's aligned face, the pipeline's in-place check, and on still images (or with
    --verify) also dlib."""
    if anon.cfg.fallback == "none":
        return False
    crop, _ = align_faces(out, det.landmarks, 112)
    if 1.0 - float(anon._embed(to_tensor(crop).to(anon.device))[0] @ z_id) < anon.cfg.threshold:
        return True
    if not anon._in_place(rgb, out, det, still)[0]:
        return True  # not found again where the original was: treated like a failed anonymization
    if anon._dlib is not None and (still or anon.cfg.verify is True):
        box = det.boxes[0]
        return float(np.linalg.norm(anon._dlib.embed(rgb, box) - anon._dlib.embed(out, box))) < DLIB_MATCH
    return False


def farther_anchor(bank, z_id: np.ndarray, tried: list[int], sex: int | None) -> int | None:
    """The bank face for a retry: of the target's `sex` (None: any), not in `tried`, the one whose
    SFace embedding is farthest (cosine) from the original's `z_id` [128]; None when none is left.

    A failed face is one whose drawing SFace still matched to the original: the target's hair,
    outline and kept eyes and mouth carry it, so the retry takes the bank face that pulls hardest
    the other way rather than another draw from Eq. 1's near-orthogonal candidates (which mostly
    fail alike)."""
    pool = np.arange(len(bank)) if sex is None else np.flatnonzero(bank.sex == sex)
    pool = np.setdiff1d(pool, tried)
    if len(pool) == 0:
        return None
    cos = bank.sface[pool] @ (z_id / (np.linalg.norm(z_id) + 1e-12))
    return int(pool[np.argmin(cos)])


def second_look_finder(detector, lm: np.ndarray, cell: int = 160):
    """`find` for `render_in_place` on a video frame: the second look the in-place check takes there
    (`FaceDetector.second_look`: the face's crop aligned by the original's 5 points `lm` [5,2]), its
    5 points back in image pixels; None when it finds no face."""
    from .frame import CONFIRM_SCORE

    tpl = ARCFACE_112 * (cell * 0.7 / 112) + cell * 0.15  # second_look's template in its cell
    inv = cv2.invertAffineTransform(similarity_transform(lm, tpl))
    iod = float(np.linalg.norm(tpl[1] - tpl[0]))

    def find(img: np.ndarray):
        again, _, found = detector.second_look(img, lm[None], cell)
        if again[0] < CONFIRM_SCORE or np.isnan(found[0]).any():
            return None
        return _apply(inv, found[0] * iod).astype(np.float32)

    return find


def _iod(kps: np.ndarray) -> float:
    return float(np.linalg.norm(kps[1] - kps[0])) + 1e-6


def _noise(anon, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The `noise` defense on the drawn pixels: U(-eps, eps) on a fraction p of them."""
    changed = np.any(before != after, axis=2)
    gen = anon._rng
    pick = changed & (torch.rand(changed.shape, generator=gen).numpy() < anon.cfg.defense_p)
    if not pick.any():
        return after
    noise = (torch.rand((int(pick.sum()), 3), generator=gen).numpy() * 2 - 1) * anon.cfg.defense_eps * 255
    out = after.copy()
    out[pick] = np.clip(out[pick].astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return out


def generate_native(anon, rgb: np.ndarray, dets: Detections, tracks: np.ndarray | None, still: bool):
    """Draw, verify (retries: STILL_RETRIES on photos, 1 on video frames) and return (image, failed [N] bool)."""
    if anon.cfg.defense == "fgsm":
        raise ValueError("--defense fgsm needs a 112 px generator; the anchor-face renderer supports none and noise")
    n = len(dets)
    bank, renderer = anon.generator.bank, anon.generator.renderer
    crops, _ = align_faces(rgb, dets.landmarks, 112)
    dim = anon.itm.anchors.anchors.shape[1]
    z_a, z_id = np.zeros((n, dim), np.float32), np.zeros((n, dim), np.float32)
    failed = np.zeros(n, bool)
    keys = [None] * n
    fresh, known = anon.recheck(tracks, n)
    for i, st in known.items():
        z_a[i], failed[i] = st["z_a"], st["failed"]
    space = anon.itm.anchors
    matched = hasattr(space, "target_sex") and bank.sex_w is not None
    sexes: dict[int, int | None] = {}
    if fresh:
        z_id[fresh] = anon._embed(to_tensor(crops[fresh]).to(anon.device))
        for i in fresh:
            # the bank faces of the target's sex only (dlib's descriptor tells it; kept in memory)
            if matched:
                space.target_sex = sexes[i] = bank.predict_sex(anon.generator.descriptor(rgb, dets.boxes[i]))
            z_a[i], keys[i] = anon._fake_identity(z_id[i])
    shapes = shapes68(anon, rgb, dets, tracks)
    out = rgb
    for i in range(n):
        if i not in fresh and failed[i]:
            continue  # a track that failed verification stays obfuscated until its re-check
        # The look the in-place check takes: photos, the whole image (a crop's pyramid places the
        # points differently and shifts found on it do not carry over: 200 LFW faces within 0.07,
        # 52.5% with crops and 2 renderings, 86.5% with the whole image and 3; 12 wild photos take
        # 1.5x as long); video, the second look, aiming at where it finds the original's points.
        kps, find, tries = dets.landmarks[i], local_finder(anon.detector, dets.boxes[i], margin=None), STILL_TRIES
        if not still:
            find, tries = second_look_finder(anon.detector, dets.landmarks[i]), 2
            kps = find(rgb) if i in fresh else None
            if kps is None:  # not seen on the second look before: the face's neighbourhood
                kps, find = dets.landmarks[i], local_finder(anon.detector, dets.boxes[i])
        key = ("nudge", int(tracks[i])) if tracks is not None else None
        # photos: the drawn expression is checked too (a video keeps its track's geometry: no flicker)
        lmk = anon.generator.landmarker if still else None
        if i in fresh or key not in anon._tracks:
            drawn, nudge = render_in_place(renderer, out, shapes[i], bank.index_of(z_a[i]), kps, find, tries=tries, landmarker=lmk)
        else:  # between re-checks a track keeps its nudge, in the face's own scale
            nudge = None if anon._tracks[key] is None else anon._tracks[key] * _iod(dets.landmarks[i])
            drawn = renderer.render(out, shapes[i], bank.index_of(z_a[i]), nudge=nudge)
        if i in fresh and _still_same(anon, rgb, drawn, dets[i:i + 1], z_id[i], still):
            if anon.cfg.identity == "own":
                failed[i] = True
            else:
                tried = [bank.index_of(z_a[i])]
                for _ in range(STILL_RETRIES if still else 1):
                    anon.stats["retried"] += 1
                    pick = farther_anchor(bank, z_id[i], tried, sexes.get(i) if matched else None)
                    if pick is None:
                        break
                    tried.append(pick)
                    z_a[i] = bank.sface[pick] / np.linalg.norm(bank.sface[pick])
                    drawn, nudge = render_in_place(renderer, out, shapes[i], pick, kps, find, tries=tries, landmarker=lmk)
                    failed[i] = _still_same(anon, rgb, drawn, dets[i:i + 1], z_id[i], still)
                    if not failed[i]:
                        break
                if not failed[i] and keys[i] is not None:
                    anon.itm.reassign(keys[i], z_a[i])
        if key is not None and i in fresh:
            anon._tracks[key] = None if nudge is None else nudge / _iod(dets.landmarks[i])
        if not failed[i]:
            out = _noise(anon, out, drawn) if anon.cfg.defense == "noise" else drawn
    for i in fresh:
        if tracks is not None:
            anon._tracks[int(tracks[i])] = {"z_a": z_a[i], "failed": bool(failed[i]), "age": 1, "z_id": z_id[i]}
    return out, failed
