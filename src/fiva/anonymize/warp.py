"""Piecewise-affine warps on the 68-point face mesh, and moving a face's shape towards another's.

The mesh is the 68 dlib points plus a ring of 12 points around the face (`ring`), triangulated
once (`triangulate`, Delaunay on a reference shape) so every face shares one topology. A warp
maps each destination triangle back to its source triangle (`piecewise_affine`); pixels outside
the ring are never touched, which is what keeps the rest of the frame bit-exact.

Images are [H,W,C] arrays (uint8 or float32); points are [P,2] float (x, y) in pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..faces.align import similarity_transform, transform_points
from ..faces.landmarks68 import BROW_EYE, BROWS, EYE_L, EYE_R, JAW, NOSE, NOSE_TIP, brow_poses, face_up, five_points

RING_POINTS = 12
RING_SCALE = 1.5  # the ring's radius over the face's (centroid to farthest landmark)


def ring(shape: np.ndarray, scale: float = RING_SCALE) -> np.ndarray:
    """RING_POINTS points [12,2] on a circle around the shape, turned with the eye axis, so the
    same ring point sits at the same place relative to the face in every image."""
    c = shape.mean(0)
    r = scale * float(np.linalg.norm(shape - c, axis=1).max())
    k = five_points(shape)
    ang = np.arctan2(*(k[1] - k[0])[::-1])
    t = ang + np.linspace(0, 2 * np.pi, RING_POINTS, endpoint=False)
    return (c + r * np.stack([np.cos(t), np.sin(t)], 1)).astype(np.float32)


def mesh(shape: np.ndarray, ring_of: np.ndarray | None = None) -> np.ndarray:
    """The 80 mesh points [80,2]: the shape and the ring of `ring_of` (default: the shape)."""
    return np.concatenate([shape, ring(shape if ring_of is None else ring_of)]).astype(np.float32)


def triangulate(points: np.ndarray) -> np.ndarray:
    """Delaunay triangles [T,3] (indices into points) of a reference point set [P,2]."""
    lo, hi = points.min(0) - 10, points.max(0) + 10
    sub = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]) + 1, int(hi[1] - lo[1]) + 1))
    for p in points:
        sub.insert((float(p[0]), float(p[1])))
    tris = []
    for t in sub.getTriangleList().reshape(-1, 3, 2):
        d = np.linalg.norm(points[None] - t[:, None], axis=2)  # [3,P]
        idx = d.argmin(1)
        if d[np.arange(3), idx].max() < 1e-3 and len(set(idx)) == 3:
            tris.append(idx)
    return np.array(tris, np.int32)


def signed_areas(corners: np.ndarray) -> np.ndarray:
    """Twice the signed area [T] of triangles given by their corners [T,3,2]: its sign flips when a
    triangle turns over."""
    e1, e2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]


def piecewise_affine(src: np.ndarray, src_pts: np.ndarray, dst_pts: np.ndarray, tris: np.ndarray,
                     out_hw: tuple[int, int], box: tuple[int, int, int, int] | None = None,
                     border: int = cv2.BORDER_REFLECT) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int, int]]:
    """Warp `src` so its mesh `src_pts` lands on `dst_pts` in an output of size `out_hw`.

    Only the bounding box of the destination mesh (clipped to the output, or `box`) is computed.
    Returns the warped patch, a [h,w] bool map of pixels covered by a triangle, and the patch's
    box (x0, y0, x1, y1) in output pixels.
    """
    h, w = out_hw
    if box is None:
        lo = np.floor(dst_pts.min(0)).astype(int)
        hi = np.ceil(dst_pts.max(0)).astype(int) + 1
        box = (max(lo[0], 0), max(lo[1], 0), min(hi[0], w), min(hi[1], h))
    x0, y0, x1, y1 = box
    pw, ph = max(x1 - x0, 1), max(y1 - y0, 1)
    # The map is piecewise linear: on large faces it is computed on a grid of at most ~256 px a
    # side and resized (bilinear), which is exact inside triangles and ~free next to a full pass.
    step = max(1, int(np.ceil(max(pw, ph) / 256)))
    gw, gh = -(-pw // step), -(-ph // step)
    # grid cell i samples pixel x0 + (i + 0.5) * step - 0.5: the centre convention of cv2.resize
    to_grid = lambda p: (p - (x0, y0) + 0.5) / step - 0.5  # noqa: E731
    label = np.zeros((gh, gw), np.int32)
    mats = np.zeros((len(tris) + 1, 2, 3), np.float32)
    shift = 4  # sub-pixel triangle corners
    # every triangle's affine map (destination -> source) at once: S [3 corners] = M [D; 1]
    d_all, s_all = dst_pts[tris].astype(np.float64), src_pts[tris].astype(np.float64)  # [T,3,2]
    ok = np.abs(signed_areas(d_all)) >= 1e-3
    dh = np.concatenate([d_all, np.ones((len(tris), 3, 1))], 2).transpose(0, 2, 1)  # [T,3,3] columns (x, y, 1)
    dh[~ok] = np.eye(3)
    mats[1:] = np.where(ok[:, None, None], s_all.transpose(0, 2, 1) @ np.linalg.inv(dh), 0)
    polys = np.round(to_grid(d_all) * (1 << shift)).astype(np.int32)
    for t in np.flatnonzero(ok):
        cv2.fillConvexPoly(label, polys[t], int(t) + 1, lineType=cv2.LINE_8, shift=shift)
    if step > 1:  # grow triangles by a grid cell so the resized map covers their edges
        grown = cv2.dilate(label.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
        label = np.where(label > 0, label, grown)
    ys, xs = (np.mgrid[0:gh, 0:gw].astype(np.float32) + 0.5) * step - 0.5
    xs += x0
    ys += y0
    map_x, map_y = _affine_maps(mats, label, xs, ys)
    covered = label > 0
    if step > 1:
        full = (step * gw, step * gh)
        map_x = cv2.resize(map_x, full, interpolation=cv2.INTER_LINEAR)[:ph, :pw]
        map_y = cv2.resize(map_y, full, interpolation=cv2.INTER_LINEAR)[:ph, :pw]
        # what the mesh covers, exactly at full resolution: its hull (the grown grid spills over)
        hull = cv2.convexHull(dst_pts.astype(np.float32))[:, 0]
        covered = np.zeros((ph, pw), np.uint8)
        cv2.fillConvexPoly(covered, np.round((hull - (x0, y0)) * (1 << shift)).astype(np.int32), 1, cv2.LINE_8, shift)
        covered = covered > 0
        _exact_about_thin(map_x, map_y, mats, d_all, ok, (x0, y0), step, shift)
    else:
        map_x, map_y, covered = map_x[:ph, :pw], map_y[:ph, :pw], covered[:ph, :pw]
    map_x[~covered], map_y[~covered] = -1, -1
    out = cv2.remap(src, map_x, map_y, cv2.INTER_LINEAR, borderMode=border)
    return out, covered, (x0, y0, x0 + pw, y0 + ph)


def _affine_maps(mats: np.ndarray, label: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where each output pixel (xs, ys) samples the source: the affine map `mats` [T+1,2,3] of its
    triangle `label` (0: none)."""
    return (mats[label, 0, 0] * xs + mats[label, 0, 1] * ys + mats[label, 0, 2],
            mats[label, 1, 0] * xs + mats[label, 1, 1] * ys + mats[label, 1, 2])


def _exact_about_thin(map_x: np.ndarray, map_y: np.ndarray, mats: np.ndarray, d_all: np.ndarray, ok: np.ndarray,
                      origin, step: int, shift: int) -> None:
    """Put the exact map, pixel by pixel, in place of the coarse grid's about triangles thinner than
    two grid cells (`piecewise_affine` on a face larger than its grid). A closed mouth's inner-lip
    triangles are a pixel or two high: the grid missed them or took their neighbours' maps, and
    the resized map blended the upper lip's map with the lower's across them, a stepped, dark line
    with detached blocks along a big face's closed lips (portrait_shea_whigham at 1:1)."""
    area2 = np.abs(signed_areas(d_all))
    edges = np.linalg.norm(d_all - np.roll(d_all, 1, axis=1), axis=2).max(1)
    thin = ok & (area2 / np.maximum(edges, 1e-6) < 2 * step)
    if not thin.any():
        return
    ph, pw = map_x.shape
    pts = d_all[thin].reshape(-1, 2) - origin
    pad = 3 * step
    bx0, by0 = (max(int(np.floor(v)) - pad, 0) for v in pts.min(0))
    bx1, by1 = int(min(np.ceil(pts[:, 0].max()) + pad, pw)), int(min(np.ceil(pts[:, 1].max()) + pad, ph))
    if bx1 <= bx0 or by1 <= by0:
        return
    label = np.zeros((by1 - by0, bx1 - bx0), np.int32)
    local = d_all - (origin[0] + bx0, origin[1] + by0)
    polys = np.round(local * (1 << shift)).astype(np.int32)
    lo, hi = d_all.min(1) - origin, d_all.max(1) - origin
    near = ok & (hi[:, 0] >= bx0) & (lo[:, 0] < bx1) & (hi[:, 1] >= by0) & (lo[:, 1] < by1)
    for t in np.flatnonzero(near & ~thin):
        cv2.fillConvexPoly(label, polys[t], int(t) + 1, lineType=cv2.LINE_8, shift=shift)
    # thin triangles last, each taking only the pixels whose centres it contains: a closed mouth's
    # inner-lip triangles (1-2 px high) show, and a sliver a third of a pixel high takes no stair
    # of pixels beside it (its map, carried beyond it, sampled the bank face far off there: a
    # dotted light line along Kate Siegel's drawn upper lip)
    for t in np.flatnonzero(thin):
        _fill_centres(label, local[t], int(t) + 1)
    ys, xs = np.nonzero(label)
    px, py = (xs + bx0 + origin[0]).astype(np.float32), (ys + by0 + origin[1]).astype(np.float32)
    map_x[by0 + ys, bx0 + xs], map_y[by0 + ys, bx0 + xs] = _affine_maps(mats, label[ys, xs], px, py)


def _fill_centres(label: np.ndarray, corners: np.ndarray, value: int) -> None:
    """Set `label` [h,w] to `value` at the pixels whose centres (x, y) lie in the triangle
    `corners` [3,2] (pixel coordinates; on an edge counts as in)."""
    h, w = label.shape
    x0, y0 = (max(int(np.ceil(v)), 0) for v in corners.min(0))
    x1, y1 = int(min(np.floor(corners[:, 0].max()) + 1, w)), int(min(np.floor(corners[:, 1].max()) + 1, h))
    if x1 <= x0 or y1 <= y0:
        return
    ys, xs = np.mgrid[y0:y1, x0:x1]
    a, b, c = corners
    sign = np.sign((b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]))
    inside = np.ones(xs.shape, bool)
    for p, q in ((a, b), (b, c), (c, a)):  # each edge's side, as the whole triangle's
        inside &= sign * ((q[0] - p[0]) * (ys - p[1]) - (q[1] - p[1]) * (xs - p[0])) >= -1e-6
    label[y0:y1, x0:x1][inside] = value


def _rotation(shape: np.ndarray) -> np.ndarray:
    """2x2 rotation taking image axes to the face's (x along the eye axis)."""
    k = five_points(shape)
    e = (k[1] - k[0]) / (np.linalg.norm(k[1] - k[0]) + 1e-6)
    return np.array([[e[0], e[1]], [-e[1], e[0]]], np.float32)


# How far each nose point (27-35) moves with the nose tip, which stays the target's (`identity_shape`):
# the lower nose (29-35) keeps the anchor's shape about the tip, the top of the bridge (27) between
# the eyes does not follow it.
NOSE_FOLLOW = np.array([0.0, 0.5, 1, 1, 1, 1, 1, 1, 1], np.float32)


def identity_shape(target: np.ndarray, anchor: np.ndarray, alpha: float, jaw: float = 1.0,
                   nose_follow: float = 1.0, brow_move: float = np.inf, brow_floor: bool = False,
                   open_jaw: bool = True) -> np.ndarray:
    """The target's shape [68,2] with its identity-bearing geometry moved towards the anchor's.

    The anchor's shape is first aligned on the target's 5 key points (`placed_anchor`; an open
    mouth's as if closed). Jaw, brows and nose then move by `alpha` towards it; each eye takes the
    anchor's contour (by `alpha`) but keeps the target's centre and openness (the jaw moves by
    `jaw` x alpha); the nose tip and the whole mouth stay the target's, so the 5 key points, the
    mouth opening and the expression are kept.

    The nose moves about its kept tip: its lower points (29-35) take the anchor's shape relative to
    the anchor's tip, not the anchor's place (`nose_follow` x NOSE_FOLLOW; 0: the place). The 5-point
    fit leaves the anchor's tip off the target's, typically by 0.05-0.1 eye distances along the nose;
    moved by alpha with the tip left behind, the bridge (29) fell onto the tip and the nostrils
    (31-35) moved away from it (or the reverse): the bank face's thin band of shading under its tip,
    stretched 2x over the target's tip between straight triangle edges, drew a dark, sharp-edged
    diamond on the nose (liveportrait_d13), and on a third of LFW faces triangles 29-30-31/35
    turned over (`anchor_face.unfold`).

    Along the face's vertical the brows move by at most `brow_move` eye distances (default: no
    limit). A large difference in brow height is mostly expression: raised brows moved 1.5x the
    way down to a bank face's were drawn as an angry V (Alfonso Cuarón, LFW).
    With `brow_floor`, no brow comes lower over its eye, nor its inner end lower against its outer
    end, than in the lower of the two faces (`_brow_floor`): the brows take the anchor's shape,
    not a frown neither face has.
    """
    a = placed_anchor(target, anchor, open_jaw)
    out = target.astype(np.float32).copy()
    for s, f in ((JAW, jaw), (BROWS, 1.0), (NOSE, 1.0)):
        out[s] += f * alpha * (a[s] - target[s])
    out[NOSE] -= (nose_follow * alpha * NOSE_FOLLOW)[:, None] * (a[NOSE_TIP] - target[NOSE_TIP])
    out[NOSE_TIP] = target[NOSE_TIP]
    rot = _rotation(target)
    if np.isfinite(brow_move):
        iod = float(np.linalg.norm(target[EYE_L].mean(0) - target[EYE_R].mean(0)))
        d = (out[BROWS] - target[BROWS]) @ rot.T  # eye-axis frame
        d[:, 1] = np.clip(d[:, 1], -brow_move * iod, brow_move * iod)
        out[BROWS] = target[BROWS] + d @ rot
    if brow_floor:
        _brow_floor(out, target, a)
    for s in (EYE_L, EYE_R):
        tc, ac = target[s].mean(0), a[s].mean(0)
        tl, al = (target[s] - tc) @ rot.T, (a[s] - ac) @ rot.T  # eye-axis frame
        mix = (1 - alpha) * tl + alpha * al
        # keep the target's lid gap: scale the anchor-shaped contour vertically to it
        th, mh = np.ptp(tl[:, 1]), np.ptp(mix[:, 1])
        if mh > 1e-3:
            mix[:, 1] *= th / mh
        mix -= mix.mean(0)
        out[s] = tc + mix @ rot
    return out


def placed_anchor(target: np.ndarray, anchor: np.ndarray, open_jaw: bool = True) -> np.ndarray:
    """The anchor's shape [68,2] similarity-aligned on the target's 5 key points; with
    `open_jaw`, where the target's mouth is open wider than the anchor's, on its mouth corners
    where they would be closed (`_corners_raised`), and its jaw then dropped as far (`_jaw_dropped`)."""
    drop = _mouth_drop(target, anchor) if open_jaw else 0.0
    kps = five_points(target)
    if drop > 0:
        kps[3:] += _corners_raised(target, anchor, drop)[:, None] * face_up(target)[0]
    a = transform_points(similarity_transform(five_points(anchor), kps), anchor)
    return _jaw_dropped(a, target, drop) if drop > 0 else a


def _mouth_drop(target: np.ndarray, anchor: np.ndarray) -> float:
    """How much wider the target's mouth is open than the anchor's (the inner lips' gap along each
    face's up, in its own eye distances), in the target's pixels; 0 if it is not."""
    up_t, iod_t = face_up(target)
    up_a, iod_a = face_up(anchor)
    gap = float((target[62] - target[66]) @ up_t) / iod_t - float((anchor[62] - anchor[66]) @ up_a) / iod_a
    return max(gap, 0.0) * iod_t


def _corners_raised(target: np.ndarray, anchor: np.ndarray, drop: float) -> np.ndarray:
    """[2]: how far (pixels, up to `drop`) each mouth corner of the target sits lower under its
    upper inner lip than the anchor's do under theirs (eye distances): an open jaw carries the
    corners down with the lower lip (an O-shaped mouth: about half the gap), a smile's stay up."""
    up_t, iod_t = face_up(target)
    up_a, iod_a = face_up(anchor)
    below_t = (target[62] - target[[48, 54]]) @ up_t / iod_t
    below_a = (anchor[62] - anchor[[48, 54]]) @ up_a / iod_a
    return np.clip((below_t - below_a) * iod_t, 0.0, drop).astype(np.float32)


def _jaw_dropped(a: np.ndarray, target: np.ndarray, drop: float) -> np.ndarray:
    """The aligned anchor shape `a` [68,2] with its jaw below the mouth corners lowered by `drop`
    pixels (`_mouth_drop`): the chin in full, the points between the corners' height and the
    chin in proportion. An open mouth lowers the chin and the mouth corners: aligned on the
    corners and moved towards a closed-mouthed bank face's chin, the anchor was scaled up (d10,
    an O-shaped mouth: 10%) and the jaw drawn wide, its chin pulled up against the kept mouth."""
    up, _ = face_up(target)
    corners, chin = (a[48] + a[54]) / 2 @ up, a[8] @ up
    w = np.clip((corners - a[JAW] @ up) / max(corners - chin, 1e-6), 0.0, 1.0)
    out = a.copy()
    out[JAW] -= (drop * w)[:, None] * up
    return out


def _brow_floor(out: np.ndarray, target: np.ndarray, anchor: np.ndarray) -> None:
    """In place on `out` [68,2]: each brow held no lower over its eye, and its inner end no lower
    against its outer end (`brow_poses`, in each face's own eye distances), than the lower of the
    target's and the aligned anchor's. Moved by alpha > 1 past both, brows higher than a bank
    face's came down below it, inner ends most: a frown neither face has (liveportrait_d14's
    raised brows, retinaface_img11). Held on both sides (between the two faces), 200 LFW photos
    through the pipeline drew 127 faces, not 134: the brows' height carries identity that SFace
    reads; held on the frown's side alone, 133."""
    now = brow_poses(out)
    dh, dt = (np.maximum(now, np.minimum(brow_poses(target), brow_poses(anchor))) - now).T
    up, iod = face_up(out)
    axis = np.array([-up[1], up[0]], np.float32)
    for k, (brow, _) in enumerate(BROW_EYE):
        x = out[brow] @ axis
        w = (x - x[0]) / (x[-1] - x[0]) if abs(x[-1] - x[0]) > 1e-6 else np.zeros_like(x)  # outer end 0, inner 1
        out[brow] += (iod * (dh[k] + dt[k] * (w - w.mean())))[:, None] * up


def _move_by_two(pts: np.ndarray, p0, p1, q0, q1) -> np.ndarray:
    """`pts` [P,2] under the similarity taking p0 -> q0 and p1 -> q1."""
    zp, zq = complex(*(p1 - p0)), complex(*(q1 - q0))
    k = zq / zp if abs(zp) > 1e-6 else 1
    w = ((pts[:, 0] - p0[0]) + 1j * (pts[:, 1] - p0[1])) * k
    return np.stack([w.real + q0[0], w.imag + q0[1]], 1).astype(np.float32)


def keypoint_shape(shape: np.ndarray, anchor: np.ndarray, t: float, target: np.ndarray | None = None) -> np.ndarray:
    """`shape` [68,2] with its eyes, nose tip and mouth moved `t` of the way to the anchor's (similarity-
    aligned on the 5 key points of `target`, default `shape`): the proportions those points carry
    (eye distance, eyes to nose and mouth) become the anchor's. Each eye moves whole (its openness
    stays); the mouth keeps its own shape (opening, smile), moved and scaled so its corners go to
    the anchor's."""
    m = similarity_transform(five_points(anchor), five_points(shape if target is None else target))
    a = transform_points(m, anchor)
    out = shape.astype(np.float32).copy()
    for s in (EYE_L, EYE_R):
        out[s] += t * (a[s].mean(0) - out[s].mean(0))
    c0, c1 = out[48], out[54]
    out[48:68] = _move_by_two(out[48:68], c0, c1, c0 + t * (a[48] - c0), c1 + t * (a[54] - c1))
    out[NOSE_TIP] += t * (a[NOSE_TIP] - out[NOSE_TIP])
    return out


def held_outline(target: np.ndarray, new: np.ndarray, limit: float) -> np.ndarray:
    """`new` [68,2] with each jaw point's move out of the target's face (along the outline's outer
    normal at that point, [JAW] of `target`) held to `limit` eye distances; moves inwards and
    along the outline are kept. The target's pixels follow the drawn outline (the mesh ring stays
    put), so an outline moved out squeezes what lies beyond it against the ring: a turned head's
    hair at the temple drawn with a step in it (retinaface_img11, Kate Siegel)."""
    _, iod = face_up(target)
    jaw = target[JAW].astype(np.float32)
    tangent = np.gradient(jaw, axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], 1)
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    inside = target[NOSE].mean(0) - jaw  # the normal that points away from the nose is the outer one
    normal *= np.where((normal * inside).sum(1, keepdims=True) > 0, -1.0, 1.0)
    move = new[JAW] - jaw
    out_by = (move * normal).sum(1)
    cut = np.maximum(out_by - limit * iod, 0.0)
    held = new.astype(np.float32).copy()
    held[JAW] = new[JAW] - cut[:, None] * normal
    return held
