"""The anchor-face bank: synthetic identities as faces, not only as vectors (k-Same).

Each bank face is the average of k aligned training faces of k different people of one sex, each
first warped to the group's mean 68-point shape (Newton, Sweeney and Malin 2005; a donor that
dominates the average is weighted down), and kept only if it and its drawings on a set of other
training faces lie more than 0.6 (dlib) from each of its donors. It is stored
with its 68-point shape, its SFace embedding (an anchor of Eq. 1: `anchor_space()` gives the ITM
the bank's own anchors, so the fake identity it picks is a face that can be drawn), its sex label
and its skin-tone statistics. scripts/build_face_bank.py builds it from LFW training identities;
MODEL_CARD.md describes the data, k and the donor checks.

Layout: textures [N,S,S,3] uint8 RGB in the canonical frame (the face's 5 key points on
`canonical_template(S)`), shapes [N,68,2] float32 in that frame's pixels. On disk the textures are
JPEG bytes inside the safetensors file (a bank of 256 px faces stays a few MB); nothing is unpickled.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from safetensors.numpy import load_file, save_file

from ..faces.align import ARCFACE_112
from .anchors import AnchorSpace

SEXES = ("male", "female")
FAR_CANDIDATES = 3  # Eq. 1's candidates with a target descriptor: the bank faces farthest from it (dlib)
TONE_MAX = 60.0  # ... among the bank faces whose cheeks are within this LAB lightness of the target's


def canonical_template(size: int) -> np.ndarray:
    """Where the 5 key points sit in a bank texture of side `size`: the ArcFace template shrunk to
    0.7 about the centre and raised by 4%, so the jaw and the forehead fit inside."""
    return (((ARCFACE_112 / 112.0 - 0.5) * 0.7 + np.array([0.5, 0.46])) * size).astype(np.float32)


@dataclass
class AnchorFaceBank:
    textures: np.ndarray  # [N,S,S,3] uint8 RGB, canonical frame
    shapes: np.ndarray  # [N,68,2] float32, canonical frame pixels
    sface: np.ndarray  # [N,128] float32 unit SFace embeddings of the textures
    sex: np.ndarray  # [N] uint8, index into SEXES
    tone: np.ndarray  # [N,6] float32: LAB mean and std over the cheeks (OpenCV 8-bit LAB)
    triangles: np.ndarray  # [T,3] int32: the mesh triangulation (warp.py) shared by all faces
    donor_distance: np.ndarray  # [N] float32: smallest dlib distance of the face (its texture) to its k donors
    meta: dict = field(default_factory=dict)
    # logistic regression on dlib descriptors, P(female) = sigmoid(d . sex_w + sex_b), fitted on
    # the first-name labels of LFW training identities: targets get bank faces of their own sex
    sex_w: np.ndarray | None = None  # [128] float32
    sex_b: float = 0.0
    # dlib descriptors [N,128] of the bank faces' own textures (synthetic identities, what anyone
    # could compute from the textures): Eq. 1 takes the bank faces farthest from the target by them
    dlib: np.ndarray | None = None
    # [N] bool: bank faces whose eye region is ghosted (brows, lids or glasses rims of donors that
    # do not line up; scripts/build_face_bank.py `eye_ghosts`): Eq. 1 passes them over while the
    # pool has enough others (`prefer_clean`); a retry after failed verification takes one only
    # once no clean face is left (`native.farther_anchor`)
    ghost: np.ndarray | None = None
    # [N] float32: how far above the brows (eye distances) a drawing of the bank face may reach:
    # where its donors' fringe starts (reviewed by eye, scripts/build_face_bank.py `fringes`). A
    # photo's taller forehead (native.STILL_RENDER, 0.6) stops there; None or inf: no limit
    forehead: np.ndarray | None = None
    # [N] bool: bank faces that look aged (creased foreheads, older donors; reviewed by eye,
    # scripts/build_face_bank.py `aged`): on a face drawn larger than the texture holds, Eq. 1 and
    # the retries give them only to targets dlib reads as older (`reads_older`) while the pool has
    # others (`prefer_age`, `SexMatchedAnchorSpace.target_large`)
    aged: np.ndarray | None = None
    # [N] bool: bank faces whose drawings looked smeared or grotesque far more often than others'
    # (reviewed by eye, scripts/build_face_bank.py `poor`): taken last, as ghosted ones are
    # (`prefer_clean`), but kept apart from `ghost` so that the age axis, read off the faces that are
    # not ghosted (`age_axis`), does not move when one is marked
    poor: np.ndarray | None = None
    # logistic regression on dlib descriptors, P(dark skin) = sigmoid(d . dark_w + dark_b), fitted on
    # LFW training faces labelled by eye (scripts/data/dark_skin_train.txt); and [N] bool, the bank
    # faces made from dark-skinned donors (scripts/build_face_bank.py --dark-only). A target read as
    # dark-skinned gets those faces, and no one else does (`match_skin`): cheek lightness alone read
    # dim light as dark skin, and the darkest tone bin of light and dark donors averaged to light
    # faces painted brown. None in the shipped bank: such faces drew no better (MODEL_CARD.md,
    # "Tried and not shipped"); a bank built with them is used through --model
    dark_w: np.ndarray | None = None  # [128] float32
    dark_b: float = 0.0
    dark: np.ndarray | None = None
    _lipless: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # `lipless`'s textures

    def __len__(self) -> int:
        return len(self.textures)

    @property
    def size(self) -> int:
        return self.textures.shape[1]

    def save(self, path: str | Path, quality: int = 95) -> None:
        blobs = [cv2.imencode(".jpg", cv2.cvtColor(t, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].ravel()
                 for t in self.textures]
        offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        save_file({"jpeg": np.concatenate(blobs).astype(np.uint8), "jpeg_offsets": offsets,
                   "shapes": self.shapes.astype(np.float32), "sface": self.sface.astype(np.float32),
                   "sex": self.sex.astype(np.uint8), "tone": self.tone.astype(np.float32),
                   "triangles": self.triangles.astype(np.int32), "donor_distance": self.donor_distance.astype(np.float32),
                   **({} if self.sex_w is None else {"sex_w": self.sex_w.astype(np.float32),
                                                      "sex_b": np.array([self.sex_b], np.float32)}),
                   **({} if self.dlib is None else {"dlib": self.dlib.astype(np.float32)}),
                   **({} if self.ghost is None else {"ghost": self.ghost.astype(np.uint8)}),
                   **({} if self.forehead is None else {"forehead": self.forehead.astype(np.float32)}),
                   **({} if self.aged is None else {"aged": self.aged.astype(np.uint8)}),
                   **({} if self.poor is None else {"poor": self.poor.astype(np.uint8)}),
                   **({} if self.dark_w is None else {"dark_w": self.dark_w.astype(np.float32),
                                                       "dark_b": np.array([self.dark_b], np.float32)}),
                   **({} if self.dark is None else {"dark": self.dark.astype(np.uint8)})},
                  str(path), metadata={k: str(v) for k, v in self.meta.items()})

    @classmethod
    def load(cls, path: str | Path) -> "AnchorFaceBank":
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: anchor-face bank not found")
        d = load_file(str(path))
        with safe_open(str(path), "np") as f:
            meta = dict(f.metadata() or {})
        off = d["jpeg_offsets"]
        tex = np.stack([cv2.cvtColor(cv2.imdecode(d["jpeg"][off[i]:off[i + 1]], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                        for i in range(len(off) - 1)])
        return cls(tex, d["shapes"], d["sface"], d["sex"], d["tone"], d["triangles"], d["donor_distance"], meta,
                   d.get("sex_w"), float(d["sex_b"][0]) if "sex_b" in d else 0.0, d.get("dlib"),
                   d["ghost"].astype(bool) if "ghost" in d else None, d.get("forehead"),
                   d["aged"].astype(bool) if "aged" in d else None, d["poor"].astype(bool) if "poor" in d else None,
                   d.get("dark_w"), float(d["dark_b"][0]) if "dark_b" in d else 0.0,
                   d["dark"].astype(bool) if "dark" in d else None)

    def lipless(self, index: int, grow: float) -> np.ndarray:
        """Bank face `index`'s texture with its lips (the outer outline grown by `grow` of its eye
        distance) filled in from the skin around them (OpenCV's Telea inpainting), for a drawing
        that keeps the target's whole mouth: the average's lips are blurred past its own outline,
        and that border, left beside the target's lips, reads as a dark line. Cached."""
        key = (int(index), float(grow))
        if key not in self._lipless:
            shape = self.shapes[index]
            iod = float(np.linalg.norm(shape[36:42].mean(0) - shape[42:48].mean(0)))
            mask = np.zeros(self.textures.shape[1:3], np.uint8)
            cv2.fillPoly(mask, [np.round(shape[48:60]).astype(np.int32)], 1)
            k = 2 * int(round(grow * iod)) + 1
            mask = cv2.dilate(mask, np.ones((k, k), np.uint8))
            self._lipless[key] = cv2.inpaint(np.ascontiguousarray(self.textures[index]), mask, 3, cv2.INPAINT_TELEA)
        return self._lipless[key]

    def forehead_reach(self, index: int, forehead: float) -> float:
        """`forehead` (a RenderConfig's, eye distances above the brows), held to bank face
        `index`'s own reach (`forehead`): a drawing stops below its donors' fringe."""
        return forehead if self.forehead is None else min(forehead, float(self.forehead[index]))

    def predict_sex(self, descriptor: np.ndarray) -> int | None:
        """0 (male) or 1 (female) for a face's dlib descriptor, None without a classifier."""
        if self.sex_w is None:
            return None
        return int(float(descriptor @ self.sex_w) + self.sex_b > 0)

    def anchor_space(self, margin: float = 0.0, seed: int = 0, candidates: int = 4) -> AnchorSpace:
        """The bank's SFace embeddings as the anchor space S_a of Eq. 1 (few candidates: the
        bank is small, and ties broken among 4 keep the choice spread). Set its `target_sex`
        before sampling and Eq. 1 runs over the bank faces of that sex only; set its
        `target_descriptor` too and over the ones farthest from the target (`farthest`)."""
        space = SexMatchedAnchorSpace(self.sface.copy(), margin=margin, candidates=min(candidates, len(self) - 1), seed=seed)
        space.bank = self
        return space

    def reads_dark(self, descriptor: np.ndarray) -> bool | None:
        """Whether dlib's `descriptor` [128] of a face reads as dark-skinned; None without the classifier."""
        if self.dark_w is None:
            return None
        return bool(float(descriptor @ self.dark_w) + self.dark_b > 0)

    def match_skin(self, descriptor: np.ndarray | None, pool: np.ndarray, least: int = FAR_CANDIDATES) -> np.ndarray:
        """The bank faces of `pool` whose donors' skin matches the target's (dlib's `descriptor`,
        `reads_dark`): a dark-skinned target's the ones made from dark-skinned donors (`dark`), if at
        least `least` are, else `pool`; anyone else's the others (the same fallback). `pool`
        without a descriptor, the classifier or dark faces."""
        if descriptor is None or self.dark is None or self.dark_w is None or not self.dark.any():
            return pool
        same = pool[self.dark[pool] == self.reads_dark(descriptor)]
        return same if len(same) >= least else pool

    def nearest_tone(self, lightness: float, pool: np.ndarray, max_diff: float = TONE_MAX) -> np.ndarray:
        """The bank faces of `pool` whose cheeks' lightness (`tone`, LAB L) is within `max_diff`
        of `lightness`; the FAR_CANDIDATES nearest if fewer are."""
        diff = np.abs(self.tone[pool, 0] - lightness)
        ok = pool[diff <= max_diff]
        return ok if len(ok) >= FAR_CANDIDATES else pool[np.argsort(diff)[:FAR_CANDIDATES]]

    @property
    def last(self) -> np.ndarray:
        """[N] bool: the bank faces Eq. 1 and the retries take last, ghosted (`ghost`) or drawn
        poorly (`poor`)."""
        out = np.zeros(len(self), bool)
        for mark in (self.ghost, self.poor):
            if mark is not None:
                out |= mark
        return out

    def prefer_clean(self, pool: np.ndarray, least: int = FAR_CANDIDATES) -> np.ndarray:
        """The bank faces of `pool` that are neither ghosted around the eyes (`ghost`) nor drawn
        poorly (`poor`), if at least `least` are; else `pool`. dlib reads a ghosted face (a faint
        glasses rim, doubled brows) as far from everyone, so Eq. 1's farthest pick favoured them:
        on 200 LFW faces the most drawn bank face (15 times) was one with a glasses rim."""
        clean = pool[~self.last[pool]]
        return clean if len(clean) >= least else pool

    def reads_older(self, descriptor: np.ndarray) -> bool | None:
        """Whether dlib's `descriptor` [128] of a target reads as old as the bank's aged faces:
        its projection on the bank's age axis (`age_axis`) at or past the midpoint between the
        aged and the other clean faces. None without descriptors or aged marks."""
        axis = self.age_axis()
        return None if axis is None else bool((descriptor - axis[1]) @ axis[0] >= 0.0)

    def age_axis(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(direction [128] unit, midpoint [128]) in dlib's descriptor space from the bank's own
        faces: within each sex, the mean of the aged faces minus that of the other clean ones
        (not ghosted), the two sexes averaged and the sex classifier's direction taken out (LFW's
        women are younger: the raw axis read sex). 60 LFW fold-1 faces sorted by it, looked at:
        the older half mostly past the midpoint, the young mostly before it, older men with
        beards or glasses read young as often as not."""
        if self.aged is None or self.dlib is None or not self.aged.any():
            return None
        clean = ~self.ghost if self.ghost is not None else np.ones(len(self), bool)
        ends, mids = [], []
        for sex in np.unique(self.sex):
            old, rest = self.aged & (self.sex == sex), ~self.aged & clean & (self.sex == sex)
            if old.any() and rest.any():
                ends.append(self.dlib[old].mean(0) - self.dlib[rest].mean(0))
                mids.append((self.dlib[old].mean(0) + self.dlib[rest].mean(0)) / 2)
        if not ends:
            return None
        axis = np.mean(ends, 0)
        if self.sex_w is not None:
            axis = axis - (axis @ self.sex_w) / (self.sex_w @ self.sex_w) * self.sex_w
        return (axis / np.linalg.norm(axis)).astype(np.float32), np.mean(mids, 0).astype(np.float32)

    def prefer_age(self, pool: np.ndarray, descriptor: np.ndarray | None, least: int = FAR_CANDIDATES) -> np.ndarray:
        """The bank faces of `pool` that are not aged (`aged`) if the target (dlib's `descriptor`)
        does not read older (`reads_older`) and at least `least` are; else `pool`. Eq. 1 takes the
        bank faces dlib reads farthest from the target, and age is much of what dlib reads: young
        targets got the bank's oldest faces (21 of 45 wild faces drew an aged one, young ones among
        them: Paul Rudd an old grey man, Kate Siegel and the Jolie close-up a creased forehead,
        crumpled at their size). The caller applies it to faces drawn larger
        than the texture holds: there an aged texture's creases are crumpled skin, where on a face
        LFW's size it is an older person, and held to every face it cost 200 LFW faces' first
        drawings 94.5% -> 91.0% beyond dlib's 0.6."""
        if descriptor is None or self.reads_older(descriptor) in (None, True):
            return pool
        young = pool[~self.aged[pool]]
        return young if len(young) >= least else pool

    def farthest(self, descriptor: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
        """The `k` bank faces of `pool` whose textures dlib reads farthest from a target's
        `descriptor` [128] (in memory only), farthest first."""
        d = np.linalg.norm(self.dlib[pool] - descriptor, axis=1)
        return pool[np.argsort(-d)[:k]]

    def index_of(self, anchor: np.ndarray) -> int:
        """The bank face whose embedding an anchor vector is (the ITM hands out vectors)."""
        return int(np.argmax(self.sface @ (anchor / np.linalg.norm(anchor))))

    def anchor_of(self, index: int) -> np.ndarray:
        """Bank face `index`'s anchor vector (its unit SFace embedding): `index_of`'s inverse."""
        return self.sface[index] / np.linalg.norm(self.sface[index])

    def sample(self, rng: np.random.Generator, sex: int | None = None) -> int:
        """A random bank face index, of one sex if given."""
        pool = np.arange(len(self)) if sex is None else np.flatnonzero(self.sex == sex)
        return int(rng.choice(pool if len(pool) else np.arange(len(self))))


def cheek_boxes(shape: np.ndarray, iod: float, offset=None) -> list[tuple]:
    """A face's two cheek boxes (x0, y0, x1, y1; unrounded, in the pixels of an image placed at
    `offset`, None: at 0), beside the nose and under the eyes, 0.28 x 0.24 eye distances, placed by
    its 68 points `shape` as the bank's `tone` is (scripts/build_face_bank.py `regions`)."""
    out = []
    for c in (shape[[1, 2, 31, 41]].mean(0), shape[[15, 14, 35, 46]].mean(0)):
        x, y = c if offset is None else c - offset
        out.append((x - 0.14 * iod, y - 0.12 * iod, x + 0.14 * iod, y + 0.12 * iod))
    return out


def cheek_lightness(rgb: np.ndarray, shape: np.ndarray) -> float:
    """Mean LAB lightness (OpenCV 8-bit) over a face's two cheek boxes (`cheek_boxes`)."""
    iod = float(np.linalg.norm(shape[36:42].mean(0) - shape[42:48].mean(0)))
    h, w = rgb.shape[:2]
    vals = []
    for bx0, by0, bx1, by1 in cheek_boxes(shape, iod):
        x0, y0 = int(max(bx0, 0)), int(max(by0, 0))
        x1, y1 = int(min(bx1, w)), int(min(by1, h))
        if x1 > x0 and y1 > y0:
            vals.append(cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2LAB)[..., 0].reshape(-1))
    return float(np.concatenate(vals).mean()) if vals else 128.0


def bank_descriptors(textures: np.ndarray, detector, evaluator) -> np.ndarray:
    """dlib descriptors [N,128] of bank textures [N,S,S,3] (the largest face YuNet finds on each;
    the canonical frame's key points if it finds none)."""
    out = []
    for t in textures:
        d = detector(t)
        if len(d):
            box = d.boxes[d.largest()]
        else:
            k = canonical_template(t.shape[0])
            c, r = k.mean(0), 1.2 * float(np.linalg.norm(k[1] - k[0]))
            box = np.array([c[0] - r, c[1] - r, c[0] + r, c[1] + r], np.float32)
        out.append(evaluator.embed(t, box))
    return np.stack(out).astype(np.float32)


def eye_band(shape: np.ndarray, size: int) -> np.ndarray:
    """[size,size] bool: both eyes with their brows, lids and the place of glasses rims (0.3 eye
    distances below the eyes, 0.15 beyond their outer corners), placed by 68 points `shape`."""
    m = np.zeros((size, size), np.uint8)
    iod = float(np.linalg.norm(shape[36:42].mean(0) - shape[42:48].mean(0)))
    for brow, eye, side in ((slice(17, 22), slice(36, 42), -1), (slice(22, 27), slice(42, 48), 1)):
        pts = np.concatenate([shape[brow] - [0, 0.12 * iod], shape[eye] + [0, 0.3 * iod], shape[eye] + [side * 0.15 * iod, 0]])
        cv2.fillConvexPoly(m, cv2.convexHull(pts.astype(np.int32)), 1)
    return m.astype(bool)


def eye_coherence(warped: np.ndarray, shape: np.ndarray, sigma: float = 3.0) -> float:
    """How well k donors' eye regions line up, warped to their mean 68-point `shape` (textures
    [k,S,S,3]): the energy of the average's detail (finer than `sigma` pixels) over the donors'
    own, each donor's detail scaled to unit contrast first. 1: they agree; 1/k: nothing lines up
    and the average is a ghost (k pairs of lids and brows at once, or one donor's glasses rim at
    1/k of its contrast). scripts/build_face_bank.py marks the bank faces under
    EYE_COHERENCE_MIN as ghosted (`AnchorFaceBank.ghost`)."""
    gray = warped.astype(np.float32).mean(3)
    m = eye_band(shape, warped.shape[1])
    hp = np.stack([g - cv2.GaussianBlur(g, (0, 0), sigma) for g in gray])[:, m]
    hp /= hp.std(1, keepdims=True) + 1e-6
    return float((hp.mean(0) ** 2).mean() / (hp ** 2).mean())


def add_descriptors(path: str | Path, detector, evaluator) -> None:
    """Store the bank faces' dlib descriptors in a bank file, in place (the JPEG textures are
    kept byte for byte)."""
    from safetensors import safe_open

    bank = AnchorFaceBank.load(path)
    d = load_file(str(path))
    with safe_open(str(path), "np") as f:
        meta = dict(f.metadata() or {})
    d["dlib"] = bank_descriptors(bank.textures, detector, evaluator)
    save_file(d, str(path), metadata=meta)


class SexMatchedAnchorSpace(AnchorSpace):
    """Eq. 1 restricted to the bank faces of the target's sex (`target_sex`, set per face by the
    caller; None: all): a woman given a man's average face, or the reverse, looks wrong whatever
    the numbers say (the k-Same trial).

    With the target's dlib descriptor (`target_descriptor`, set per face, in memory only) and a
    bank that has its faces' own, the candidates are the `candidates` bank faces dlib reads
    farthest from the target rather than the ones nearest orthogonal to it by SFace: what stays
    of the target (hair, outline, kept eyes and mouth) pulls the drawing back towards it, and a
    bank face far from it to start with lands farthest. With the target's cheek lightness too
    (`target_tone`, `cheek_lightness`), only bank faces within TONE_MAX of it are candidates:
    dlib reads skin tone strongly, and a dark bank face colour-matched onto a light target (or
    the reverse) looks grey and dirty. 60 LFW faces drawn with each of their sex's bank faces:
    the SFace candidates left 3.0% within dlib's 0.6 of the original, the 3 farthest by dlib
    none (lightness differences up to 122), within 60 of the target's lightness 0.6% (the
    tone-nearest half: 1.7%)."""

    bank: AnchorFaceBank
    target_sex: int | None = None
    target_descriptor: np.ndarray | None = None
    target_tone: float | None = None
    # the target is drawn larger than the bank's texture holds (anchor_face.TEXTURE_HOLDS): an aged
    # bank face's creases read as crumpled skin there, so it gets one only if it reads older (`prefer_age`)
    target_large: bool = False

    def sample(self, z_id: np.ndarray) -> np.ndarray:
        z = z_id / np.linalg.norm(z_id)
        pool = np.flatnonzero(self.bank.sex == self.target_sex)
        if self.target_sex is None or len(pool) < 2:
            pool = np.arange(len(self.bank))
        if self.target_descriptor is not None and self.bank.dlib is not None:
            pool = self.bank.match_skin(self.target_descriptor, pool)
            if self.target_tone is not None:
                pool = self.bank.nearest_tone(self.target_tone, pool)
            pool = self.bank.prefer_clean(pool)
            if self.target_large:
                pool = self.bank.prefer_age(pool, self.target_descriptor)
            best = self.bank.farthest(self.target_descriptor, pool, FAR_CANDIDATES)
            return self.anchors[int(self.rng.choice(best))].copy()
        if self.target_sex is None or len(pool) == len(self.bank):
            return super().sample(z_id)
        pool = self.bank.prefer_clean(pool)
        score = np.abs(np.abs(self.anchors[pool] @ z) - self.margin)
        k = min(self.candidates, len(pool))
        best = pool[np.argpartition(score, k - 1)[:k]]
        return self.anchors[int(self.rng.choice(best))].copy()
