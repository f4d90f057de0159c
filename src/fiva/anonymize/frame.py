"""The anonymization pipeline for one frame, and the `Anonymizer` API.

Per frame: detect (YuNet) -> triage (faces the generator cannot serve: too small, extreme profile,
cut by the frame border) -> align (ArcFace template) -> embed (SFace) -> ITM (Algorithm 1, Eq. 1
anchors) -> generate all faces in one batch (FIVA generator) -> verify (the output must no longer
match its original; one retry with another anchor) -> paste back through the generator's mask, so
pixels away from faces stay bit-exact. Faces that are triaged out or fail verification get the
fallback obfuscation: never nothing.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from ..faces import Detections, FaceDetector, align_faces
from ..faces.align import feather_mask
from ..faces.detect import VIEWS, landmark_error, match_face
from ..faces.identity import load_sface, to_tensor
from ..io import IMAGE_EXTS, MAX_PIXELS, files_under, read_image
from ..weights import DEFAULT_ANCHORS, DEFAULT_ATTACK
from .anchors import AnchorSpace
from .baselines import METHODS as BASELINES
from .baselines import obfuscate
from .itm import DEFAULT_THRESHOLD, VERIFY_MARGIN, IdentityTrackingModule

log = logging.getLogger(__name__)

METHODS = ("fiva",) + BASELINES
IDENTITY_MODES = ("itm", "sample", "own", "swap")
FALLBACK_KINDS = ("small", "profile", "border", "unsure", "verify")
CONFIRM_SCORE = 0.5  # second look: a face found again at this score on its aligned crop is a face
# A generated face whose landmarks are found further off than this share of the eye distance is
# not in place (obfuscated instead). 0.07, not the 0.08 it is judged at: the finished photo (the
# defense's noise, neighbours obfuscated) moves the landmarks found by up to ~0.01 more.
IN_PLACE = 0.07
SURE_SCORE = 0.6  # a first detection this confident is obfuscated even when the second look finds nothing
# A weak candidate (score < SURE_SCORE) not confirmed by the second look is a face only if some look
# (its aligned crop, or look_around's upright and turned crops of its box) finds a face there at this
# score. The weakest hits (0.3-0.5) come as often off hair, fists and patterns as off faces: at > 0
# the portrait_angelina_jolie.jpg hair kept a 424 px pixelated disc; with the extra views faces
# lying sideways or looking down are found more often than with the aligned crop alone.
FACE_LIKE = 0.5
TURNED_LIKE = 0.6  # the same on look_around's turned views
DLIB_MATCH = 0.6  # dlib's own "same person" distance
# (strength, grow) of the fallback where dlib still knows a face (photos): half the blocks, then one
# (the mean colour), within the 1.5x box the in-the-wild check counts as the face's (change away)
STRONGER = ((2, 1.5), (8, 1.5))


@dataclass
class AnonymizeConfig:
    """Settings of `fiva anonymize` (and the Python API)."""

    method: str = "fiva"
    # registered face generator (models/registry.py) used by method "fiva": the anchor-face renderer
    # (k-Same bank faces drawn at the face's own resolution), or "fiva" (the 112 px FIVA network)
    generator: str = "anchor-face"
    model: str | None = None  # its weights; None = the shipped default
    anchors: str | None = None  # anchor space .safetensors; None = the shipped one
    threshold: float = DEFAULT_THRESHOLD  # ITM cosine distance for "same person"
    margin: float = 0.0  # Eq. 1 margin m
    score_threshold: float = 0.3  # face detection score: low, because a missed face is a leak (0.6: fewer false alarms)
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    # Whose identity conditions the generator: "itm" (Algorithm 1: tracked fake identities from the
    # anchor space), "sample" (a new anchor for every face, no tracking) or "own" (the face's own
    # identity: the counterfactually trained generator still moves away from it). The last two
    # exist for evaluation (the paper's Table 1 rows).
    identity: str = "itm"
    swap_source: str | None = None  # identity "swap": a photo whose face's identity every face gets
    # What faces the generator cannot serve get instead ("none": generate them anyway):
    # too small, extreme profile, cut by the frame border, or still matching after generation.
    fallback: str = "pixelate"
    min_face: int = 24  # shorter side of the face box in pixels below which a face is "too small"
    max_profile: float = 0.7  # nose off the eyes' midline by more than this share of the eye distance (~60° yaw)
    max_outside: float = 0.2  # share of the face box outside the frame above which it is "cut by the border"
    # Second check with the independent dlib evaluator, ~0.1 s a face: None = on for
    # still images, off for video frames.
    verify: bool | None = None
    # Photos: SFace verification sends a drawing back unless it is beyond threshold + verify_margin
    # from its original: this photo's embedding stands in for the person's, and another photo of them
    # can be nearer the drawing than this one is (scripts/select_verify_margin.py, 399 LFW identities
    # of the selection split: leak by SFace ID retrieval 3.5% -> 0.3%, drawn 77% -> 43%). Videos keep
    # the threshold alone: 0.1 there left liveportrait_d0 no drawn face (68 -> 0 of 78).
    verify_margin: float = VERIFY_MARGIN
    # Photos: a face that every drawing left recognisable is drawn once more with the bank face in
    # full (its own eyes, more jaw and forehead; native.draws_in_full) before the fallback. About a
    # third of those drawings look twisted or smeared at real size (MODEL_CARD.md): False sends
    # such faces straight to the fallback (200 LFW photos: 113 -> 78 of 279 faces drawn; the wild
    # photos: 25 -> 18 of 360).
    draw_in_full: bool = True
    reembed_every: int = 10  # video: a tracked face is re-identified and re-verified every N frames
    # Selective anonymization: reference photos of people never to anonymize (consenting staff),
    # or of the only people to anonymize. Matching uses the calibrated SFace threshold.
    keep: tuple[str, ...] = ()  # photos or folders of photos
    only: tuple[str, ...] = ()
    max_pixels: int = MAX_PIXELS  # images above this are refused before decoding (decompression bombs)
    # Defense against reconstruction attacks (defense.py): "none", "noise" (uniform noise of
    # amplitude defense_eps on a fraction defense_p of the face's pixels; black-box) or "fgsm"
    # (one gradient-sign step of defense_eps against the attack model `attack`; white-box).
    # Default: the paper's noise setting. Measured (BENCHMARKS.md, Table 3): invisible (53 dB) and
    # identity-neutral, but the shipped R is not broken by it (RA 0.94 either way); in the default
    # pipeline what keeps R out is verification with the pixelate fallback.
    defense: str = "noise"
    defense_eps: float = 0.15  # the paper's Table 3 amplitude
    defense_p: float = 0.0025
    attack: str | None = None

    def verify_threshold(self, still: bool) -> float:
        """The SFace cosine distance a drawing must reach from its original to pass verification:
        the threshold, plus `verify_margin` on photos."""
        return self.threshold + (self.verify_margin if still else 0.0)


class Anonymizer:
    """Replace the identity of every detected face.

    The Identity Tracking Module lives as long as the Anonymizer (or until `reset()`): the same
    person keeps one fake identity across the frames and images it processes. `stats` counts
    faces by what happened to them.
    """

    def __init__(self, config: AnonymizeConfig | None = None, **overrides):
        cfg = config or AnonymizeConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise TypeError(f"unknown setting '{k}'")
            setattr(cfg, k, v)
        if cfg.method not in METHODS:
            raise ValueError(f"unknown method '{cfg.method}' (choose from {', '.join(METHODS)})")
        if cfg.fallback not in BASELINES + ("none",):
            raise ValueError(f"unknown fallback '{cfg.fallback}' (choose from {', '.join(BASELINES + ('none',))})")
        if cfg.identity not in IDENTITY_MODES:
            raise ValueError(f"unknown identity mode '{cfg.identity}' (choose from {', '.join(IDENTITY_MODES)})")
        from .defense import DEFENSES

        if cfg.defense not in DEFENSES:
            raise ValueError(f"unknown defense '{cfg.defense}' (choose from {', '.join(DEFENSES)})")
        if cfg.keep and cfg.only:
            raise ValueError("--keep and --only exclude each other")
        self.cfg = cfg
        self.stats: Counter = Counter()
        self.device = torch.device(cfg.device)
        self.detector = FaceDetector(score_threshold=cfg.score_threshold)
        self.generator = None
        self._dlib = None
        self._originals: dict[tuple, np.ndarray] = {}  # dlib's descriptors of this frame's faces (original_descriptor)
        self._tracks: dict[int, dict] = {}
        self.outcomes = np.zeros(0, dtype=object)  # per face of the last frame: what happened to it
        self._outline = None  # faces/region.py FaceOutline, made on first use
        if cfg.method == "fiva":
            from ..models.registry import load_face_generator

            self.generator = load_face_generator(cfg.generator, cfg.model, self.device)
            self.sface = load_sface(self.device)
            self._encoder = getattr(self.generator, "identity_encoder", None) or self.sface.identity
            if getattr(self.generator, "renderer", None) is not None and cfg.anchors is None:
                anchors = self.generator.bank.anchor_space(margin=cfg.margin, seed=cfg.seed)  # anchors that are faces
            else:
                anchors = AnchorSpace.load(cfg.anchors or DEFAULT_ANCHORS, margin=cfg.margin, seed=cfg.seed)
            dim = self.generator.identity_dim
            if dim is not None and anchors.anchors.shape[1] != dim:
                raise ValueError(f"the anchor space holds {anchors.anchors.shape[1]}-D identities but generator "
                                 f"'{cfg.generator}' takes {dim}-D: build anchors with its encoder (fiva anchors build)")
            self.itm = IdentityTrackingModule(anchors, threshold=cfg.threshold)
            size = self.generator.resolution
            self._paste_feather = torch.from_numpy(feather_mask(size, 0.06))
            if cfg.verify is not False:  # the generator's own evaluator when it has one (anchor-face): loaded once
                self._dlib = getattr(self.generator, "dlib", None) or _try_dlib(required=cfg.verify is True)
        self._rng = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self._attack = None
        if cfg.defense == "fgsm":
            if self.generator is None:
                raise ValueError("--defense fgsm defends generated faces: it needs --method fiva")
            if not cfg.attack:
                shipped = _shipped_attack(cfg)
                if shipped is None:
                    raise ValueError("--defense fgsm needs the attack model it defends against (--attack PATH)")
                self.cfg = cfg = replace(cfg, attack=str(shipped))
            from ..models.attack import load_attack

            self._attack = load_attack(cfg.attack, self.device).requires_grad_(False)
        self._swap_z = None
        if cfg.identity == "swap":
            if self.generator is None or not cfg.swap_source:
                raise ValueError("face swapping needs the generator and a source photo (--source)")
            self.set_swap_source(read_image(cfg.swap_source, cfg.max_pixels))
        self._refs = None
        if cfg.keep or cfg.only:
            if self.generator is None:
                self.sface = load_sface(self.device)
            self._refs = self._reference_embeddings(cfg.keep or cfg.only)

    def set_swap_source(self, rgb: np.ndarray, render=None, sign: int | None = None) -> None:
        """Swap from now on to the identity of the main face of `rgb` (identity "swap"). The
        anchor-face renderer takes that face itself as its one bank face (source_face.py; `render`:
        its RenderConfig, default SWAP_RENDER); a network is conditioned on its SFace embedding,
        times `sign` (default: -1 for a counterfactually trained generator, which moves away from
        the identity it is given (FIVA, Eq. 4), +1 for a classic swapper). Kept in memory only."""
        if getattr(self.generator, "renderer", None) is not None:
            from .source_face import use_source

            self._swap_z = use_source(self.generator, rgb, self.detector, self.sface, render)
            return
        d = self.detect(rgb)
        if len(d) == 0:
            raise ValueError("no face found in the source photo")
        crops, _ = align_faces(rgb, d.landmarks[d.largest()][None], 112)
        z = self._embed_crops(crops)[0]
        if sign is None:
            sign = -1 if getattr(self.generator, "counterfactual", False) else 1
        self._swap_z = sign * z

    def reset(self, identities: bool = True, seed: int | None = None) -> None:
        """A new video or an unrelated image: forget face tracks and (unless `identities` is False,
        as with an identity store) every tracked identity. With `seed`, the randomness (fake-identity
        draws, defense noise) starts afresh from it, so a file's output does not depend on what ran
        before it (runner.file_seed)."""
        self._tracks.clear()
        if self.generator is not None and identities:
            self.itm.reset()
        if seed is not None:
            self._rng.manual_seed(seed)
            if self.generator is not None:
                self.itm.anchors.rng = np.random.default_rng(seed)

    def forget_tracks(self, ended) -> None:
        """Drop what is remembered of face tracks that have ended (`ended`: their ids; a track id
        is never used again): a long crowd video would otherwise hold every passer-by's state
        (identity, brow history, colour statistics) until it ends. Tracked identities stay in the ITM."""
        ended = {int(t) for t in ended}
        if ended:
            for key in [k for k in self._tracks if track_of(k) in ended]:
                del self._tracks[key]

    def detect(self, rgb: np.ndarray) -> Detections:
        return self.detector(rgb)

    def anonymize_image(self, rgb: np.ndarray, detections: Detections | None = None) -> np.ndarray:
        """Anonymize every face of an RGB uint8 image [H,W,3]; returns a new image of the same size."""
        _check_rgb(rgb)
        dets = self.detect(rgb) if detections is None else detections
        return self.anonymize_frame(rgb, dets, still=True)

    @torch.no_grad()
    def anonymize_frame(self, rgb: np.ndarray, dets: Detections, tracks: np.ndarray | None = None,
                        still: bool = False) -> np.ndarray:
        """Anonymize the given faces of one frame. `tracks` (one id per face, from FaceTracker) lets a
        face keep its fake identity and verdict between re-checks every `reembed_every` frames.
        Afterwards `outcomes` says per face what happened: "generated", a baseline method, a
        fallback reason ("small", "unsure", "verify", ...), "kept" (--keep/--only) or "rejected"."""
        _check_rgb(rgb)
        self._originals.clear()
        self.stats["faces"] += len(dets)
        self.outcomes = np.full(len(dets), "generated", dtype=object)
        idx = np.arange(len(dets))  # where the faces still in play sit in `outcomes`

        def drop(keep: np.ndarray, why: str):
            nonlocal dets, tracks, idx
            self.stats[why] += int((~keep).sum())
            self.outcomes[idx[~keep]] = why
            dets, idx, tracks = dets[keep], idx[keep], None if tracks is None else tracks[keep]

        if self._refs is not None and len(dets):
            drop(self._selected(rgb, dets, tracks), "kept")
        if len(dets) == 0:
            return rgb.copy()
        sure = self.second_look(rgb, dets, tracks)
        drop(sure != "no", "rejected")  # not a face after all: left as it is
        sure = sure[sure != "no"]
        if self._swap_z is not None and len(dets):
            # a swap draws only on faces found again: an unsure one (a hand, a pattern) is left as it
            # is, not given the source's face
            drop(sure == "yes", "unsure")
            sure = sure[sure == "yes"]
        if len(dets) == 0:
            return rgb.copy()
        if self.generator is None:
            self.stats[self.cfg.method] += len(dets)
            self.outcomes[idx] = self.cfg.method
            return obfuscate(rgb, dets, self.cfg.method)
        kinds = self.triage(rgb.shape[:2], dets)
        kinds = [k if k != "ok" or s == "yes" or self.cfg.fallback == "none" else "unsure" for k, s in zip(kinds, sure)]
        gen = [i for i, k in enumerate(kinds) if k == "ok"]
        out = rgb
        if gen:
            out, failed = self._generate(rgb, dets[np.array(gen)], None if tracks is None else tracks[gen], still)
            for i, f in zip(gen, failed):
                if f:
                    kinds[i] = "verify"
        bad = [i for i, k in enumerate(kinds) if k != "ok"]
        if bad:
            out = self._fallback(rgb, out, dets, bad, still)
        gen = [i for i, k in enumerate(kinds) if k == "ok"]
        if still and gen and self.cfg.fallback != "none":
            # The finished photo, looked at as a user's next tool would: a generated face not found
            # in place there (obfuscated neighbours and the defense move landmarks a little), or one
            # dlib takes for its original there (faces drawn after it reach into its box: on
            # crowd_selfie.jpg one passed at 0.62 read 0.614 on the finished photo), is obfuscated too.
            found = self._in_place(rgb, out, dets[np.array(gen)], still=True)
            moved = [i for i, ok in zip(gen, found) if not ok]
            if self._dlib is not None and self.cfg.identity != "swap":  # a swap is not verified
                same = [i for i, ok in zip(gen, found) if ok and self._recognised(rgb, out, dets.boxes[i])]
                if same:
                    self.stats["verify_finished"] += len(same)
                moved += same
            if moved:
                out = self._fallback(rgb, out, dets, moved, still)
                for i in moved:
                    kinds[i] = "verify"
                bad += moved
        for i in bad:
            self.stats[f"fallback_{kinds[i]}"] += 1
            self.outcomes[idx[i]] = kinds[i]
        self.stats["generated"] += len(dets) - len(bad)
        return out

    def original_descriptor(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """dlib's descriptor of the face in `box` of the frame being anonymized (`rgb`), embedded once
        per frame and face (in memory only, gone with the next frame): the bank's sex prediction,
        verification, the finished-photo look and the stronger fallback all compare with it."""
        key = tuple(np.asarray(box, np.float64).round(3))
        if key not in self._originals:
            self._originals[key] = self._dlib.embed(rgb, box)
        return self._originals[key]

    def _recognised(self, rgb: np.ndarray, out: np.ndarray, box: np.ndarray) -> bool:
        """dlib still takes the face in `box` of `out` for the one in `rgb` (within DLIB_MATCH)."""
        return bool(np.linalg.norm(self.original_descriptor(rgb, box) - self._dlib.embed(out, box)) < DLIB_MATCH)

    def _fallback(self, rgb: np.ndarray, out: np.ndarray, dets: Detections, idx: list[int], still: bool) -> np.ndarray:
        """The fallback obfuscation on faces `idx`. On photos, with dlib, a face it still recognises
        (within DLIB_MATCH of the original) is obfuscated again, stronger and wider (STRONGER):
        8 pixelation blocks over 1.3x the box left two of 200 LFW faces at dlib 0.55 and 0.60
        (hair, glasses and outline at the image's edge carry them); of the four nearest, 4 blocks
        over 1.5x left one at 0.59, one block (the mean colour) none (0.62-0.68). Only faces that
        got the full 8 blocks (grown width >= 80 px) are checked; smaller ones get fewer already."""
        out = obfuscate(out, dets[np.array(idx)], self.cfg.fallback)
        if not still or self._dlib is None or self.cfg.fallback == "mask":
            return out
        left = [i for i in idx if (dets.boxes[i, 2] - dets.boxes[i, 0]) * 1.3 >= 80]
        for strength, grow in STRONGER:
            left = [i for i in left if self._recognised(rgb, out, dets.boxes[i])]
            if not left:
                break
            self.stats["fallback_stronger"] += len(left)
            out = obfuscate(out, dets[np.array(left)], self.cfg.fallback, grow=grow, strength=strength)
        return out

    def _reference_embeddings(self, paths) -> np.ndarray:
        """One identity per reference photo; a folder stands for every photo in it (recursively)."""
        refs = []
        for p in _reference_files(paths):
            rgb = read_image(p, self.cfg.max_pixels)
            d = self.detect(rgb)
            if len(d) == 0:
                raise ValueError(f"{p}: no face found in the reference photo")
            crops, _ = align_faces(rgb, d.landmarks[d.largest()][None], 112)
            refs.append(self._embed_crops(crops)[0])
        return np.stack(refs)

    def _embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Identity of aligned uint8 crops [N,112,112,3]: the generator's encoder, or SFace."""
        if self.generator is None:
            return self.sface.embed(crops)
        return self._embed(to_tensor(crops).to(self.device))

    def recheck(self, tracks: np.ndarray | None, n: int, kind: str | None = None) -> tuple[list[int], dict[int, dict]]:
        """Which of `n` faces need their `kind` of verdict made now (untracked, new, or due again
        every `reembed_every` frames), and the remembered state of the others (their age counted)."""
        todo, known = [], {}
        for i in range(n):
            st = self._tracks.get(track_key(tracks[i], kind)) if tracks is not None else None
            if st is not None and st["age"] < self.cfg.reembed_every:
                st["age"] += 1
                known[i] = st
            else:
                todo.append(i)
        return todo, known

    def _selected(self, rgb: np.ndarray, dets: Detections, tracks: np.ndarray | None) -> np.ndarray:
        """Which faces to anonymize under --keep / --only (tracked faces are re-checked every
        `reembed_every` frames)."""
        match = np.zeros(len(dets), bool)
        todo, known = self.recheck(tracks, len(dets), "ref")
        for i, st in known.items():
            match[i] = st["match"]
        if todo:
            crops, _ = align_faces(rgb, dets.landmarks[todo], 112)
            d = 1.0 - self._embed_crops(crops) @ self._refs.T
            match[todo] = d.min(1) < self.cfg.threshold
            for i in todo:
                if tracks is not None:
                    self._tracks[track_key(tracks[i], "ref")] = {"match": bool(match[i]), "age": 1}
        return ~match if self.cfg.keep else match

    def second_look(self, rgb: np.ndarray, dets: Detections, tracks: np.ndarray | None = None) -> np.ndarray:
        """Per face "yes" (found again, upright and centred, on its aligned crop: it may get a
        generated face), "unsure" (something face-like there, or a confident first detection: it
        gets the fallback obfuscation) or "no" (a weak first detection that no look, neither its aligned
        crop nor `look_around`'s views of its box, finds face-like at FACE_LIKE: a false alarm, left
        untouched; photos only). Faces under `min_face` px are too small to judge and
        count as unsure. Tracked faces are looked at again every `reembed_every` frames."""
        sure = np.full(len(dets), "unsure", dtype=object)
        todo, known = self.recheck(tracks, len(dets), "look")
        for i, st in known.items():
            sure[i] = st["sure"]
        if todo:
            again, seen, _ = self.detector.second_look(rgb, dets.landmarks[todo])
            sizes = np.minimum(dets.boxes[todo, 2] - dets.boxes[todo, 0], dets.boxes[todo, 3] - dets.boxes[todo, 1])
            # A weak candidate of a photo that no look finds face-like is a false alarm; in a video one
            # look decides for `reembed_every` frames of a track, so it is obfuscated instead.
            doubt = [j for j, i in enumerate(todo) if tracks is None and sizes[j] >= self.cfg.min_face
                     and again[j] < CONFIRM_SCORE and dets.scores[i] < SURE_SCORE]
            if doubt:
                views = self.detector.look_around(rgb, dets.boxes[np.array(todo)[doubt]])
                turned = np.array([angle != 0 for _, angle in VIEWS])
                # a turned view must find more: a face turned upright is found well (95% of 182 weak
                # candidates on degraded LFW faces at >= 0.7), lace or a fist now and then at 0.5-0.55
                views[:, turned] *= FACE_LIKE / TURNED_LIKE
                seen[doubt] = np.maximum(seen[doubt], views.max(1))
            for j, i in enumerate(todo):
                if sizes[j] >= self.cfg.min_face:
                    weak = seen[j] < FACE_LIKE and dets.scores[i] < SURE_SCORE
                    sure[i] = "yes" if again[j] >= CONFIRM_SCORE else "no" if weak and tracks is None else "unsure"
                if tracks is not None:
                    self._tracks[track_key(tracks[i], "look")] = {"sure": sure[i], "age": 1}
        return sure

    def triage(self, shape: tuple[int, int], dets: Detections) -> list[str]:
        """Per face: "ok" for the generator, or why not: "small", "profile", "border"."""
        if self.cfg.fallback == "none":
            return ["ok"] * len(dets)
        h, w = shape
        kinds = []
        # a generator may serve a narrower range of head turns than the configured one
        max_profile = min(self.cfg.max_profile, getattr(self.generator, "max_profile", np.inf))
        for box, lm in zip(dets.boxes, dets.landmarks):
            bw, bh = box[2] - box[0], box[3] - box[1]
            inside = max(0.0, min(box[2], w) - max(box[0], 0)) * max(0.0, min(box[3], h) - max(box[1], 0))
            eye = lm[1] - lm[0]
            iod = float(np.linalg.norm(eye)) + 1e-6
            off = abs(float(np.dot(lm[2] - (lm[0] + lm[1]) / 2, eye / iod))) / iod
            if min(bw, bh) < self.cfg.min_face:
                kinds.append("small")
            elif 1 - inside / max(bw * bh, 1e-6) > self.cfg.max_outside:
                kinds.append("border")
            elif off > max_profile:
                kinds.append("profile")
            else:
                kinds.append("ok")
        return kinds

    def _embed(self, x: torch.Tensor) -> np.ndarray:
        """Unit identity embeddings [N,D] of aligned crops [N,3,S,S] in [-1,1], by the generator's
        identity encoder (SFace for FIVA): what the ITM tracks and the verification compares."""
        if x.shape[-1] != 112:
            x = torch.nn.functional.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
        return torch.nn.functional.normalize(self._encoder(x), dim=1).cpu().numpy()

    def _fake_identity(self, z: np.ndarray) -> tuple[np.ndarray, int | None]:
        if self._swap_z is not None:
            return self._swap_z, None
        if self.cfg.identity == "own":
            return z, None
        if self.cfg.identity == "sample":
            return self.itm.anchors.sample(z), None
        return self.itm(z)  # Algorithm 1

    def _generate(self, rgb: np.ndarray, dets: Detections, tracks: np.ndarray | None, still: bool):
        """Generate, verify and paste the faces (anchor faces: native.py; the 112 px networks:
        network.py); returns the image and, per face, whether it failed verification."""
        if getattr(self.generator, "renderer", None) is not None:  # draws at native resolution (anchor-face)
            from .native import generate_native

            out, failed = generate_native(self, rgb, dets, tracks, still)
            if self.cfg.defense == "fgsm" and (~failed).any():  # noise is added by the drawing itself
                from .defense import fgsm_in_image

                keep = np.flatnonzero(~failed)
                crops, _ = align_faces(rgb, dets.landmarks[keep], 112)
                z_id = torch.from_numpy(self._embed(to_tensor(crops).to(self.device))).to(self.device)  # in memory only
                with torch.enable_grad():
                    out = fgsm_in_image(self._attack, self._encoder, rgb, out, dets.landmarks[keep], z_id, self.cfg.defense_eps)
            return out, failed
        from .network import generate_network

        return generate_network(self, rgb, dets, tracks, still)

    def _in_place(self, rgb: np.ndarray, out: np.ndarray, dets: Detections, still: bool,
                  tolerance: float = IN_PLACE) -> np.ndarray:
        """Is each generated face found again on the output where the original's was (5-landmark
        error <= `tolerance` of the eye distance)? Photos: the detector run on the whole output, as a
        user's next tool would; video frames: the cheaper second look at the face's own crop,
        before and after."""
        if still:
            found = self.detector(out)
            ok = np.zeros(len(dets), bool)
            for i, (box, lm) in enumerate(zip(dets.boxes, dets.landmarks)):
                j = match_face(box, found.boxes)
                ok[i] = j is not None and landmark_error(found.landmarks[j], lm) <= tolerance
            return ok
        _, _, before = self.detector.second_look(rgb, dets.landmarks)
        again, _, after = self.detector.second_look(out, dets.landmarks)
        err = np.linalg.norm(after - before, axis=2).mean(1)
        return (again >= CONFIRM_SCORE) & ~(err > tolerance)  # a face not found again before is judged by `again` alone

    def anonymize_video(self, src: str | Path, dst: str | Path, keep_identities: bool = False, **video_options):
        """Anonymize a video file; keeps resolution, timestamps, frame count and audio. Faces are
        tracked, so a face missed for a few frames is still anonymized. The ITM starts afresh
        unless `keep_identities`. Returns VideoInfo."""
        from .video import process_video

        self.reset(identities=not keep_identities)
        return process_video(src, dst, VideoStream(self), progress=self.cfg.progress, **video_options)


class VideoStream:
    """Frames in, anonymized frames out (a few frames later): detection, tracking with gap filling
    and landmark smoothing, then `anonymize_frame` with the track ids.

    With `look_ahead` (default: where OpenCV may use more than one thread), the next frame's faces
    are detected on a thread of its own, with a YuNet of its own, while this frame's are drawn:
    the drawing is mostly single-threaded Python and NumPy, and the detector's full-resolution
    pass is about 40% of a talking-head clip's time. The frames and faces are the same either way.
    While it looks ahead, the drawing's torch (SFace) runs on one thread fewer, leaving that core
    to the detector; `close` (or `flush`) gives torch its threads back.
    """

    def __init__(self, anonymizer: Anonymizer, max_gap: int = 5, look_ahead: bool | None = None):
        from .track import FaceTracker

        self.anon = anonymizer
        self.tracker = FaceTracker(max_gap=max_gap)
        if look_ahead is None:
            look_ahead = cv2.getNumThreads() > 1  # a cluster worker given one thread keeps to it
        self._ahead = None
        # not where a caller brought a detect or detector of its own
        if (look_ahead and getattr(anonymizer.detect, "__func__", None) is Anonymizer.detect
                and type(anonymizer.detector) is FaceDetector):
            from concurrent.futures import ThreadPoolExecutor

            self._detector = anonymizer.detector.twin()
            self._ahead = ThreadPoolExecutor(1, thread_name_prefix="fiva-detect")
            self._threads = torch.get_num_threads()
            torch.set_num_threads(max(self._threads - 1, 1))
        self._pending = None  # (frame, its detections to come)
        self._live: set[int] = set()  # the tracks in the last frame given to the anonymizer

    def push(self, rgb: np.ndarray) -> list[np.ndarray]:
        if self._ahead is None:
            return self._track(rgb, self.anon.detect(rgb))
        before, self._pending = self._pending, (rgb, self._ahead.submit(self._detector, rgb))
        return [] if before is None else self._track(before[0], before[1].result())

    def flush(self) -> list[np.ndarray]:
        out = []
        if self._pending is not None:
            (rgb, found), self._pending = self._pending, None
            out = self._track(rgb, found.result())
        self.close()
        out += [self._apply(img, tf) for img, tf in self.tracker.flush()]
        self.anon.stats["filled"] += self.tracker.filled
        return out

    def close(self) -> None:
        """Stop looking ahead: the detection thread ends and torch gets its threads back."""
        if self._ahead is not None:
            self._ahead.shutdown()
            self._ahead = None
            torch.set_num_threads(self._threads)

    def _track(self, rgb: np.ndarray, dets: Detections) -> list[np.ndarray]:
        return [self._apply(img, tf) for img, tf in self.tracker.push(rgb, dets)]

    def _apply(self, img, tf) -> np.ndarray:
        out = self.anon.anonymize_frame(img, tf.dets, tf.tracks)
        live = {int(t) for t in tf.tracks}
        # the tracker fills a track's gaps before it hands a frame over: one missing is one ended
        self.anon.forget_tracks(self._live - live)
        self._live = live
        return out


def track_key(track, kind: str | None = None):
    """The key of a face track's remembered state in `Anonymizer._tracks` (kind None: its identity)."""
    return int(track) if kind is None else (kind, int(track))


def track_of(key) -> int:
    """The track id of a `track_key`."""
    return key if isinstance(key, int) else key[1]


def _reference_files(paths) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = files_under(p, IMAGE_EXTS)
            if not found:
                raise ValueError(f"{p}: no reference photos in this folder")
            files += found
        else:
            files.append(p)
    return files


def _check_rgb(rgb) -> None:
    if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
        raise ValueError("expected an RGB uint8 array [H,W,3]")


def _shipped_attack(cfg: AnonymizeConfig) -> Path | None:
    """The shipped attack R trained against this config's generator (its shipped weights), if any."""
    from ..weights import FIVA112_ATTACK, metadata

    if cfg.model is not None or cfg.method != "fiva":
        return None  # other weights: the shipped R may not fit them
    for path in dict.fromkeys((DEFAULT_ATTACK, FIVA112_ATTACK)):
        if path.exists():
            against = metadata(path).get("trained_against", "fiva")  # R from before stored pairs: fiva-112
            if ("anchor-face" in against) == (cfg.generator == "anchor-face") and cfg.generator in ("anchor-face", "fiva"):
                return path
    return None


def _try_dlib(required: bool):
    try:
        from ..faces.identity import DlibEvaluator

        return DlibEvaluator()
    except ImportError:
        if required:
            raise ValueError("--verify needs the dlib evaluator: pip install dlib-bin face-recognition-models (fiva's dependencies)") from None
        log.debug("dlib evaluator not installed: verification uses SFace only")
        return None
