"""Draw a bank face (face_bank.py) onto a target face at the target's own resolution.

For one target face with 68 landmarks T and a bank face with texture and shape A:
1. shape: N = T with its identity-bearing geometry (jaw, brows, nose, eye contours) moved towards
   A's by alpha, which falls to 0 as the head turns (a frontal jaw on a turned head smears);
   the 5 key points, the mouth and the eye openness stay T's (warp.identity_shape);
2. the target's own pixels are warped from T to N, so the new outline shows on the jaw and
   cheeks; the ring of the mesh stays put, so nothing outside it moves;
3. the bank face is warped from A to N and its colour matched to the target (LAB mean and std
   over the cheeks and nose);
4. a feathered alpha blend inside the face's landmark hull, leaving out the eyes (gaze and lids
   stay the target's) and an open mouth's interior (teeth, tongue).

Everything happens on the face's box in the frame at native resolution: no 112 px bottleneck.
Images are RGB uint8 [H,W,3]; shapes [68,2] float (x, y) in pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from ..faces.landmarks68 import EYE_L, EYE_R, INNER_LIPS, LIPS, five_points, mouth_opening, yaw_share
from .face_bank import AnchorFaceBank
from ..faces.detect import landmark_error
from .frame import IN_PLACE
from .warp import identity_shape, keypoint_shape, mesh, piecewise_affine, signed_areas

NOSE_BASE = slice(31, 36)
_MATCH_POINTS = [1, 2, 3, 4, 12, 13, 14, 15, 28, 29, 31, 35, 48, 54]  # cheeks, nose and upper lip


@dataclass
class RenderConfig:
    alpha: float = 1.5  # how far the identity-bearing geometry moves to the anchor's (frontal faces)
    unfold: bool = True  # moves that turn mesh triangles over are halved until none does (`unfold`)
    nose_base: float = 1.0  # the nose's lower points' (31-35) share of alpha
    jaw: float = 0.5  # the jaw's share of alpha (YuNet places the 5 points partly by the outline)
    yaw_full: float = 0.15  # yaw share (landmarks68.yaw_share) up to which alpha applies in full
    yaw_zero: float = 0.6  # ... and from which the target's geometry is kept
    squash_lo: float = 0.15  # bank-face triangles squashed to this share of their area are not drawn
    squash_hi: float = 0.35  # ... from this share, in full (squash_weight; 0: no such check)
    forehead: float = 0.35  # the blend region reaches this many eye distances above the brows
    feather: float = 0.12  # width of the blend's soft edge, as a share of the eye distance
    keep_eyes: float = 0.9  # the target's eye openings (iris, gaze) stay, the contour scaled by this; 0: the anchor's
    keep_mouth: float = 0.03  # mouth opening (inner-lip gap / eye distance) above which its interior stays
    mouth_lips: float = 1.0  # ... with this share of the lips' thickness around it (1: the whole lips; dlib reads pasted lips on an open mouth as closer)
    keep_anchor_mouth: bool = False  # ... and so where the anchor's own mouth is open (a real face's teeth)
    # The bank's 256 px texture has no detail finer than its pixels; where the face is drawn larger
    # than that, the target's own finer detail (pores, stubble, hair strands) is added, `detail`
    # times: what a Gaussian of `detail_sigma` texture pixels, at the face's scale, removes.
    detail: float = 1.0
    detail_sigma: float = 0.6
    chroma: float = 0.5  # share of the bank face's own colour detail kept; the rest: the target's, smoothed
    chroma_sigma: float = 0.15  # ... over this many eye distances
    light: float = 0.0  # the target's shading taken at this scale (x eye distance); 0: LAB mean/std only
    tone: float = 1.0  # share of the way the LAB mean and std go to the target's (a swap keeps some of the source's skin)
    # while the drawn mouth reads off (or the face out of place), draw_in_place draws again with these
    # changes in turn (default EXPRESSION_STEPS: the chin and nose base kept, then no geometry moved)
    expression_steps: tuple | None = None
    # Outside the inner features (brows raised by `skin_band` eye distances, eyes, nose, mouth; 0:
    # off) the drawing shows only where both it and the target are skin (colour near their own
    # cheeks'): a real source face brings its own fringe, cap or headband, and a target's hair over
    # the forehead or temples stays in front (`skin_band_weight`).
    skin_band: float = 0.0
    keypoints: float = 0.0  # share of the way the eyes, nose tip and mouth (the 5 key points) move to the anchor's too
    # the search that puts a photo's drawn face in place (draw_in_place): renderings, the error
    # (eye distances) it stops at and the largest texture shift of a key point (eye distances)
    still_tries: int = 3  # native.STILL_TRIES
    still_tolerance: float = 0.05
    still_limit: float = 0.2
    shade_chroma: float = 1.0  # share of the target's colour-with-lightness slope given to the bank face's shading (`chroma_slope`)
    sockets: float = 1.0  # share of the way a bank face darker than the target around the eyes is lifted to it (`lift_sockets`)


def effective_alpha(cfg: RenderConfig, shape: np.ndarray) -> float:
    yaw = yaw_share(five_points(shape))
    t = np.clip((cfg.yaw_zero - yaw) / max(cfg.yaw_zero - cfg.yaw_full, 1e-6), 0.0, 1.0)
    return float(cfg.alpha * t)


def unfold(shape: np.ndarray, new: np.ndarray, tris: np.ndarray, floor: float = 0.1, rounds: int = 4) -> np.ndarray:
    """`new` [68,2] with the moves of the points of mesh triangles that would turn over (or shrink
    below `floor` of their area on `shape`) scaled back, each just enough, so none does. The nose
    tip stays the target's while the bridge and nostrils move by alpha (x1.5), so the triangles
    29-30-31 and 29-30-35 turn over on a third of LFW faces: the warp then draws that patch twice,
    a sharp-edged light triangle beside the nose. The scale is the largest that keeps the area
    (bisection), so it changes smoothly with the shape: no jump from one video frame to the next.
    Triangles already flat on the target (a closed mouth's inner lips) are left out."""
    src = mesh(shape)
    move = mesh(new, ring_of=shape) - src  # the ring's move is 0
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
    a_src = signed_areas(src[tris])
    solid = np.abs(a_src) > 0.002 * iod * iod
    want = floor * a_src  # the least signed area a triangle keeps
    scale = np.ones(len(src), np.float32)
    for _ in range(rounds):
        sign_ok = (signed_areas((src + scale[:, None] * move)[tris]) - want) * np.sign(a_src) >= 0
        bad = np.flatnonzero(solid & ~sign_ok)
        if len(bad) == 0:
            break
        lo, hi = np.zeros(len(bad)), np.ones(len(bad))  # t: the share of the current moves kept
        for _ in range(12):
            t = (lo + hi) / 2
            pts = src[tris[bad]] + (t[:, None, None] * scale[tris[bad]][..., None]) * move[tris[bad]]
            ok = (signed_areas(pts) - want[bad]) * np.sign(a_src[bad]) >= 0
            lo, hi = np.where(ok, t, lo), np.where(ok, hi, t)
        cut = scale.copy()
        for k, tri in enumerate(tris[bad]):  # a point in several such triangles: the least
            cut[tri] = np.minimum(cut[tri], scale[tri] * lo[k])
        scale = cut
    return (src + scale[:, None] * move)[:len(new)].astype(np.float32)


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


def squash_weight(cfg: RenderConfig, src: np.ndarray, dst: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Per mesh triangle [T] in [0,1]: how fully the bank face may be drawn there, by how much the
    warp from its mesh `src` to the target's `dst` [80,2] squashes the triangle (area ratio over
    the face's overall one): 1 from `squash_hi`, 0 at `squash_lo` and on triangles turned over.
    On a turned head the far side of a frontal bank face is squashed into a sliver and folds at
    the nose: drawn, a smear with a sharp seam down the nose; there the target's own pixels stay."""
    a_src, a_dst = signed_areas(src[tris]), signed_areas(dst[tris])
    scale = np.abs(a_dst).sum() / (np.abs(a_src).sum() + 1e-6)
    ratio = a_dst / (a_src * scale + np.where(a_src >= 0, 1e-6, -1e-6))  # < 0: turned over
    return np.clip((ratio - cfg.squash_lo) / max(cfg.squash_hi - cfg.squash_lo, 1e-6), 0.0, 1.0)


def kept_lips(shape: np.ndarray, share: float) -> np.ndarray:
    """The outline of the kept mouth: the inner lips (share 0), the outer (1), or between, each
    outer point moved towards the nearest point of the inner outline (the lips thinned, the
    corners kept)."""
    if share >= 1:
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
    if cfg.keep_eyes > 0:
        for s in (EYE_L, EYE_R):
            c = shape[s].mean(0)
            keep = np.maximum(keep, _poly_mask(hw, c + (shape[s] - c) * cfg.keep_eyes, (x0, y0)))
    if mouth_opening(shape) > cfg.keep_mouth or anchor_open:
        keep = np.maximum(keep, _poly_mask(hw, kept_lips(shape, float(cfg.mouth_lips)), (x0, y0)))
    if keep.any():
        keep = smooth(keep, max(0.02 * iod, 0.5))
        m = m * (1 - np.clip(keep * 1.5, 0, 1))
    if squashed is not None and cfg.squash_hi > 0:
        src, dst, tris = squashed
        w = squash_weight(cfg, src, dst, tris)
        if (w < 1).any():
            full = np.ones(hw, np.float32)
            for t in np.flatnonzero(w < 1):  # the triangles' own weights, feathered like the hull
                cv2.fillConvexPoly(full, np.round((dst[tris[t]] - (x0, y0)) * 16).astype(np.int32), float(w[t]),
                                   lineType=cv2.LINE_AA, shift=4)
            m = m * np.minimum(smooth(full, sig), 1.0)
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


def skin_band_weight(cfg: RenderConfig, shape: np.ndarray, box, drawn: np.ndarray, target: np.ndarray,
                     region: np.ndarray) -> np.ndarray:
    """[h,w] in [0,1] over `box`: 1 over the inner face (brows raised by `cfg.skin_band` eye
    distances, eyes, nose and mouth, and a margin of 0.1 eye distances), outside it the product of
    the drawing's and the target's `skin_likeness`, smoothed: forehead, temples and cheeks show
    the drawing only where both are skin."""
    x0, y0, x1, y1 = box
    hw = drawn.shape[:2]
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))
    up = shape[27] - shape[8]
    brows = shape[17:27] + cfg.skin_band * iod * up / (np.linalg.norm(up) + 1e-6)
    inner = cv2.convexHull(np.concatenate([brows, shape[27:68]]).astype(np.float32))[:, 0]
    c = inner.mean(0)
    inner = c + (inner - c) * (1 + 0.1 * iod / (np.linalg.norm(inner - c, axis=1, keepdims=True) + 1e-6))
    low = smooth(_poly_mask(hw, inner, (x0, y0)), max(0.05 * iod, 0.5))
    skin = smooth(skin_likeness(drawn, region) * skin_likeness(target, region), max(0.03 * iod, 0.5))
    return low + (1 - low) * skin


def smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones on a downscaled copy (the result is smooth at that scale anyway,
    and a full-size blur of a 2-megapixel face takes seconds)."""
    f = int(sigma // 4)
    if f < 2:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(w // f, 1), max(h // f, 1)), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / f), (w, h), interpolation=cv2.INTER_LINEAR)


def lab_stats(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> np.ndarray:
    """[4,3]: the LAB mean and std of `a` over `region` [h,w] bool, then `b`'s (float LAB [h,w,3])."""
    out = np.zeros((4, 3), np.float32)
    m = region.astype(np.uint8)
    for k, img in enumerate((a, b)):
        mean, std = cv2.meanStdDev(img, mask=m)  # one pass, no boolean-index copies
        out[2 * k], out[2 * k + 1] = mean[:, 0], std[:, 0] + 1e-3
    return out


def chroma_slope(lab: np.ndarray, region: np.ndarray) -> np.ndarray:
    """[2]: how the a and b of float LAB `lab` change with L over `region` [h,w] bool (least
    squares), kept within [-0.3, 0.1]: skin turns more saturated as it darkens."""
    m = region.astype(np.uint8)
    mean, std = cv2.meanStdDev(lab, mask=m)
    if std[0, 0] < 1.0:
        return np.zeros(2, np.float32)
    px = lab[region]
    cov = ((px[:, 1:] - mean[1:, 0]) * (px[:, :1] - mean[0, 0])).mean(0)
    return np.clip(cov / std[0, 0] ** 2, -0.3, 0.1).astype(np.float32)


def match_colour(src: np.ndarray, ref: np.ndarray, region: np.ndarray, light_sigma: float = 0.0,
                 chroma: float = 1.0, chroma_sigma: float = 0.0, stats=None, tone: float = 1.0,
                 shade_chroma: float = 1.0) -> np.ndarray:
    """`src` (float RGB) with its LAB mean and std over `region` [h,w] bool set to `ref`'s.

    The std ratio is kept within [0.7, 1.4] ([0, 1.4] for chroma): a wider one amplifies the average's faint ghosts into
    colour casts. With `light_sigma` > 0 the lightness also takes `ref`'s shading at that scale
    (pixels): where the light falls on the target's head, not the anchor donors'. With
    `chroma` < 1 only that share of the anchor's own colour variation is kept and the rest is the
    target's colour smoothed over `chroma_sigma` pixels: averaged (and caricatured) faces carry
    greenish or purple casts around the eyes that no real face has. `stats`: a function given the
    measured statistics (`lab_stats`) that returns the ones to use (a video track smooths them).
    """
    a = cv2.cvtColor(np.clip(src, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
    b = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float32)
    if region.sum() < 16:
        return src
    ma, sa, mb, sb = lab_stats(a, b, region) if stats is None else stats(lab_stats(a, b, region))
    # chroma may shrink to nothing (a grey photo gets a grey face); lightness contrast only so far
    ratio = np.clip(sb / sa, (0.7, 0.0, 0.0), 1.4)
    if tone != 1.0:
        ratio, mb = 1 + tone * (ratio - 1), ma + tone * (mb - ma)
    a = (a - ma) * ratio + mb
    if light_sigma > 0:
        a[..., 0] += smooth(b[..., 0] - a[..., 0], light_sigma)
    if chroma < 1 and chroma_sigma > 0:
        own = a[..., 1:] - smooth(a[..., 1:], chroma_sigma)
        a[..., 1:] = smooth(b[..., 1:], chroma_sigma) + chroma * own
        # The target's smoothed colour belongs to its own shading: where the bank face is darker
        # than the target there (its averaged shading), skin keeps the target's colour of a darker
        # patch, which is more saturated; without it those patches read grey (group_t1).
        a[..., 1:] += shade_chroma * chroma_slope(b, region) * np.clip(a[..., 0] - smooth(b[..., 0], chroma_sigma), -20, 20)[..., None]
    return cv2.cvtColor(np.clip(a, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)


def lift_sockets(anchor: np.ndarray, ref: np.ndarray, shape: np.ndarray, iod: float, strength: float = 1.0,
                 sigma: float = 0.12) -> None:
    """Where the bank face `anchor` (float RGB [h,w,3], in place) is darker than the target `ref`
    around the eyes, raise it towards the target by `strength` (a gain on all three channels, so
    the shading's own colour stays): averages of six donors have dark, hollow sockets (their lids and lashes never
    line up), which a person reads as sunken or tired eyes (Shea Whigham, Zakayev, Kate Siegel).
    Both are compared smoothed over `sigma` eye distances, so only the shading changes, not the
    bank face's detail; the lift is added alike to R, G and B (grey light, no colour cast); `shape` [68,2] is the drawn shape in the patch's pixels."""
    h, w = anchor.shape[:2]
    rx, ry = 0.6 * iod, 0.42 * iod  # the socket: lids, the brow's underside and the upper cheek
    for s in (EYE_L, EYE_R):
        c = shape[s].mean(0)
        x0, y0 = int(max(c[0] - rx, 0)), int(max(c[1] - ry, 0))
        x1, y1 = int(min(c[0] + rx + 1, w)), int(min(c[1] + ry + 1, h))
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        a, b = anchor[y0:y1, x0:x1], ref[y0:y1, x0:x1]
        la = smooth(a.mean(2), sigma * iod) + 1.0
        lb = smooth(b.mean(2), sigma * iod) + 1.0
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        ell = np.clip(1.0 - ((xx - c[0]) / rx) ** 2 - ((yy - c[1]) / ry) ** 2, 0, 1)  # 1 at the centre, 0 at the rim
        gain = strength * ell * (np.clip(lb / la, 1.0, 1.6) - 1.0)
        a += (gain * la)[..., None]  # the same on all three channels: a multiplied one turns lids orange


class AnchorFaceRenderer:
    """`render(rgb, shape, index)`: a copy of `rgb` with the face of 68 points `shape` given the
    bank face `index`. Pixels outside the face's mesh ring are left bit-exact."""

    def __init__(self, bank: AnchorFaceBank, config: RenderConfig | None = None):
        self.bank = bank
        self.cfg = config or RenderConfig()

    def new_shape(self, shape: np.ndarray, index: int) -> np.ndarray:
        new = identity_shape(shape, self.bank.shapes[index], effective_alpha(self.cfg, shape), self.cfg.jaw)
        if self.cfg.keypoints > 0:  # the proportions the 5 key points carry (a swap: the source's)
            new = keypoint_shape(new, self.bank.shapes[index], self.cfg.keypoints, target=shape)
        if self.cfg.nose_base != 1.0:  # the nose's lower points: their share of the move
            new[NOSE_BASE] = shape[NOSE_BASE] + self.cfg.nose_base * (new[NOSE_BASE] - shape[NOSE_BASE])
        return unfold(shape, new, self.bank.triangles) if self.cfg.unfold else new

    def render(self, rgb: np.ndarray, shape: np.ndarray, index: int, nudge: np.ndarray | None = None) -> np.ndarray:
        """A copy of `rgb` with the face drawn (`draw`, pasted)."""
        out = rgb.copy()
        self.draw(rgb, shape, index, nudge).paste(out)
        return out

    def draw(self, rgb: np.ndarray, shape: np.ndarray, index: int, nudge: np.ndarray | None = None,
             colour=None, coarse: bool = False) -> "Drawing":
        """The face of 68 points `shape` given bank face `index`, as a patch over its mesh's box.

        `nudge` [5,2] (pixels): move the bank face's texture, not the target's pixels, by the
        affine map that shifts its 5 key points so (see `render_in_place`). `colour`: a function
        given the colour match's LAB statistics [4,3] (`match_colour`) that returns the ones to
        use (a video track smooths them along the track). `coarse` (video): a face drawn at f >= 2
        times the bank's scale takes the bank face and its colour match on a grid f times coarser
        (its texture has nothing finer), the rest at full size."""
        cfg, tris = self.cfg, self.bank.triangles
        hw = rgb.shape[:2]
        shape = shape.astype(np.float32)
        new = self.new_shape(shape, index)
        # 2. the target's pixels follow the new outline (the ring, T's own, stays put)
        src_mesh, dst_mesh = mesh(shape), mesh(new, ring_of=shape)
        moved, covered, box = piecewise_affine(rgb, src_mesh, dst_mesh, tris, hw)
        x0, y0, x1, y1 = box
        if x1 - x0 < 4 or y1 - y0 < 4:
            return Drawing(moved, np.zeros(moved.shape[:2], bool), box)
        # 3. the bank face on the new shape. It shows only inside the face hull (the blend mask is
        # 0 outside), so it is warped, coloured and blended over the hull's box alone (a third to a
        # half of the ring's), with a margin for the colour match's smoothing.
        if nudge is not None:
            k = five_points(new)
            a, *_ = np.linalg.lstsq(np.c_[k, np.ones(5)], k + nudge, rcond=None)  # [3,2] affine
            new = (np.c_[new, np.ones(len(new))] @ a).astype(np.float32)
        iod = float(np.linalg.norm(new[EYE_L].mean(0) - new[EYE_R].mean(0)))
        hull = face_hull(new, cfg.forehead)
        pad = 3 * max(cfg.chroma_sigma, cfg.light) * iod + 2
        lo, hi = np.floor(hull.min(0) - pad).astype(int), np.ceil(hull.max(0) + pad).astype(int)
        sx0, sy0, sx1, sy1 = max(lo[0], x0), max(lo[1], y0), min(hi[0], x1), min(hi[1], y1)
        if sx1 - sx0 < 4 or sy1 - sy0 < 4:
            return Drawing(moved, covered, box)
        sub = moved[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
        tex, a_shape = self.bank.textures[index].astype(np.float32), self.bank.shapes[index]
        scale = iod / float(np.linalg.norm(a_shape[EYE_L].mean(0) - a_shape[EYE_R].mean(0)))
        a_mesh, n_mesh = mesh(a_shape), mesh(new, ring_of=shape)
        h, w = sub.shape[:2]
        f = max(int(scale), 1) if coarse else 1
        anchor_open = cfg.keep_anchor_mouth and mouth_opening(a_shape) > cfg.keep_mouth
        if f == 1:
            anchor, _, _ = piecewise_affine(tex, a_mesh, n_mesh, tris, hw, box=(sx0, sy0, sx1, sy1), border=cv2.BORDER_REPLICATE)
            region = _poly_mask((h, w), cv2.convexHull(new[_MATCH_POINTS])[:, 0], (sx0, sy0)) > 0.5
            anchor = match_colour(anchor, sub, region, cfg.light * iod, cfg.chroma, cfg.chroma_sigma * iod, stats=colour,
                                  tone=cfg.tone, shade_chroma=cfg.shade_chroma)
        else:
            # Drawn f times larger than the texture: the bank face holds nothing finer than f
            # pixels, so it is warped and colour-matched on a grid f times coarser (f^2 fewer
            # pixels) and resized up; the target's finer detail is added at full size below.
            gw, gh = -(-w // f), -(-h // f)
            k = np.array([gw / w, gh / h], np.float32)
            small = lambda p: (p - (sx0, sy0) + 0.5) * k - 0.5  # noqa: E731  (cv2.resize's pixel centres)
            anchor, _, _ = piecewise_affine(tex, a_mesh, small(n_mesh), tris, (gh, gw), box=(0, 0, gw, gh),
                                            border=cv2.BORDER_REPLICATE)
            ref = cv2.resize(sub, (gw, gh), interpolation=cv2.INTER_AREA)
            region = _poly_mask((gh, gw), small(cv2.convexHull(new[_MATCH_POINTS])[:, 0]), (0, 0)) > 0.5
            anchor = match_colour(anchor, ref, region, cfg.light * iod / f, cfg.chroma, cfg.chroma_sigma * iod / f, stats=colour,
                                  tone=cfg.tone, shade_chroma=cfg.shade_chroma)
            anchor = cv2.resize(anchor, (w, h), interpolation=cv2.INTER_LINEAR)
            # the blend mask too (it is smooth at that scale), cut to the hull at full size
            m = cv2.resize(blend_mask(cfg, small(new), (0, 0, gw, gh), (gh, gw), squashed=(a_mesh, small(n_mesh), tris),
                                      anchor_open=anchor_open), (w, h),
                           interpolation=cv2.INTER_LINEAR)
            m *= _poly_mask((h, w), hull, (sx0, sy0))
        mf = sub.astype(np.float32)
        if cfg.sockets > 0:
            lift_sockets(anchor, mf, new - (sx0, sy0), iod, cfg.sockets)
        if cfg.detail > 0 and scale > 1.2:  # drawn larger than the texture: it lacks the finest band
            anchor += cfg.detail * (mf - cv2.GaussianBlur(mf, (0, 0), cfg.detail_sigma * scale))
        # 4. feathered blend inside the hull; the moved target elsewhere inside the ring
        if f == 1:
            m = blend_mask(cfg, new, (sx0, sy0, sx1, sy1), (h, w), squashed=(a_mesh, n_mesh, tris), anchor_open=anchor_open)
        if cfg.skin_band > 0:
            region = _poly_mask((h, w), cv2.convexHull(new[_MATCH_POINTS])[:, 0], (sx0, sy0)) > 0.5
            m = m * skin_band_weight(cfg, new, (sx0, sy0, sx1, sy1), anchor, sub, region)
        m = m[..., None]
        anchor -= mf
        anchor *= m
        anchor += mf
        sub[...] = np.clip(np.rint(anchor), 0, 255).astype(np.uint8)
        return Drawing(moved, covered, box)


class Drawing:
    """A drawn face: `patch` [h,w,3] uint8 over `box` (x0, y0, x1, y1), of which the pixels
    `covered` [h,w] bool are the drawing (the rest of the box is not touched)."""

    def __init__(self, patch: np.ndarray, covered: np.ndarray, box):
        self.patch, self.covered, self.box = patch, covered, tuple(int(v) for v in box)
        self.under: np.ndarray | None = None  # the box's pixels before `paste`

    def view(self, img: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        return img[y0:y1, x0:x1]

    def paste(self, img: np.ndarray) -> None:
        """Draw onto `img` in place, keeping what was under the box (`lift` puts it back)."""
        v = self.view(img)
        self.under = v.copy()
        cv2.copyTo(self.patch, self.covered.view(np.uint8), v)  # in place on the view; ~100x np.copyto(where=)

    def lift(self, img: np.ndarray) -> None:
        """Undo `paste`."""
        if self.under is not None:
            self.view(img)[...] = self.under
            self.under = None


def render_in_place(renderer: AnchorFaceRenderer, rgb: np.ndarray, shape: np.ndarray, index: int, kps: np.ndarray,
                    find, tolerance: float = 0.05, tries: int = 2, landmarker=None) -> tuple[np.ndarray, np.ndarray | None]:
    """A copy of `rgb` with the face drawn by `draw_in_place`, and the nudge it was drawn with."""
    out = rgb.copy()
    _, nudge = draw_in_place(renderer, out, shape, index, kps, find, tolerance, tries, landmarker=landmarker)
    return out, nudge


def draw_in_place(renderer: AnchorFaceRenderer, img: np.ndarray, shape: np.ndarray, index: int, kps: np.ndarray,
                  find, tolerance: float = 0.05, tries: int = 2, colour=None, coarse: bool = False,
                  start: np.ndarray | None = None, step: float = 1.0, limit: float = 0.2, landmarker=None,
                  mouth_tolerance: float = 0.04) -> tuple[Drawing, np.ndarray | None]:
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
    the share of the error found that each new rendering corrects; `limit`: the largest shift of
    a key point, in eye distances (a large one shows: the bank face's brows and lids beside the
    target's kept eyes).

    With a `landmarker` (68 points, `Landmarker68`: `landmarker(image, kps [1,5,2]) -> [1,68,2]`)
    the expression is checked too: where the drawn mouth reads more than `mouth_tolerance`
    (opening / eye distance) off the original's, the face is drawn again by EXPRESSION_STEPS, and
    of the drawings in place (frame.IN_PLACE) the one whose mouth reads closest is kept. dlib reads a
    chin and a nose base moved towards the bank face's as a closing mouth (12 LFW faces whose
    mouth read 0.09-0.37 off: 0.01-0.06 with no geometry moved, the bank face's texture alone).
    """
    search = dict(tolerance=tolerance, tries=tries, colour=colour, coarse=coarse, start=start, step=step, limit=limit)
    drawn, used, err, got = _nudged(renderer, img, shape, index, kps, find, **search)
    if landmarker is None or got is None:
        return drawn, used
    want = mouth_opening(shape)

    def reading(got: np.ndarray, err: float) -> tuple[bool, float]:  # (out of place, mouth off by)
        return err > IN_PLACE, abs(mouth_opening(landmarker(img, got[None])[0]) - want)

    best, best_key = (drawn, used), reading(got, err)
    steps = EXPRESSION_STEPS if renderer.cfg.expression_steps is None else renderer.cfg.expression_steps
    for change in steps:  # invariant: `best` is what is drawn on img
        if not best_key[0] and best_key[1] <= mouth_tolerance:
            break
        best[0].lift(img)
        r = AnchorFaceRenderer(renderer.bank, replace(renderer.cfg, **change))
        drawn, used, err, got = _nudged(r, img, shape, index, kps, find, **search)
        key = None if got is None else reading(got, err)
        if key is not None and key < best_key:
            best, best_key = (drawn, used), key
        else:
            drawn.lift(img)
            best[0].paste(img)
    return best


# The drawings tried, in turn, while the mouth reads off: the chin and the nose base left where
# they were (the points around the mouth), then also the target's own lips (a closed mouth too:
# a bank face's parted lips read as an open mouth), then no identity geometry at all.
EXPRESSION_STEPS = ({"jaw": 0.0, "nose_base": 0.0}, {"jaw": 0.0, "nose_base": 0.0, "keep_mouth": -1.0},
                    {"alpha": 0.0, "keep_mouth": -1.0})


def _nudged(renderer, img, shape, index, kps, find, tolerance, tries, colour, coarse, start, step, limit):
    """draw_in_place's search for one renderer: (the drawing left on img, its nudge, its error,
    the points found [5,2] or None)."""
    iod = float(np.linalg.norm(kps[1] - kps[0])) + 1e-6
    nudge = np.zeros((5, 2), np.float32) if start is None else start.astype(np.float32)
    best, best_err, drawn = None, np.inf, None
    for _ in range(tries):
        used = nudge.copy() if nudge.any() else None
        if drawn is not None:
            drawn.lift(img)  # every rendering starts from the original pixels
        drawn = renderer.draw(img, shape, index, nudge=used, colour=colour, coarse=coarse)
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
    sizes around it: cheap on large frames; None: the whole image), the face overlapping `box`
    best, its 5 points in image pixels."""
    from ..faces.detect import match_face

    def find(img: np.ndarray):
        if margin is None:
            d = detector(img)
            j = match_face(box, d.boxes)
            return None if j is None else d.landmarks[j]
        w, h = box[2] - box[0], box[3] - box[1]
        x0, y0 = int(max(box[0] - margin * w, 0)), int(max(box[1] - margin * h, 0))
        x1, y1 = int(min(box[2] + margin * w, img.shape[1])), int(min(box[3] + margin * h, img.shape[0]))
        d = detector(np.ascontiguousarray(img[y0:y1, x0:x1]))
        j = match_face(box - np.array([x0, y0, x0, y0], np.float32), d.boxes)
        return None if j is None else d.landmarks[j] + np.array([x0, y0], np.float32)

    return find


class AnchorFaceGenerator(torch.nn.Module):
    """The renderer behind the face-generator interface (models/registry.py) as `anchor-face`.

    The pipeline (frame.py) sees `renderer` and draws at the face's native resolution; `forward`
    serves callers that only have aligned crops (the attack trainer, evaluations): the same
    rendering on the crop, with the 68 points found on it.
    """

    resolution = 112
    identity_dim = 128
    identity_encoder = None  # SFace: the bank's anchors are SFace embeddings
    counterfactual = False  # draws the anchor's face; verification checks it left the original
    # Heads turned further (nose off the eyes' midline by more than this share of the eye
    # distance, ~30 degrees) get the fallback: a frontal bank face warped onto a three-quarter
    # view smears and folds where the wild photos' turned heads showed it (group_t1).
    max_profile = 0.35
    # Faces whose 68 points disagree with the detector's 5 by more than this (`fit_error`) get the
    # fallback: dlib's fit has failed (a head tilted and looking down, group_t1; a neighbour's face
    # under the box), and the bank face drawn on it is grotesque. LFW fold 1: 99th percentile 0.24.
    max_fit = 0.3

    def __init__(self, bank: AnchorFaceBank, config: RenderConfig | None = None):
        super().__init__()
        from ..faces.landmarks68 import Landmarker68

        from ..faces.identity import DlibEvaluator

        self.bank = bank
        self.renderer = AnchorFaceRenderer(bank, config)
        self.landmarker = Landmarker68()
        self._dlib = DlibEvaluator()

    def descriptor(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """dlib's descriptor of a face: what the bank's sex classifier reads (in memory only)."""
        return self._dlib.embed(rgb, box)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None):
        """x [B,3,S,S] in [-1,1], z [B,128] unit -> x_a, m [B,1,S,S], x_hat (= x_a: outside the
        mesh the rendering is the input itself)."""
        from ..faces.align import template
        from ..faces.identity import to_tensor, to_uint8

        crops = to_uint8(x)
        kps = template(x.shape[-1])[None]
        out, masks = [], []
        for crop, zi in zip(crops, z.cpu().numpy()):
            shape = self.landmarker(crop, kps)[0]
            out.append(self.renderer.render(crop, shape, self.bank.index_of(zi)))
            masks.append(np.any(out[-1] != crop, axis=2).astype(np.float32))
        x_a = to_tensor(np.stack(out)).to(x.device)
        m = torch.from_numpy(np.stack(masks))[:, None].to(x.device)
        return x_a, m, x_a


def load_anchor_face_generator(model: str | None = None, device="cpu") -> AnchorFaceGenerator:
    """Registry factory: `model` is a bank .safetensors (default: the shipped one)."""
    from ..weights import DEFAULT_FACE_BANK

    return AnchorFaceGenerator(AnchorFaceBank.load(model or DEFAULT_FACE_BANK))
