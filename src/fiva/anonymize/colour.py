"""Colour and light of an anchor-face drawing: the bank face's LAB statistics matched to the
target's skin (`match_colour`), the target's colour of darker shading (`chroma_slope`) and the
averages' hollow eye sockets lifted towards the target's lightness (`lift_sockets`).
Images are float RGB [h,w,3] unless noted."""
from __future__ import annotations

import cv2
import numpy as np

from ..faces.landmarks68 import EYE_L, EYE_R


def smooth(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur; wide ones on a downscaled copy (the result is smooth at that scale anyway,
    and a full-size blur of a 2-megapixel face takes seconds)."""
    f = int(sigma // 4)
    if f < 2:
        return cv2.GaussianBlur(img, (0, 0), sigma)
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(w // f, 1), max(h // f, 1)), interpolation=cv2.INTER_AREA)
    return cv2.resize(cv2.GaussianBlur(small, (0, 0), sigma / f), (w, h), interpolation=cv2.INTER_LINEAR)


def skin_colour(lab: np.ndarray, region: np.ndarray, sigma: float) -> np.ndarray:
    """[h,w,2]: the a and b of float LAB `lab` smoothed over `sigma` pixels, with what is much
    greyer than the skin of `region` (the cheeks) weighted 50 times less: lashes, eyeliner, dark
    brows, eye whites and hair, smoothed in, drew grey halos about the drawn eyes
    (liveportrait_d10). Lips, redder than skin, count in full; where no skin lies near, the grey
    is all there is to read."""
    sat = np.hypot(lab[..., 1] - 128.0, lab[..., 2] - 128.0)
    skin = float(np.median(sat[region])) if region.any() else 0.0
    if skin < 4.0:  # a grey or nearly grey face: nothing to tell apart
        return smooth(lab[..., 1:], sigma)
    w = np.clip((sat - 0.5 * skin) / (0.25 * skin), 0.0, 1.0).astype(np.float32) + 0.02
    return smooth(lab[..., 1:] * w[..., None], sigma) / smooth(w, sigma)[..., None]


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
                 shade_chroma: float = 1.0, inner: np.ndarray | None = None, read: np.ndarray | None = None,
                 eyes: np.ndarray | None = None) -> np.ndarray:
    """`src` (float RGB) with its LAB mean and std over `region` [h,w] bool set to `ref`'s; with
    `inner` [h,w] bool (the skin well inside `region`), the means and `chroma_slope` are read there.

    The std ratio is kept within [0.7, 1.4] ([0, 1.4] for chroma): a wider one amplifies the average's faint ghosts into
    colour casts. With `light_sigma` > 0 the lightness also takes `ref`'s shading at that scale
    (pixels): where the light falls on the target's head, not the anchor donors'. With
    `chroma` < 1 only that share of the anchor's own colour variation is kept and the rest is the
    target's colour smoothed over `chroma_sigma` pixels (`skin_colour`: its grey features left
    out): averaged (and caricatured) faces carry greenish or purple casts around the eyes that no
    real face has. `stats`: a function given the measured statistics (`lab_stats`) that returns
    the ones to use (a video track smooths them).
    `read` (float RGB like `src`): the pixels `src`'s statistics are read from, if not its own (a
    `lipless` bank face's are read with its lips). `eyes` [h,w] in [0,1]: the eye openings of a
    drawing of the bank face's own eyes, which keep the bank face's colour there: the target's
    colour about them, skin, drew them with pink whites and red-brown irises (Aniston on
    multiface.jpg, drawn in full). A first drawing keeps the target's own eyes, so needs none.
    """
    a = cv2.cvtColor(np.clip(src, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
    b = cv2.cvtColor(ref, cv2.COLOR_RGB2LAB).astype(np.float32)
    if region.sum() < 16:
        return src
    r = a if read is None else cv2.cvtColor(np.clip(read, 0, 255).astype(np.uint8), cv2.COLOR_RGB2LAB).astype(np.float32)
    measured = lab_stats(r, b, region)
    if inner is not None and inner.sum() >= 16:
        measured[[0, 2]] = lab_stats(r, b, inner)[[0, 2]]
    else:
        inner = region
    ma, sa, mb, sb = measured if stats is None else stats(measured)
    # chroma may shrink to nothing (a grey photo gets a grey face); lightness contrast only so far
    ratio = np.clip(sb / sa, (0.7, 0.0, 0.0), 1.4)
    if tone != 1.0:
        ratio, mb = 1 + tone * (ratio - 1), ma + tone * (mb - ma)
    a = (a - ma) * ratio + mb
    if light_sigma > 0:
        a[..., 0] += smooth(b[..., 0] - a[..., 0], light_sigma)
    if chroma < 1 and chroma_sigma > 0:
        matched = a[..., 1:].copy() if eyes is not None else None
        own = a[..., 1:] - smooth(a[..., 1:], chroma_sigma)
        a[..., 1:] = skin_colour(b, inner, chroma_sigma) + chroma * own
        # The target's smoothed colour belongs to its own shading: where the bank face is darker
        # than the target there (its averaged shading), skin keeps the target's colour of a darker
        # patch, which is more saturated; without it those patches read grey (group_t1).
        a[..., 1:] += shade_chroma * chroma_slope(b, inner) * np.clip(a[..., 0] - smooth(b[..., 0], chroma_sigma), -20, 20)[..., None]
        if matched is not None:  # the bank face's own eyes, in their own colours
            a[..., 1:] += eyes[..., None] * (matched - a[..., 1:])
    return cv2.cvtColor(np.clip(a, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)


def lift_sockets(anchor: np.ndarray, ref: np.ndarray, shape: np.ndarray, iod: float, strength: float = 1.0,
                 sigma: float = 0.12, floor: float = 1.0) -> None:
    """Where the bank face `anchor` (float RGB [h,w,3], in place) is darker than the target `ref`
    around the eyes, raise its lightness towards the target's by `strength`, its colour kept:
    averages of six donors have dark, hollow sockets (their lids and lashes never line up), which a
    person reads as sunken or tired eyes (Shea Whigham, Zakayev, Kate Siegel).
    Both are compared smoothed over `sigma` eye distances, so only the shading changes, not the
    bank face's detail (how the lift keeps the colour: below); `shape` [68,2] is the drawn shape in
    the patch's pixels."""
    h, w = anchor.shape[:2]
    rx, ry = 0.6 * iod, 0.42 * iod  # the socket: lids, the brow's underside and the upper cheek
    for s in (EYE_L, EYE_R):
        c = shape[s].mean(0)
        x0, y0 = int(max(c[0] - rx, 0)), int(max(c[1] - ry, 0))
        x1, y1 = int(min(c[0] + rx + 1, w)), int(min(c[1] + ry + 1, h))
        if x1 - x0 < 4 or y1 - y0 < 4:
            continue
        a, b = anchor[y0:y1, x0:x1], ref[y0:y1, x0:x1]
        grey = a.mean(2)
        la = smooth(grey, sigma * iod) + 1.0
        lb = smooth(b.mean(2), sigma * iod) + 1.0
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        ell = np.clip(1.0 - ((xx - c[0]) / rx) ** 2 - ((yy - c[1]) / ry) ** 2, 0, 1)  # 1 at the centre, 0 at the rim
        gain = strength * ell * (np.clip(lb / la, floor, 1.6) - 1.0)
        # the lightness of the socket lifted, its colour kept: grey light added alike to R, G and B
        # leaves skin greyer (LAB a and b fall by 1-2 for a lift of 40-70 grey levels), and the
        # lifted sockets read as grey smudges around the eyes (Kate Siegel, Courteney Cox on
        # multiface.jpg); multiplied, the lift turns lids orange (a, b up by 5-12). In between: each
        # pixel's difference from its grey scaled by (lifted grey / grey)^0.25, which keeps a and b
        # within ~0.5 for lifts up to 70 grey levels on skin tones (a LAB round trip costs 2.4x the time)
        lift = gain * la
        spread = np.sqrt(np.sqrt(np.maximum(grey + lift, 1.0) / np.maximum(grey, 1.0))) - 1.0
        a += lift[..., None] + (a - grey[..., None]) * spread[..., None]


def cap_highlights(anchor: np.ndarray, ref: np.ndarray, region: np.ndarray, exempt=None,
                   knee: float = 8.0, pct: float = 99.0) -> None:
    """Where the drawing `anchor` (float RGB [h,w,3], in place) is lighter than the target `ref`'s
    skin ever is (the `pct` percentile of its grey over `region` [h,w] bool), ease it in under
    that ceiling, a soft knee `knee` grey levels wide (each pixel's RGB scaled alike, then its
    colour drawn toward the target's lit skin as far as it was dimmed), except on the [h,w] bool
    mask `exempt()` gives (eye whites, teeth), called only when some pixel is over. A bank face's
    highlights come from its donors' light, not the target's, and the colour match stretches them
    to the target's contrast: on a brightly lit face they were drawn white, past anything on the
    target's skin, as pale patches on the nose, under the eyes and on the forehead (group_t1.jpg,
    liveportrait_d14)."""
    if region.sum() < 16:
        return
    skin_px = ref[region]
    skin_grey = skin_px.mean(1)
    hi = float(np.percentile(skin_grey, pct))
    grey = anchor.mean(2)
    over = grey > hi
    if not over.any():
        return
    if exempt is not None:
        over &= ~exempt()
    if not over.any():
        return
    g = grey[over]
    eased = hi + knee * np.tanh((g - hi) / knee)
    # a broad near-white highlight eased pixel by pixel becomes a flat plateau of the drawing's own
    # grey-white (Kate Siegel's nose bridge, 40 px): each dimmed pixel's colour moves toward the
    # target's lightest skin (the top decile of its grey over `region`, as chromaticity), fully
    # once it was dimmed by two knees, so the plateau reads as lit skin
    lit = skin_px[skin_grey >= np.percentile(skin_grey, 90.0)].mean(0)
    skin = lit / max(float(lit.mean()), 1.0)
    w = np.clip((g - eased) / (2.0 * knee), 0.0, 1.0)[:, None]
    anchor[over] = eased[:, None] * ((anchor[over] / np.maximum(g, 1.0)[:, None]) * (1.0 - w) + skin * w)
