"""The blend masks of an anchor-face drawing: where the bank face shows over the target.

Each source is its own function over the face's box ([h,w] in [0,1]): the feathered face hull,
less the target's kept eyes and open mouth (`blend_mask`), less the mesh triangles the warp
squashes (`squash_weight`: the far side of a turned head), and, for a real source face, the
forehead and temples only where both faces show skin (`skin_band_weight`); less the target's
sunglasses (`kept_lenses`). `detail_weight`: where the target's own fine detail is added to the
drawing. `glasses_worn`, `glasses_ring` and `thin_lines`: whether the target wears a frame of
glasses, and where its lines are kept over the drawing.
"""
from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ..faces.landmarks68 import EYE_L, EYE_R, INNER_LIPS, LIPS, mouth_opening
from .colour import smooth
from .face_bank import cheek_boxes
from .warp import signed_areas

if TYPE_CHECKING:
    from .anchor_face import RenderConfig


def ramp(x, lo: float, hi: float):
    """0 up to `lo`, 1 from `hi`, linear between (`x` a number or an array)."""
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _poly_mask(shape_hw, pts, offset) -> np.ndarray:
    m = np.zeros(shape_hw, np.float32)
    cv2.fillPoly(m, [np.round((pts - offset) * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
    return m


def face_hull(shape: np.ndarray, forehead: float = 0.1) -> np.ndarray:
    """The blend region's outline: the jaw and the brows, raised by `forehead` eye distances
    (along the face's vertical)."""
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
    up = shape[27] - shape[8]
    brows = shape[26:16:-1] + forehead * iod * up / (np.linalg.norm(up) + 1e-6)
    return cv2.convexHull(np.concatenate([shape[:17], brows]).astype(np.float32))[:, 0]


def squash_weight(cfg: RenderConfig, src: np.ndarray, dst: np.ndarray, tris: np.ndarray,
                  lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Per mesh triangle [T] in [0,1]: how fully the bank face may be drawn there, by how much the
    warp from its mesh `src` to the target's `dst` [80,2] squashes the triangle (area ratio over
    the face's overall one): 1 from `squash_hi`, 0 at `squash_lo` and on triangles turned over.
    On a turned head the far side of a frontal bank face is squashed into a sliver and folds at
    the nose: drawn, a smear with a sharp seam down the nose; there the target's own pixels stay.
    `lo`, `hi`: other bounds than the config's (`detail_weight`)."""
    lo = cfg.squash_lo if lo is None else lo
    hi = cfg.squash_hi if hi is None else hi
    a_src, a_dst = signed_areas(src[tris]), signed_areas(dst[tris])
    scale = np.abs(a_dst).sum() / (np.abs(a_src).sum() + 1e-6)
    ratio = a_dst / (a_src * scale + np.where(a_src >= 0, 1e-6, -1e-6))  # < 0: turned over
    return ramp(ratio, lo, hi)


def triangle_map(weights: np.ndarray, dst: np.ndarray, tris: np.ndarray, box, hw, sigma: float) -> np.ndarray:
    """[h,w] over `box` (x0,y0,x1,y1): the per-triangle `weights` [T] drawn on the mesh `dst`
    [80,2] (1 elsewhere), smoothed by `sigma` pixels."""
    x0, y0 = box[:2]
    full = np.ones(hw, np.float32)
    for t in np.flatnonzero(weights < 1):
        cv2.fillConvexPoly(full, np.round((dst[tris[t]] - (x0, y0)) * 16).astype(np.int32), float(weights[t]),
                           lineType=cv2.LINE_AA, shift=4)
    return np.minimum(smooth(full, sigma), 1.0)


def detail_weight(cfg: RenderConfig, src: np.ndarray, dst: np.ndarray, tris: np.ndarray, box, hw,
                  iod: float) -> np.ndarray | None:
    """[h,w] in [0,1] over `box`: the share of the target's own fine detail added to the drawing
    (`RenderConfig.detail`), by how much the target's warp from its mesh `src` to the new shape's
    `dst` squashes each triangle (`detail_squash_lo`..`detail_squash_hi`), smoothed over a quarter
    of the blend's feather; None where no triangle is squashed.
    The new nose's base sits 0.05-0.07 eye distances below its kept tip where a pitched target's
    sits 0.2 (liveportrait_d13): the triangles under the tip are squashed to 0.4-0.55 of their
    area, and the target's nostril openings, added as detail, were thin, dark, sharp-edged lines
    over the bank face's soft nostrils."""
    if cfg.detail_squash_hi <= 0:
        return None
    w = squash_weight(cfg, src, dst, tris, cfg.detail_squash_lo, cfg.detail_squash_hi)
    if not (w < 1).any():
        return None
    return triangle_map(w, dst, tris, box, hw, max(cfg.feather * iod / 4, 0.5))


def kept_lips(shape: np.ndarray, share: float) -> np.ndarray:
    """The outline of the kept mouth: the inner lips (share 0), the outer (1), or between, each
    outer point moved towards the nearest point of the inner outline (the lips thinned, the
    corners kept); above 1, away from it (the skin around the lips too)."""
    if share == 1:
        return shape[LIPS]
    inner = shape[INNER_LIPS]
    if share <= 0:
        return inner
    a, b = inner, np.roll(inner, -1, axis=0)  # the inner outline's segments
    out = shape[LIPS].copy()
    for k, p in enumerate(out):
        t = np.clip(((p - a) * (b - a)).sum(1) / (((b - a) ** 2).sum(1) + 1e-9), 0, 1)
        near = a + t[:, None] * (b - a)
        q = near[np.argmin(np.linalg.norm(near - p, axis=1))]
        out[k] = q + share * (p - q)
    return out


def kept_eyes(cfg: RenderConfig, shape: np.ndarray, offset, hw, iod: float) -> np.ndarray:
    """[h,w] in [0,1]: the target's eyes that stay, before the 1.5x gain `blend_mask` gives it:
    each eye's contour scaled by `keep_eyes` about its centre, grown outwards by `eye_margin` eye
    distances (the lid margin with the lashes and the lid crease, which the bank faces' averaged
    lids do not have: six donors' lashes never line up, so a drawn lid is a pale smear around a
    sharp kept eye) and feathered over `eye_feather` eye distances."""
    keep = np.zeros(hw, np.float32)
    mid = (shape[EYE_L].mean(0) + shape[EYE_R].mean(0)) / 2
    for s in (EYE_L, EYE_R):
        c = shape[s].mean(0)
        d = shape[s] - c
        grow = d / (np.linalg.norm(d, axis=1, keepdims=True) + 1e-6)
        inner = (d @ (mid - c)) > 0  # the points on the nose's side: grown up and down, less towards the nose
        grow[inner, 0] *= cfg.eye_margin_inner
        pts = c + d * cfg.keep_eyes + cfg.eye_margin * iod * grow
        keep = np.maximum(keep, _poly_mask(hw, pts, offset))
    return smooth(keep, max(cfg.eye_feather * iod, 0.5))


def mouth_kept(cfg: RenderConfig, shape: np.ndarray, anchor_open: bool = False) -> bool:
    """Whether the target's mouth stays (`blend_mask`; `nudged_shape` leaves its lips in place):
    open beyond `cfg.keep_mouth`, or the anchor's own mouth is (`anchor_open`)."""
    return mouth_opening(shape) > cfg.keep_mouth or anchor_open


def blend_mask(cfg: RenderConfig, shape: np.ndarray, box, hw, squashed=None, anchor_open: bool = False) -> np.ndarray:
    """Alpha [h,w] in [0,1] over `box` (x0,y0,x1,y1): the feathered face hull minus the kept eyes
    and open mouth. The feather lies inside the hull, so the alpha is 0 on and outside it.
    `squashed` (src [80,2], dst [80,2], triangles [T,3]): the bank face's warp, whose squashed
    triangles are left out too (`squash_weight`). `anchor_open`: the anchor's own mouth is open (a
    real source face's teeth would be drawn over the target's lips): the target's mouth stays too."""
    x0, y0, x1, y1 = box
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
    sig = max(cfg.feather * iod / 2, 0.5)
    hull = _poly_mask(hw, face_hull(shape, cfg.forehead), (x0, y0))
    k = max(int(round(2 * sig)) * 2 + 1, 3)
    m = smooth(cv2.erode(hull, np.ones((k, k), np.uint8)), sig) * hull
    keep = np.zeros(hw, np.float32)
    if mouth_kept(cfg, shape, anchor_open):
        keep = _poly_mask(hw, kept_lips(shape, float(cfg.mouth_lips)), (x0, y0))
    if keep.any():
        keep = smooth(keep, max(0.02 * iod, 0.5))
    if cfg.keep_eyes > 0:
        keep = np.maximum(keep, kept_eyes(cfg, shape, (x0, y0), hw, iod))
    if keep.any():
        m = m * (1 - np.clip(keep * 1.5, 0, 1))
    if squashed is not None and cfg.squash_hi > 0:
        src, dst, tris = squashed
        w = squash_weight(cfg, src, dst, tris)
        if (w < 1).any():  # the triangles' own weights, feathered like the hull
            m = m * triangle_map(w, dst, tris, box, hw, sig)
    return m


def skin_likeness(rgb: np.ndarray, region: np.ndarray) -> np.ndarray:
    """[h,w] in [0,1]: how near each pixel's colour (RGB, uint8 or float) is to the skin of `region`
    [h,w] bool (the cheeks and nose): 1 within ~2.5 of its spreads (LAB; lightness weighted half,
    spreads floored so a flat-lit face does not reject its own shading), 0 from ~4."""
    lab = cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
    mean, std = cv2.meanStdDev(lab, mask=region.astype(np.uint8))
    std = np.maximum(std[:, 0], (12.0, 4.0, 4.0)) * (2.0, 1.0, 1.0)
    d = np.sqrt((((lab - mean[:, 0]) / std) ** 2).sum(-1))
    return np.clip((4.0 - d) / 1.5, 0.0, 1.0)


# The target's own looks (a beard, dark eye regions, a frame of glasses) are read off its pixels
# about its face, and a photo's face is drawn dozens of times (the tries, the in-place renderings,
# the expression steps), each on the same pixels: the last drawing is lifted back before the next.
# `read_once` answers a read again from memory when the face's 68 points and the pixels about them
# (the points' box grown by READ_REACH eye distances, which holds every read's region) are the same.
READ_REACH = 0.5
READS_KEPT = 64
_reads: OrderedDict = OrderedDict()
_reads_lock = threading.Lock()


def read_once(read):
    """`read(rgb, shape, *args)` answered from memory for a face read before (READ_REACH)."""
    @functools.wraps(read)
    def once(rgb: np.ndarray, shape: np.ndarray, *args):
        iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
        x0, y0 = np.maximum(np.floor(shape.min(0) - READ_REACH * iod - 4).astype(int), 0)
        x1, y1 = np.ceil(shape.max(0) + READ_REACH * iod + 4).astype(int)
        digest = hashlib.blake2b(np.ascontiguousarray(rgb[y0:y1, x0:x1]).data, digest_size=16)
        digest.update(np.ascontiguousarray(shape).data)
        key = (read.__name__, rgb.shape, shape.dtype.str, x0, y0, digest.digest(), args)
        with _reads_lock:
            if key in _reads:
                _reads.move_to_end(key)
                return _reads[key]
        value = read(rgb, shape, *args)
        with _reads_lock:
            _reads[key] = value
            while len(_reads) > READS_KEPT:
                _reads.popitem(last=False)
        return value
    return once


# A bearded target (`bearded`): its lower face (nostrils to chin inside the jaw, the lips left
# out) at most BEARD_DARK of its cheekbones' lightness (median) and BEARD_TEXTURE times as rough
# (median energy of the fine band, 0.04 eye distances). 200 LFW fold-1 faces: 6 pass, bearded or
# stubbled (Abdul Rahman, Fidel Castro Daiz-Balart, Anthony Carter, Anthony Mazur, Damon
# Stoudamire) and a blurred background face; lightness, roughness or colour alone took shaded chins, dark skin
# and women (Angela Bassett, Dianne Reeves) for beards. Lighter or thinner beards (Bart Freundlich,
# 0.73; white ones) are not told.
BEARD_DARK = 0.65
BEARD_TEXTURE = 2.0
# ... and of a bearded target, the pixels of the lower face (`facial_hair`) under this share of the cheekbones'
# lightness are hair: in full under the first, none over the second
HAIR_DARK = (0.55, 0.75)


def _lower_face(shape: np.ndarray, offset, hw, target: np.ndarray, iod: float):
    """(lower face [h,w] bool: nostrils to chin inside the jaw, the lips left out; the cheekbones'
    boxes [h,w] bool; LAB lightness [h,w]; the cheekbones' median lightness) over a box at `offset`
    of size `hw`; None where either region is (nearly) outside it."""
    lower = _poly_mask(hw, np.concatenate([shape[2:15], shape[[35, 34, 33, 32, 31]]]), offset) > 0.5
    lips = cv2.convexHull(shape[LIPS].astype(np.float32))[:, 0]
    c = lips.mean(0)
    lips = c + (lips - c) * (1 + 0.03 * iod / (np.linalg.norm(lips - c, axis=1, keepdims=True) + 1e-6))
    lower &= _poly_mask(hw, lips, offset) < 0.5
    cheeks = np.zeros(hw, bool)
    for x0, y0, x1, y1 in cheek_boxes(shape, iod, offset):
        cheeks[max(int(y0), 0):max(int(y1), 0), max(int(x0), 0):max(int(x1), 0)] = True
    if lower.sum() < 16 or cheeks.sum() < 8:
        return None
    light = cv2.cvtColor(np.clip(target, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    return lower, cheeks, light, max(float(np.median(light[cheeks])), 1.0)


@read_once
def bearded(rgb: np.ndarray, shape: np.ndarray) -> bool:
    """Does the face of 68 points `shape` [68,2] in `rgb` read bearded (BEARD_DARK, BEARD_TEXTURE)?
    Read on the photo as it is: on a drawing's moved target the lower face follows the geometry
    moved towards the bank face, and a retry's took in shade past the jaw (Bob Graham, Bruna
    Colosio read bearded so)."""
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
    x0, y0 = np.floor(shape.min(0) - 0.2 * iod).astype(int)
    x1, y1 = np.ceil(shape.max(0) + 0.2 * iod).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, rgb.shape[1]), min(y1, rgb.shape[0])
    if x1 - x0 < 8 or y1 - y0 < 8:
        return False
    got = _lower_face(shape, (x0, y0), (y1 - y0, x1 - x0), rgb[y0:y1, x0:x1], iod)
    if got is None:
        return False
    lower, cheeks, light, skin = got
    fine = light - cv2.GaussianBlur(light, (0, 0), max(0.04 * iod, 0.8))
    rough = cv2.GaussianBlur(fine * fine, (0, 0), max(0.05 * iod, 1.0))
    return (float(np.median(light[lower])) / skin <= BEARD_DARK
            and float(np.median(rough[lower])) / (float(np.median(rough[cheeks])) + 1.0) >= BEARD_TEXTURE)


def facial_hair(shape: np.ndarray, offset, hw, target: np.ndarray, iod: float) -> np.ndarray | None:
    """[h,w] in [0,1] over a box at `offset` of size `hw`: a bearded target's (`bearded`) beard
    and moustache, the pixels of its lower face darker than its cheekbones' skin (HAIR_DARK).
    `target` [h,w,3]: the target's pixels where `shape` [68,2] lies (the moved target)."""
    got = _lower_face(shape, offset, hw, target, iod)
    if got is None:
        return None
    lower, _, light, skin = got
    lo, hi = HAIR_DARK
    hair = np.clip((hi - light / skin) / (hi - lo), 0.0, 1.0) * lower
    return np.clip(smooth(hair, max(0.03 * iod, 0.5)), 0.0, 1.0).astype(np.float32)


# mean skin likeness under which the forehead band over a brow, and its brow bone, are covered
BROWS_COVERED = (0.3, 0.45)


def covered_brows(shape: np.ndarray, raised: np.ndarray, target_skin: np.ndarray, offset) -> list[bool]:
    """For each brow of `shape` [68,2] (image left, right): is the target covered both on its brow
    bone (brow to upper lid) and on the band above it (up to `raised` [10,2], the brows raised), by mean
    `target_skin` [h,w] (`skin_likeness`) under BROWS_COVERED (band, bone)? A cap's brim, a beanie
    or a fringe down to the eyes; a brim just over the lids leaves the bone's lowest pixels bare.
    Glasses, sunglasses or eye make-up darken the bone only: the forehead over them is skin (200
    LFW photos: 22 bones under 0.5; both, only caps and fringes)."""
    out = []
    for k, eye in enumerate((EYE_L, EYE_R)):
        brow, lid = shape[17 + 5 * k:22 + 5 * k], shape[eye][3::-1]  # the upper lid, inner corner first
        means = []
        for poly in (np.concatenate([brow, raised[5 * k:5 * k + 5][::-1]]), np.concatenate([brow, lid])):
            m = _poly_mask(target_skin.shape, poly, offset) > 0.5
            means.append(float(target_skin[m].mean()) if m.any() else 1.0)
        out.append(means[0] < BROWS_COVERED[0] and means[1] < BROWS_COVERED[1])
    return out


def skin_band_weight(cfg: RenderConfig, shape: np.ndarray, box, drawn: np.ndarray, target: np.ndarray,
                     region: np.ndarray) -> np.ndarray:
    """[h,w] in [0,1] over `box`: 1 over the inner face (brows raised by `cfg.skin_band` eye
    distances, eyes, nose and mouth, and a margin of 0.1 eye distances), outside it the product of
    the drawing's and the target's `skin_likeness`, smoothed: forehead, temples and cheeks show
    the drawing only where both are skin. Where a brow is covered (`covered_brows`) the inner face
    stops at that eye's upper lid: a beanie's brim over the brows (LFW's Brawley King) was drawn
    over as a pale band of the bank face's brows and forehead."""
    x0, y0, x1, y1 = box
    hw = drawn.shape[:2]
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
    up = shape[27] - shape[8]
    brows = shape[17:27] + cfg.skin_band * iod * up / (np.linalg.norm(up) + 1e-6)
    target_skin = skin_likeness(target, region)
    tops = [shape[eye][:4] if covered else brows[5 * k:5 * k + 5]  # a covered brow: the inner face stops at the upper lid
            for k, (eye, covered) in enumerate(zip((EYE_L, EYE_R), covered_brows(shape, brows, target_skin, (x0, y0))))]
    inner = cv2.convexHull(np.concatenate(tops + [shape[27:68]]).astype(np.float32))[:, 0]
    c = inner.mean(0)
    inner = c + (inner - c) * (1 + 0.1 * iod / (np.linalg.norm(inner - c, axis=1, keepdims=True) + 1e-6))
    low = smooth(_poly_mask(hw, inner, (x0, y0)), max(0.05 * iod, 0.5))
    skin = smooth(skin_likeness(drawn, region) * target_skin, max(0.03 * iod, 0.5))
    return low + (1 - low) * skin


LENS_MIN_IOD = 10.0  # eye distance (pixels) under which `kept_lenses` cannot tell sunglasses (boxes of a few pixels)
# ... and under which `glasses_worn` cannot tell a frame: the bridge is a few pixels wide, and any
# line spans it (24 of the 26 faces of crowd_retinaface_img3.jpg at 11-16 read as glasses; a bare
# face at 23 in crowd_selfie.jpg)
GLASSES_MIN_IOD = 28.0


def _cheek_lightness(lab_l: np.ndarray, shape: np.ndarray, offset, iod: float) -> float:
    """Median LAB lightness of the two cheek boxes (`face_bank.cheek_boxes`)."""
    vals = []
    for x0, y0, x1, y1 in cheek_boxes(shape, iod, offset):
        vals.append(lab_l[max(int(y0), 0):max(int(y1), 1), max(int(x0), 0):max(int(x1), 1)].ravel())
    vals = np.concatenate(vals)
    return float(np.median(vals)) if len(vals) else 0.0


def lens_darkness(lab_l: np.ndarray, shape: np.ndarray, offset, iod: float) -> float:
    """How dark the target's eye regions are against its cheeks: the 75th percentile of LAB
    lightness over a box around each eye (0.56 x 0.28 eye distances, a little below its centre)
    over the cheeks' median. Bare eyes: median 0.85 on 5,230 LFW training faces; 99% above 0.44;
    sunglasses under 0.3 (the faces under 0.3 are nearly all sunglasses, one a cap's shadow)."""
    vals = []
    for s in (EYE_L, EYE_R):
        x, y = shape[s].mean(0) + (0, 0.05 * iod) - offset
        vals.append(lab_l[max(int(y - 0.14 * iod), 0):max(int(y + 0.14 * iod), 1),
                          max(int(x - 0.28 * iod), 0):max(int(x + 0.28 * iod), 1)].ravel())
    vals = np.concatenate(vals)
    cheeks = _cheek_lightness(lab_l, shape, offset, iod)
    return float(np.percentile(vals, 75) / (cheeks + 1.0)) if len(vals) and cheeks > 0 else 1.0


@read_once
def eye_darkness(rgb: np.ndarray, shape: np.ndarray, iod: float) -> float:
    """`lens_darkness` of the face of 68 points `shape` in `rgb`, read off its own pixels (1.0,
    "bare", with an eye distance under LENS_MIN_IOD)."""
    if iod < LENS_MIN_IOD:
        return 1.0
    x0, y0 = np.maximum(np.floor(shape.min(0) - 0.3 * iod).astype(int), 0)
    x1, y1 = np.ceil(shape.max(0) + 0.3 * iod).astype(int)
    lab_l = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    return lens_darkness(lab_l, shape, (x0, y0), iod)


def lenses_worn(cfg: RenderConfig, darkness: float, framed: float = 0.0) -> float:
    """In [0,1]: how surely a face whose `eye_darkness` is `darkness` wears sunglasses: 1 under
    its threshold - 0.03, 0 from the threshold + 0.03 (a ramp, so a video's frames near it do not
    flip); 0 with `cfg.lenses` 0. The threshold is `cfg.lenses`, and `cfg.framed_lenses` on a face
    whose frame is seen (`framed`: `glasses_worn`; between the two as it is unsure): tinted lenses
    are lighter than dark ones, but no bare eyes sit behind a frame."""
    if cfg.lenses <= 0:
        return 0.0
    t = cfg.lenses + framed * (cfg.framed_lenses - cfg.lenses)
    return float(1.0 - ramp(darkness, t - 0.03, t + 0.03))


def socket_floor(cfg: RenderConfig, darkness: float) -> float:
    """The lowest ratio `colour.lift_sockets` may take the drawing's sockets down to, towards the
    target's: 1 (lifted only) on a face whose `eye_darkness` is from `cfg.shadow_hi` up, down to
    `cfg.shadow_floor` at `cfg.shadow_lo` and under (eyes in a cap's shadow, sunglasses): there the
    kept dark eyes were black holes in a bright drawn face."""
    return float(cfg.shadow_floor + (1.0 - cfg.shadow_floor) * ramp(darkness, cfg.shadow_lo, cfg.shadow_hi))


def kept_lenses(worn: float, shape: np.ndarray, rgb: np.ndarray, offset, iod: float, feather: float) -> np.ndarray | None:
    """[h,w] in [0,1] over `rgb` (the target's pixels, at `offset`): the target's sunglasses, which
    stay (a bank face drawn over them is a smeared face with no eyes), `worn` times (`lenses_worn`);
    None where none are worn. Where: per eye, the convex hull of the pixels darker than 0.55 of the
    cheeks within an ellipse about it (0.48 x 0.3 eye distances, reaching less far up, where the
    brows are), and the dark pixels of the frame's bridge between them; grown by 0.03 and
    feathered by `feather` eye distances."""
    if worn <= 0:
        return None
    hw = rgb.shape[:2]
    lab_l = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
    dark = (lab_l < 0.55 * _cheek_lightness(lab_l, shape, offset, iod)).astype(np.uint8)
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    keep = np.zeros(hw, np.uint8)
    centres = [shape[s].mean(0) + (0, 0.06 * iod) - offset for s in (EYE_L, EYE_R)]
    for c in centres:
        region = np.zeros(hw, np.uint8)
        cv2.ellipse(region, (int(round(c[0])), int(round(c[1]))), (int(0.48 * iod), int(0.3 * iod)), 0, 0, 360, 1, -1)
        region[:max(int(c[1] - 0.22 * iod), 0)] = 0
        pts = cv2.findNonZero(dark & region)
        if pts is not None and len(pts) >= 3:
            cv2.fillConvexPoly(keep, cv2.convexHull(pts), 1)
    yl, yr = centres[0][1], centres[1][1]
    bx0, bx1 = sorted((int(shape[39, 0] - offset[0]), int(shape[42, 0] - offset[0])))
    by0, by1 = int(min(yl, yr) - 0.2 * iod), int(max(yl, yr) + 0.05 * iod)
    bridge = np.zeros(hw, np.uint8)
    bridge[max(by0, 0):max(by1, 0), max(bx0, 0):max(bx1, 0)] = 1
    keep |= dark & bridge
    if not keep.any():
        return None
    k = max(int(round(0.03 * iod)) * 2 + 1, 3)
    keep = cv2.dilate(keep, np.ones((k, k), np.uint8)).astype(np.float32)
    return worn * np.clip(smooth(keep, max(feather * iod, 0.5)) * 1.5, 0.0, 1.0)


def _odd(v: float) -> int:
    return max(int(round(v)) // 2 * 2 + 1, 3)


def thin_lines(rgb: np.ndarray, iod: float, level: float = 14) -> np.ndarray:
    """[h,w] bool: the pixels of `rgb` on a thin line, dark or light: LAB lightness closed or
    opened over 0.06 eye distances changes by more than `level`."""
    lab_l = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2LAB)[..., 0]
    el = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (_odd(0.06 * iod),) * 2)
    return np.maximum(cv2.morphologyEx(lab_l, cv2.MORPH_BLACKHAT, el), cv2.morphologyEx(lab_l, cv2.MORPH_TOPHAT, el)) > level


@read_once
def glasses_worn(rgb: np.ndarray, shape: np.ndarray, iod: float, lo: float = 0.5, hi: float = 0.65) -> float:
    """In [0,1]: how surely the face of 68 points `shape` in `rgb` wears glasses, read off its own
    pixels: a frame's bridge is one thin line across the nose between the inner eye corners. Over
    that box (from 0.25 eye distances above the eyes' centres to 0.1 below; the face scaled to an
    eye distance of 96 pixels if larger), the widest run of connected `thin_lines` (the brows left
    out) over the box's width, ramped from `lo` to `hi`. A bare bridge has only pores, creases and
    hair strands, short and scattered: at most 0.50 on the wild photos' faces and the talking-head
    clips (Shea Whigham's portrait; at an eye distance of 64 thin metal frames fade, at 128 his
    pores join up to 0.57); framed glasses 0.70-1.0 on the clips; on 200 LFW faces all 10 above
    0.5 wear glasses or sunglasses, and lighter frames read 0.38-0.48 (Stoiber,
    Grassley). 0 with an eye distance under GLASSES_MIN_IOD."""
    if iod < GLASSES_MIN_IOD:
        return 0.0
    f = min(1.0, 96.0 / iod)
    cl, cr = shape[EYE_L].mean(0), shape[EYE_R].mean(0)
    bx0, bx1 = sorted((shape[39, 0], shape[42, 0]))
    by0, by1 = min(cl[1], cr[1]) - 0.25 * iod, max(cl[1], cr[1]) + 0.1 * iod
    m = 0.06 * iod + 2
    x0, y0 = int(max(bx0 - m, 0)), int(max(by0 - m, 0))
    x1, y1 = int(min(bx1 + m + 1, rgb.shape[1])), int(min(by1 + m + 1, rgb.shape[0]))
    if (x1 - x0) * f < 3 or (y1 - y0) * f < 3:
        return 0.0
    crop = rgb[y0:y1, x0:x1]
    if f < 1:  # read at an eye distance of 96: a big face's pores and creases are not lines there
        crop = cv2.resize(crop, (round((x1 - x0) * f), round((y1 - y0) * f)), interpolation=cv2.INTER_AREA)
    pts, e = (shape - (x0, y0)) * f, iod * f
    bx0, bx1, by0, by1 = (bx0 - x0) * f, (bx1 - x0) * f, (by0 - y0) * f, (by1 - y0) * f
    line = thin_lines(crop, e).astype(np.uint8)
    brows = np.zeros(line.shape, np.uint8)
    for b in (slice(17, 22), slice(22, 27)):
        cv2.polylines(brows, [np.round(pts[b]).astype(np.int32)], False, 1, thickness=max(int(0.12 * e), 1))
    line &= brows == 0
    bridge = line[max(int(by0), 0):int(by1), max(int(bx0), 0):int(bx1)]
    if bridge.size == 0:
        return 0.0
    n, _, stats, _ = cv2.connectedComponentsWithStats(cv2.dilate(bridge, np.ones((3, 3), np.uint8)), connectivity=8)
    span = stats[1:, cv2.CC_STAT_WIDTH].max() / bridge.shape[1] if n > 1 else 0.0
    return float(ramp(float(span), lo, hi))


def glasses_box(shape: np.ndarray, iod: float, pad: float) -> np.ndarray:
    """[4] x0, y0, x1, y1: a box holding `glasses_ring` of the face of 68 points `shape`, from the
    ellipses' sides or the outline, whichever is farther out, with `pad` pixels more all round."""
    cs = np.stack([shape[EYE_L].mean(0), shape[EYE_R].mean(0)])
    outline = shape[[0, 16], 0]
    return np.array([min(cs[:, 0].min() - 0.55 * iod, outline.min()) - pad, cs[:, 1].min() - 0.4 * iod - pad,
                     max(cs[:, 0].max() + 0.55 * iod, outline.max()) + pad, cs[:, 1].max() + 0.5 * iod + pad])


def glasses_ring(shape: np.ndarray, offset, hw, iod: float, feather: float) -> np.ndarray:
    """[h,w] in [0,1]: where a pair of glasses' frame lies about the face of 68 points `shape` (at
    `offset`): an ellipse about each eye (0.55 x 0.4 eye distances, its centre 0.05 under the
    eye's), the bridge between them and the arms out to the outline at eye level; feathered over
    `feather` eye distances."""
    m = np.zeros(hw, np.float32)
    cs = [shape[s].mean(0) - offset for s in (EYE_L, EYE_R)]
    for c in cs:
        cv2.ellipse(m, (int(round(c[0])), int(round(c[1] + 0.05 * iod))), (int(0.55 * iod), int(0.4 * iod)), 0, 0, 360, 1.0, -1)
    for e, o in ((36, 0), (45, 16)):  # the arms: the outer corner to the outline
        xa, xb = sorted((int(shape[e, 0] - offset[0]), int(shape[o, 0] - offset[0])))
        y = shape[e, 1] - offset[1]
        m[max(int(y - 0.15 * iod), 0):max(int(y + 0.1 * iod), 0), max(xa, 0):max(xb, 0)] = 1.0
    bx0, bx1 = sorted((int(shape[39, 0] - offset[0]), int(shape[42, 0] - offset[0])))
    by = min(cs[0][1], cs[1][1])
    m[max(int(by - 0.25 * iod), 0):max(int(by + 0.1 * iod), 0), max(bx0, 0):max(bx1, 0)] = 1.0
    return smooth(m, max(feather * iod, 0.5))
