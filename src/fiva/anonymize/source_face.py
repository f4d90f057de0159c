"""Face swapping with the anchor-face renderer: the source's own face is the anchor (Section 4.3).

`fiva swap --source FACE TARGET` puts the source's identity on every target face. The anchor-face
design (issue 16) draws a bank face onto a target at the target's own resolution, keeping its pose,
expression and light; for a swap the bank is one face, built on the fly from the source photo the
way scripts/build_face_bank.py stores a bank face: the main face found (YuNet), its 68 points
(dlib), its texture warped to the bank's canonical frame (`canonical_template`) and its shape
carried along. Drawn with `SWAP_RENDER`, the identity-bearing geometry (brows, nose, eye contours,
part of the jaw) and the proportions of the 5 key points move to the source's, and the source's
texture covers the face inside the jaw and up the forehead (where both faces show skin).

The source's SFace embedding is biometric: it lives in the returned bank, in memory only, and is
never written anywhere (`AnchorFaceBank.save` is not called on a source bank).
Images are RGB uint8 [H,W,3].
"""
from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from ..faces.align import similarity_transform, transform_points
from ..faces.landmarks68 import EYE_L, EYE_R, five_points
from .anchor_face import RenderConfig
from .face_bank import AnchorFaceBank, canonical_template

# Drawn as a swap (RenderConfig; LFW pairs of `fiva evaluate`'s Table 4, scripts/evaluate_swap.py;
# "dlib" is the output's mean distance to the source photo):
# - the identity-bearing geometry moves fully to the source's (alpha 1: the bank's 1.5 caricatures
#   an average face, a real one needs none), and so do the proportions the 5 key points carry (eye
#   distance, eyes to nose and mouth: `keypoints`; the mouth keeps its own shape, so its opening
#   and smile stay the target's): with the target's 5 points kept, dlib 0.50 (40 pairs), with the
#   source's 0.43-0.45;
# - the chin moves 0.3 of the way: YuNet places the 5 points partly by the outline, and the pose
#   read from them drifts (60 pairs: 2.96 degrees with half the chin, 2.48 with 0.3);
# - the source's own eyes (keep_eyes 0; the lid gap is still the target's), its forehead up to 0.9
#   eye distances above the brows, and outside the inner features only where both faces show skin
#   (skin_band: no fringe, cap or headband of either pasted over the other), its colour detail in
#   full (chroma 1) and half its skin tone (tone 0.5; 0.25 measured the same, 100 pairs);
# - the target's mouth stays where either mouth is open (a source's teeth over closed lips);
# - a finer search for the drawn face's place (6 renderings, down to 0.03 eye distances), and while
#   the mouth reads off, one redrawing with the chin kept (the bank's further steps, the nose base
#   and then all geometry kept, gave the target's face back: ID (source) 0.76 -> 0.83, 100 pairs;
#   0.82 at 2.52 degrees as shipped); the search's shift moves the source's lids too (nudge_lids:
#   no target eyes are kept under them), and its lips around a kept open mouth (nudge_lips; left in
#   place, as the anonymizer leaves a bank face's: 0.74 at 2.72 degrees);
# - the source's nose where its key points' proportions put it, not about the target's tip, and the
#   target's detail kept where the warp squashes it (nose_follow, detail_squash_hi 0: the
#   anonymizer's nose change, fiva evaluate's Table 4: ID (source) 0.82 -> 0.69 with them);
# - no shape cap: the source is a real face and its proportions are what a swap draws (the cap
#   holds the anonymizer's bank faces, moved 1.5x past an average, near real faces' shapes), and
#   the source's shape not reposed (repose 0: not measured on swaps; Table 4 is from before it).
# - the source's lips drawn as they are under a kept mouth (lipless 0): a real face's lips end at
#   their outline; the bank's averages' blurred lip border is what `lipless` fills in.
# - the source's brows where its shape puts them (brow_floor off): the anonymizer's floor holds
#   drawn brows no lower than the lower of the two faces', which gave a swap the target's brow
#   height back (100 LFW pairs, `scripts/evaluate_swap.py`: ID (source) 0.77 with it, 0.81 without;
#   0.76 on the code at the twenty-sixth session's start, 0.82 on older code: nothing re-measured it).
SWAP_RENDER = RenderConfig(alpha=1.0, jaw=0.3, keypoints=1.0, keep_eyes=0.0, forehead=0.9, skin_band=0.12, chroma=1.0,
                           tone=0.5, feather=0.12, keep_anchor_mouth=True, still_tries=6, still_tolerance=0.03, sockets=0.0,
                           expression_steps=({"jaw": 0.0},), nudge_lids=True, nudge_lips=True, nose_follow=0.0, detail_squash_hi=0.0,
                           shape_cap=0.0, repose=0, lipless=0.0, brow_floor=False, facial_hair=0.0)
MAX_SIZE = 512  # side of the source texture's canonical frame at most (a bank face's: 256)


def texture_size(shape: np.ndarray, base: int) -> int:
    """The canonical frame's side for a source face of 68 points `shape` (image pixels): the bank's
    `base`, or larger (up to MAX_SIZE, in steps of 64) for a face whose eyes lie farther apart in the
    photo than in that frame, so a sharp source keeps its detail."""
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
    tpl = canonical_template(base)
    frame_iod = float(np.linalg.norm(tpl[1] - tpl[0]))
    return int(min(MAX_SIZE, max(base, 64 * np.ceil(base * iod / frame_iod / 64))))


def source_bank(rgb: np.ndarray, detector, landmarker, like: AnchorFaceBank, sface) -> AnchorFaceBank:
    """A one-face bank [1] of the main (largest) face of `rgb`, in `like`'s frame and mesh.

    `detector(rgb) -> Detections`, `landmarker(rgb, kps [N,5,2]) -> [N,68,2]` (`Landmarker68`),
    `sface`: the SFace model (`embed(crops [N,112,112,3] uint8) -> [N,128]`). Raises ValueError
    when no face is found."""
    d = detector(rgb)
    if len(d) == 0:
        raise ValueError("no face found in the source photo")
    i = d.largest()
    shape = landmarker(rgb, d.landmarks[i:i + 1])[0]
    size = texture_size(shape, like.size)
    m = similarity_transform(five_points(shape), canonical_template(size))
    shrink = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # < 1: the photo's face is larger than the frame's
    flags = cv2.INTER_CUBIC
    src = rgb
    if shrink < 1:  # warpAffine does not average when it shrinks: prefilter, then warp
        sigma = 0.5 / shrink - 0.5
        src = cv2.GaussianBlur(rgb, (0, 0), sigma) if sigma > 0.3 else rgb
        flags = cv2.INTER_LINEAR
    tex = cv2.warpAffine(src, m, (size, size), flags=flags, borderMode=cv2.BORDER_REFLECT)
    cshape = transform_points(m, shape).astype(np.float32)
    from ..faces import align_faces

    crop, _ = align_faces(rgb, d.landmarks[i:i + 1], 112)
    emb = sface.embed(crop)[0].astype(np.float32)
    return AnchorFaceBank(tex[None], cshape[None], (emb / np.linalg.norm(emb))[None], np.zeros(1, np.uint8),
                          np.zeros((1, 6), np.float32), like.triangles, np.zeros(1, np.float32), {"source": "swap"})


def swap_config(base: RenderConfig | None = None, **changes) -> RenderConfig:
    """SWAP_RENDER with `changes` (RenderConfig fields)."""
    return replace(base or SWAP_RENDER, **changes)


def use_source(generator, rgb: np.ndarray, detector, sface, config: RenderConfig | None = None) -> np.ndarray:
    """Turn an `AnchorFaceGenerator` into a swapper of the main face of `rgb`: its bank becomes the
    source's one-face bank, its renderer draws with `config` (default SWAP_RENDER). Returns the
    source's unit SFace embedding [128] (in memory only): the `z` every target face is given."""
    from .anchor_face import AnchorFaceRenderer

    if not hasattr(generator, "full_bank"):  # the shipped bank, kept for its frame and mesh (a new source: a new bank)
        generator.full_bank = generator.bank
    bank = source_bank(rgb, detector, generator.landmarker, generator.full_bank, sface)
    generator.bank = bank
    generator.renderer = AnchorFaceRenderer(bank, config or SWAP_RENDER)
    return bank.sface[0]

