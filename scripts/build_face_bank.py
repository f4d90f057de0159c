"""Build the anchor-face bank (src/fiva/anonymize/face_bank.py) from LFW training identities.

    OMP_NUM_THREADS=1 python scripts/build_face_bank.py [--lfw ../shared/data/lfw] [--k 6]
        [--men 50] [--women 45] [--out src/fiva/data/face_bank.safetensors] [--cache runs/face_bank]
        [--candidates-from-cache]

Needs the [eval] extra (dlib) and `gender-guesser` (pip install gender-guesser; offline lexicon).

1. Scan: one face per training identity (folds 2-10 of people.txt; fold 1 is never read), up to
   three images for women (LFW has few). Per face: YuNet, dlib's 68 points, the sex of the first
   name, and screening measures on the face aligned to the bank's canonical frame: yaw and roll,
   eye and mouth opening, dark eye regions (sunglasses), edges under the eyes, over the nose bridge,
   at the temples and beside the eyes (glasses), non-skin colour over the forehead (caps, fringes) and edges on
   the lower face (hands, beards). Faces in the worst share of each measure are dropped.
2. Donors: per sex, faces sorted by skin tone (cheek lightness) into bins, so the darkest people
   make their own identities instead of vanishing into lighter averages; in each bin, groups of k
   people drawn at random with every pair more than --spread dlib distance apart.
3. Average: every donor warped to the group's mean 68-point shape, then averaged, then pushed
   away from its sex's mean face by --caricature (shape and texture). Checked: the
   average must be found by YuNet and lie more than --min-donor-distance (dlib) from each of its
   donors; while it does not, the nearest donor's weight is halved (up to --reweigh times: one
   donor often dominates an average), then the group is redrawn. A donor joins at most --reuse
   groups (LFW has too few women for disjoint groups).
4. Render check and selection: --pool times as many candidates as wanted are made; each is drawn
   (AnchorFaceRenderer, default RenderConfig) on --targets training faces of its sex that are no
   donors (people the screening turned away: turned heads, glasses, as users' photos have), and
   dropped if any drawing comes within --render-donor-distance of one of its donors, or more
   than --weak drawings within 0.6 of the target they are drawn on (a drawing
   mixes the bank face with the target: it can land nearer a donor than the bank face itself;
   about 1 drawing in 20 of an unchecked candidate comes within 0.6). Candidates whose lips are
   parted (mouth opening over --max-mouth: the averaged smiles' teeth show between them) are
   dropped too.
   Of the rest, per sex, a greedy pick of the faces whose drawings on the same target lie
   farthest apart (dlib > 0.6 on most targets) and whose textures are no near twins: a retry or
   a second session then gives another person, not the same one twice.
5. Review: the faces of --drop (REVIEWED_OUT, chosen by looking at the built bank) are left out:
   glasses rims, a double face, a wire, a man among the women that the donors' screening let
   through and the average shows.
6. Push (--push-only BANK, run on a built bank; not on the shipped one): each face pushed
   further from its sex's mean bank face, by the largest of --push, --push - 0.1, ... that keeps
   it more than --min-donor-distance from each of its donors (a push towards the donor the
   average leans to is taken back). Six-donor averages still look alike when drawn: two of them
   drawn on one LFW face stayed within dlib's 0.6 of each other on 58.5% of faces (two real
   people, drawn the same way as a single rendering, on 27%: scripts/two_apart_ceiling.py).
   The faces stay the ones reviewed, so the reviews by eye keep applying. The shipped bank
   pushed by 1.3 (42 of 66 faces moved) gained 7 points there on LFW and 13 on the wild photos
   (three seeds), but lost 2 on the wild photos' "beyond 0.6" and drew 169 fewer of the 12
   talking-head clips' 4,426 faces, with 9 bank-face switches instead of 3: not shipped.
7. Dark-skinned donors (--dark-only BANK, on a built bank; not on the shipped one): faces made as
   in steps 2-4 from the training people labelled dark-skinned by eye
   (scripts/data/dark_skin_train.txt: the 500 darkest-cheeked, 154 of them) or read so by a
   logistic regression on dlib descriptors fitted on those labels (`fit_dark_classifier`; on the
   200 darkest-cheeked fold-1 faces, labelled alike and never trained on, it finds 23 of the 25
   and takes 4 of the 175 others), with up to DARK_IMAGES images each and a looser screen; appended
   with `AnchorFaceBank.dark` and the classifier, so that a dark-skinned target gets them and no one
   else does (`AnchorFaceBank.match_skin`). dlib reads dark-skinned strangers as nearer one another
   (median 0.70 against 0.78), so their groups, donor check and render check are looser (DARK_*).
   Tried, not shipped (docs/model_card_log.md, "thirty-seventh session"): on the 25 dark-skinned
   fold-1 faces the drawings came nearer the originals for dlib (beyond 0.6: 96% -> 84%), two of
   the faces apart 24% -> 8%, and by eye as many looked worse as better; on the first 200 fold-1
   faces the classifier gave two Asian faces the new ones.

Cached under --cache (git-ignored runs/): scan results and donors' dlib descriptors (real identity
data: kept there, never shipped); the bank itself holds no donor data, only each face's smallest
distance to its donors. The candidates (the averages, made before the render check) depend only on
the scan, the settings and --seed, not on the renderer: a bank whose build cache is lost gets its
donors back with --groups-only BANK once a build with the bank's settings (--out elsewhere: the
render check of today's renderer may select other faces) has cached them; the faces no cached
candidate matches get theirs from their own textures (`recover_groups`). The shipped bank's 66
faces were all among the candidates such a build made until the thirty-sixth session; on
2026-12-05 (the cache lost, the scan redone: the same 853 donors; OpenCV 5.1, dlib-bin 20.0.1)
a build's candidates held 25 of them: the averages' path through the donor checks has moved. The
other 41 were found from their textures, each rebuilt within 5.1 grey levels (median 1.5);
on the 25 whose groups are known, 148 of 150 donors come back (two faces' lightest-weighted donor
is a look-alike), and the faces' distances to the donors found match those the build recorded
(median difference 0.002, largest 0.039). A pushed bank keeps its groups (--push-only updates
them), --groups-only refuses it.
"""
from __future__ import annotations

import argparse
import json
import time
import zlib
from itertools import combinations
from pathlib import Path

import cv2
import numpy as np
from safetensors import SafetensorError

from fiva.anonymize.face_bank import SEXES, AnchorFaceBank, add_descriptors, bank_descriptors, canonical_template, eye_coherence
from fiva.anonymize.warp import mesh, piecewise_affine, triangulate
from fiva.evaluate.lfw import read_folds
from fiva.faces import FaceDetector
from fiva.faces.align import similarity_transform, template, transform_points
from fiva.faces.landmarks68 import EYE_L, EYE_R, Landmarker68, eye_openness, five_points, mouth_opening, yaw_share
from fiva.weights import DEFAULT_FACE_BANK

SIZE = 256
PUSH_STEP = 0.1  # the steps in which `push_bank` tries smaller pushes
# mean absolute difference (grey levels) within which a stored bank texture is a build's own (the
# bank stores JPEG: the shipped bank's lie 0.6-1.2 from their candidates, others 13.6 or more)
STORED_TOLERANCE = 3.0
# mean absolute difference (grey levels) within which a bank face rebuilt from the donors
# `recover_groups` finds is taken for the stored one
RECOVER_TOLERANCE = 6.0
# Bank faces (their order as this script's defaults select them) removed after looking at the
# built bank, face by face at 196 px: what the screening of donors let through and an average
# shows as a ghost: glasses rims, even faint ones (0, 1, 10, 14, 15, 16, 21, 23, 24, 29, 36, 39,
# 43, 49, 63, 68, 82, 84, 85, 90), a double face (4), a donor's wire across the face (51, 74),
# a man's face among women's (54, 55, 71, 76), ghosted eyes (67, 77).
REVIEWED_OUT = (0, 1, 4, 10, 14, 15, 16, 21, 23, 24, 29, 36, 39, 43, 49, 51, 54, 55, 63, 67, 68, 71, 74, 76, 77, 82, 84,
                85, 90)

# Faces of the shipped bank (its own indices) whose eye region shows a ghost at 1.6x, looked at face
# by face after the eye-region work of 2026-11-30: faint glasses rims (1, 11, 20, 21, 22, 25, 28, 30,
# 46, 57, 63), doubled brows or lids (4, 6, 12, 19, 49, 53, 56, 59), smeared dark eye region (17, 29);
# and, looked at as forehead crops at 1.5x, a donor's fringe ghosted across the forehead (40, 50, 61, 62;
# 39 and 45, side fringes, after a retry drew 39's as a grey band across retinaface_img11.jpg's forehead;
# 18, strands down the forehead and temples, drawn as a crease across Alfonso Cuaron's forehead;
# 13 and 34, dark temple hair, drawn as brown or dark arcs over the temples of open foreheads even at
# 0.35 eye distances: Alexander Lukashenko's bald head, Bill Nelson's, where a photo's drawing in
# full drew 34's as a dark smear from the temple down past the eye).
# Not dropped (Eq. 1 passes them over while their pool has others, a retry takes one only once no clean
# face is left: `eye_ghosts`).
REVIEWED_GHOSTS = (1, 4, 6, 11, 12, 13, 17, 18, 19, 20, 21, 22, 25, 28, 29, 30, 34, 39, 40, 45, 46, 49, 50, 53, 56, 57,
                   59, 61, 62, 63)
# Women's faces of the shipped bank whose drawings look wrong far more often than others' (2026-12-04):
# on 200 LFW photos through the pipeline, of the 140 drawings that passed verification, 53 looked
# smeared or grotesque by eye; 48 drew 6 of 6 so, 36 5 of 7. Checked on 8 held-out LFW women (fold 1,
# after the first 200) drawn as a retry draws with six bank faces: 2 of 8 looked right with 48 and
# with 36, 5-6 with 43 and 52 (smeared eye regions and cheeks, a doubled mouth). Drawn with all 16
# clean women's faces on 10 more held-out women, 60 looked right on 1-2 of 10 (43, 37, 52: 8-9).
# Taken last, as ghosted faces are (`poor`; AnchorFaceBank.poor), but not ghosted: the bank's age
# axis (`AnchorFaceBank.age_axis`) is read off the faces that are not ghosted, and marking 60 (with
# 41) as a ghost moved it (retinaface_img11's young woman read older: -0.044 -> +0.001). 41 (4 of 10)
# is not marked: it draws the README's astronaut (make demo) as a natural woman, and without it her
# retries end on 37, drawn with heavy brows and a dark smear down one cheek.
REVIEWED_POOR = (36, 48, 60)
# Faces of the shipped bank, clean around the eyes, whose donors' hair shows between 0.35 and 0.6 eye
# distances above the brows (18's strands reach lower: it is ghosted too), looked at as forehead crops
# with those lines drawn and as retries' drawings (forehead 0.6) on an open forehead (Alfonso
# Cuaron, Meryl Streep) at 2x: dark streaks or blotches (5, 14, 18: Cuaron's forehead), hair strands
# (36, 41, 42, 44, 52, 55), dark patches (38, 60); and, drawn in full (native.FULL_RENDER) on every
# clean man of the bank over the open foreheads of Lukashenko and Bill Nelson, a dark band across
# the forehead at 0.6 (23: also the square forehead corner on Abdul Rahman) and strands (15); and,
# every woman of the bank drawn as a photo's first drawing (forehead 0.6) on the open, lit foreheads
# of Lisa Kudrow, Courteney Cox (multiface.jpg) and Kate Siegel at 1.3x: a grey or white blotch
# across the forehead (35) and dark patches at the temples (47, 54). Their drawings stop at 0.35
# (`fringes`; AnchorFaceBank.forehead). Ghosted faces were not reviewed so.
REVIEWED_FRINGES = (5, 14, 15, 18, 23, 35, 36, 38, 41, 42, 44, 47, 52, 54, 55, 60)
# Clean faces of the shipped bank that look aged, seen at 1.6x beside the others of their sex: creased
# foreheads and frown lines (women 36, 42, 44; men 14), older faces (women 37, 64; men 3, 9, 23, 31).
# Eq. 1 took them for young targets (dlib reads age, and they are far from the young), drawn at a
# portrait's size as crumpled skin. Ghosted faces were not reviewed so (`aged`).
REVIEWED_AGED = (3, 9, 14, 23, 31, 36, 37, 42, 44, 64)
# A bank face's lips parted wider than this (mouth opening) show teeth: looked at as mouth crops, the
# shipped bank's 11 faces over it (8, 27, 33, 35, 36, 38, 41, 46, 51, 52, 62; it predates this
# screen) all show teeth or a light band between the lips, and of the 11 between 0.09 and 0.12 two do
# (37, 49), the others closed, full or pale lips. Of two trial builds' faces picked by eye (k 5 at
# caricature 1.75, k 6 at 2.0), those with teeth 0.128-0.185, with closed lips 0.023-0.108.
MAX_MOUTH = 0.12
FRINGE_REACH = 0.35  # eye distances above the brows: RenderConfig.forehead's default
DARK_MEN, DARK_WOMEN = 12, 8  # --dark-only's faces wanted
DARK_SPREAD = 0.65  # --dark-only's smallest dlib distance between two donors of a group (`dark_only`)
DARK_CARICATURE = 2.0  # ... and their averages' push from their own mean face (--caricature: 1.5)
DARK_MIN_DONOR_DISTANCE = 0.62  # ... and each face's smallest dlib distance to its donors (--min-donor-distance: 0.68)
DARK_WEAK = 6  # ... and the check targets a face's drawing may stay within 0.6 of (--weak: 2)
DARK_REUSE, DARK_POOL = 6, 4.0  # ... and the most groups a donor joins, candidates per face wanted (--reuse 4, --pool 2.5)
DARK_IMAGES = 6  # ... and the most images of each dark-skinned person scanned (`scan_more`)
DARK_LAMBDA = 1e-2  # the dark-skin classifier's L2 (`fit_dark_classifier`)
# --dark-only's selected faces (numbered as its --dark-sheet) left out after looking at them at 1.8x:
# ghosted eyes or glasses rims (1, 8, 9), a double face (6), a rim and a moustache's ghost (5), a light
# face with puffy lids (11)
REVIEWED_DARK_OUT: tuple[int, ...] = (1, 5, 6, 8, 9, 11)
# ... and of the kept ones (bank indices), a faint rim around the eyes (71: the sheet's 10)
REVIEWED_DARK_GHOSTS: tuple[int, ...] = (71,)
EYE_COHERENCE_MIN = 0.42  # donors' agreement in the eye region (`eye_coherence`) below which a face is ghosted


def sex_of(name: str, detector) -> int | None:
    g = detector.get_gender(name.split("_")[0])
    return {"male": 0, "mostly_male": 0, "female": 1, "mostly_female": 1}.get(g)


def regions(shape: np.ndarray) -> dict[str, tuple[int, int, int, int]]:
    """Screening boxes (x0,y0,x1,y1) in canonical pixels, placed by the 68 points."""
    iod = float(np.linalg.norm(shape[EYE_L].mean(0) - shape[EYE_R].mean(0)))

    def box(cx, cy, hw, hh):
        return (int(cx - hw), int(cy - hh), int(cx + hw), int(cy + hh))

    el, er = shape[EYE_L].mean(0), shape[EYE_R].mean(0)
    cl, cr = shape[[1, 2, 31, 41]].mean(0), shape[[15, 14, 35, 46]].mean(0)
    brow_top = shape[17:27, 1].min()
    return {
        "cheek_l": box(*cl, 0.14 * iod, 0.12 * iod), "cheek_r": box(*cr, 0.14 * iod, 0.12 * iod),
        "eye_l": box(*el, 0.2 * iod, 0.08 * iod), "eye_r": box(*er, 0.2 * iod, 0.08 * iod),
        "under_l": box(el[0], el[1] + 0.22 * iod, 0.25 * iod, 0.1 * iod),
        "under_r": box(er[0], er[1] + 0.22 * iod, 0.25 * iod, 0.1 * iod),
        "bridge": box(*shape[27], 0.12 * iod, 0.1 * iod),
        "forehead": box(shape[27, 0], brow_top - 0.3 * iod, 0.6 * iod, 0.22 * iod),
        "chin": box(*shape[[7, 8, 9, 57]].mean(0), 0.35 * iod, 0.12 * iod),
        "jaw_l": box(*shape[[4, 5, 48]].mean(0), 0.12 * iod, 0.15 * iod),
        "jaw_r": box(*shape[[12, 11, 54]].mean(0), 0.12 * iod, 0.15 * iod),
    }


def screen_measures(crop: np.ndarray, shape: np.ndarray) -> dict[str, float]:
    lab = cv2.cvtColor(crop, cv2.COLOR_RGB2LAB).astype(np.float32)
    gray = lab[..., 0]
    gy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    lap = np.abs(cv2.Laplacian(cv2.GaussianBlur(gray, (3, 3), 0), cv2.CV_32F))
    r = regions(shape)

    def take(img, name):
        x0, y0, x1, y1 = r[name]
        return img[max(y0, 0):max(y1, 1), max(x0, 0):max(x1, 1)].reshape(-1, img.shape[-1] if img.ndim == 3 else 1)

    def mean_in(img, cx, cy, hw, hh):
        return float(img[max(int(cy - hh), 0):max(int(cy + hh), 1), max(int(cx - hw), 0):max(int(cx + hw), 1)].mean())

    # glasses: rims under and over the eyes, the bridge, the arms at the temples, the rims' sides;
    # each against the cheeks' edges (skin is smooth there)
    el, er = shape[EYE_L].mean(0), shape[EYE_R].mean(0)
    iod = float(np.linalg.norm(er - el))
    gx = np.abs(cv2.Sobel(cv2.GaussianBlur(gray, (3, 3), 0), cv2.CV_32F, 1, 0, ksize=3))
    ref = (mean_in(gy, *shape[[1, 2, 31, 41]].mean(0), 0.14 * iod, 0.12 * iod)
           + mean_in(gy, *shape[[15, 14, 35, 46]].mean(0), 0.14 * iod, 0.12 * iod)) / 2 + 1
    glasses = {
        "g_temple": (mean_in(gy, shape[36, 0] - 0.22 * iod, el[1], 0.12 * iod, 0.12 * iod)
                     + mean_in(gy, shape[45, 0] + 0.22 * iod, er[1], 0.12 * iod, 0.12 * iod)) / 2 / ref,
        "g_under": (mean_in(gy, el[0], el[1] + 0.25 * iod, 0.22 * iod, 0.1 * iod)
                    + mean_in(gy, er[0], er[1] + 0.25 * iod, 0.22 * iod, 0.1 * iod)) / 2 / ref,
        "g_bridge": mean_in(gy, shape[27, 0], (el[1] + shape[27, 1]) / 2, 0.08 * iod, 0.1 * iod) / ref,
        "g_side": (mean_in(gx, shape[36, 0] - 0.12 * iod, el[1] + 0.1 * iod, 0.06 * iod, 0.15 * iod)
                   + mean_in(gx, shape[45, 0] + 0.12 * iod, er[1] + 0.1 * iod, 0.06 * iod, 0.15 * iod)) / 2 / ref,
        "chroma": float(np.abs(lab[..., 1:] - 128).mean()),
    }
    cheeks = np.concatenate([take(lab, "cheek_l"), take(lab, "cheek_r")])
    skin_mu, skin_sd = cheeks.mean(0), cheeks.std(0) + 1e-3
    eyes_l = np.concatenate([take(gray, "eye_l"), take(gray, "eye_r")]).mean()
    fore = take(lab, "forehead")
    fore_off = np.linalg.norm((fore - skin_mu) / np.maximum(skin_sd, 4.0), axis=1)
    return {
        "tone_l": float(skin_mu[0]), "tone": np.concatenate([skin_mu, skin_sd]).tolist(),
        "dark_eyes": float(eyes_l / (skin_mu[0] + 1e-3)),
        "cap": float(np.mean(fore_off > 3.0)) if len(fore) else 1.0,
        "lower": float(np.concatenate([take(lap, "chin"), take(lap, "jaw_l"), take(lap, "jaw_r")]).mean()),
        **glasses,
    }


def to_canonical(rgb: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    m = similarity_transform(five_points(shape), canonical_template(SIZE))
    crop = cv2.warpAffine(rgb, m, (SIZE, SIZE), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return crop, transform_points(m, shape).astype(np.float32)


def read_rgb(path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def scan_face(lfw: Path, f: Path, name: str, sex: int, det, lm68) -> dict | None:
    """One image's scan row: the face nearest its centre, its 68 points and screening measures
    (None where YuNet finds no face)."""
    rgb = read_rgb(f)
    d = det(rgb)
    if len(d) == 0:
        return None
    c = np.array(rgb.shape[1::-1]) / 2
    i = int(np.argmin(np.linalg.norm((d.boxes[:, :2] + d.boxes[:, 2:]) / 2 - c, axis=1)))
    shape = lm68(rgb, d.landmarks[i:i + 1])[0]
    crop, cshape = to_canonical(rgb, shape)
    k = five_points(shape)
    roll = float(np.degrees(np.arctan2(*(k[1] - k[0])[::-1])))
    return {"name": name, "file": str(f.relative_to(lfw)), "sex": sex, "score": float(d.scores[i]),
            "box": d.boxes[i].tolist(), "shape": shape.tolist(), "cshape": cshape.tolist(),
            "yaw": yaw_share(k), "roll": roll, "eyes": eye_openness(shape), "mouth": mouth_opening(shape),
            **screen_measures(crop, cshape)}


def scan_more(lfw: Path, cache: Path, people: dict[str, int], most: int) -> list[dict]:
    """Scan rows of up to `most` images of each of `people` (name -> sex) that `scan` left out
    (it takes one per man, three per woman); cached in scan_more.json."""
    out_file = cache / "scan_more.json"
    have = json.loads(out_file.read_text()) if out_file.exists() else []
    done = {r["file"] for r in have} | {r["file"] for r in scan(lfw, cache)}
    det, lm68 = FaceDetector(score_threshold=0.5), Landmarker68()
    for name, sex in people.items():
        for f in sorted((lfw / "images" / name).glob("*.jpg"))[:most]:
            if str(f.relative_to(lfw)) not in done:
                r = scan_face(lfw, f, name, sex, det, lm68)
                if r is not None:
                    have.append(r)
                done.add(str(f.relative_to(lfw)))
    out_file.write_text(json.dumps(have))
    return have


def scan(lfw: Path, cache: Path) -> list[dict]:
    out_file = cache / "scan.json"
    if out_file.exists():
        return json.loads(out_file.read_text())
    import gender_guesser.detector

    gd = gender_guesser.detector.Detector(case_sensitive=False)
    folds = read_folds(lfw / "people.txt")
    evaluation = set(folds[0])
    train = sorted({n for f in folds[1:] for n in f} - evaluation)
    det, lm68 = FaceDetector(score_threshold=0.5), Landmarker68()
    rows, t0 = [], time.time()
    for j, name in enumerate(train):
        sex = sex_of(name, gd)
        if sex is None:
            continue
        files = sorted((lfw / "images" / name).glob("*.jpg"))[: 3 if sex == 1 else 1]
        rows += [r for r in (scan_face(lfw, f, name, sex, det, lm68) for f in files) if r is not None]
        if j % 500 == 0:
            print(f"scan {j}/{len(train)} identities, {len(rows)} faces, {time.time() - t0:.0f} s", flush=True)
    out_file.write_text(json.dumps(rows))
    return rows


def screen(rows: list[dict], extra: list[dict] = (), loose: bool = False) -> list[dict]:
    """Drop turned, tilted, closed-eyed, open-mouthed and occluded faces (the worst shares of
    `rows`); `extra` rows (more images of some people: `scan_more`) are screened by the same
    limits after them. `loose`: wider mouths (0.3, against 0.2), more yaw (0.2, 0.15) and the
    glasses limit at the 65th/80th percentile (50th/65th), for --dark-only's few donors (what
    gets through is reviewed by eye)."""
    q = lambda key, p: float(np.quantile([r[key] for r in rows], p))  # noqa: E731
    lim = {"cap": q("cap", 0.75), "lower": q("lower", 0.85)}
    # glasses: the largest robust z-score of the four rim measures; the worst 50% of men and 35%
    # of women go (women wear glasses less often in LFW and are scarce; a rim ghosts through an
    # average and the caricature doubles it). Precision is modest: on a
    # sheet of survivors about 1 in 20 still wears thin-rimmed glasses.
    keys = ("g_temple", "g_under", "g_bridge", "g_side")
    v = np.array([[r[k] for k in keys] for r in rows])
    med, iqr = np.median(v, 0), np.quantile(v, 0.75, 0) - np.quantile(v, 0.25, 0) + 1e-6
    every = list(rows) + list(extra)
    for r in every:
        r["glasses"] = float(((np.array([r[k] for k in keys]) - med) / iqr).max())
    share = ((0, 0.65), (1, 0.8)) if loose else ((0, 0.5), (1, 0.65))
    glim = {sex: float(np.quantile([r["glasses"] for r in rows if r["sex"] == sex], p)) for sex, p in share}
    mouth, yaw = (0.3, 0.2) if loose else (0.2, 0.15)
    keep = [r for r in every if r["score"] > 0.8 and r["yaw"] < yaw and abs(r["roll"]) < 12 and r["eyes"] > 0.2
            and r["mouth"] < mouth and r["dark_eyes"] > 0.35 and r["glasses"] < glim[r["sex"]] and r["chroma"] > 3
            and r["cap"] < lim["cap"] and r["lower"] < lim["lower"]]
    # one face per person (women were scanned up to three times: keep the first that passed)
    seen, out = set(), []
    for r in keep:
        if r["name"] not in seen:
            seen.add(r["name"])
            out.append(r)
    return out


def descriptors(rows: list[dict], lfw: Path, cache: Path) -> np.ndarray:
    """dlib descriptors [N,128] of the screened donors (cached: real identity data stays in runs/)."""
    from fiva.faces.identity import DlibEvaluator

    f = cache / "donor_dlib.npz"
    have = dict(np.load(f)) if f.exists() else {}
    ev = DlibEvaluator()
    out = []
    for j, r in enumerate(rows):
        if r["file"] not in have:
            have[r["file"]] = ev.embed(read_rgb(lfw / r["file"]), np.array(r["box"]))
        out.append(have[r["file"]])
        if j % 500 == 0:
            print(f"descriptors {j}/{len(rows)}", flush=True)
    np.savez(f, **have)
    return np.stack(out)


def warp_group(rgbs: list[np.ndarray], shapes: list[np.ndarray], tris: np.ndarray,
               canonical: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """k faces, each warped to their mean shape: textures [k,S,S,3] float32 and the shape [68,2].
    `canonical`: the images and shapes are already in the canonical frame (`to_canonical`)."""
    crops = list(zip(rgbs, shapes)) if canonical else [to_canonical(rgb, s) for rgb, s in zip(rgbs, shapes)]
    mean = np.mean([c[1] for c in crops], 0)
    warped = [piecewise_affine(crop.astype(np.float32), mesh(cs, mean), mesh(mean), tris, (SIZE, SIZE),
                               box=(0, 0, SIZE, SIZE), border=cv2.BORDER_REFLECT)[0] for crop, cs in crops]
    return np.stack(warped), mean.astype(np.float32)


def blend(warped: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """The weighted mean [S,S,3] uint8 of warped textures [k,S,S,3] (weights [k], equal if None)."""
    w = np.full(len(warped), 1 / len(warped)) if weights is None else weights / weights.sum()
    return np.clip(np.tensordot(w, warped, 1) + 0.5, 0, 255).astype(np.uint8)


def average(rgbs: list[np.ndarray], shapes: list[np.ndarray], tris: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k faces, each warped to their mean shape, averaged: texture [S,S,3] uint8 and shape [68,2]."""
    warped, mean = warp_group(rgbs, shapes, tris)
    return blend(warped), mean


def donors_coherence(lfw: Path, groups, shapes: dict[str, np.ndarray], tris: np.ndarray) -> np.ndarray:
    """`eye_coherence` [N] of each group of donor files (their 68 points `shapes`, by file), the
    donors warped to their mean shape as the average was."""
    return np.array([eye_coherence(*warp_group([read_rgb(lfw / f) for f in row], [shapes[f] for f in row], tris))
                     for row in groups])


def eye_ghosts(path: str | Path, lfw: Path, cache: Path, reviewed=REVIEWED_GHOSTS) -> np.ndarray:
    """Mark the ghosted eye regions of a bank file in place (`AnchorFaceBank.ghost`; the JPEG
    textures are kept byte for byte): the faces whose donors' `eye_coherence` is under
    EYE_COHERENCE_MIN (their donors from the build's cache) and the `reviewed` ones."""
    bank = AnchorFaceBank.load(path)
    g = np.load(cache / "groups.npz")
    files = g["donor_files"].reshape(len(g["groups"]), -1)
    if len(files) != len(bank):
        raise ValueError(f"{cache / 'groups.npz'} holds {len(files)} donor groups, {path} {len(bank)} faces")
    more = cache / "scan_more.json"  # --dark-only's donors' further images
    shapes = {r["file"]: np.array(r["shape"], np.float32)
              for r in scan(lfw, cache) + (json.loads(more.read_text()) if more.exists() else [])}
    coh = donors_coherence(lfw, files, shapes, bank.triangles)
    ghost = coh < EYE_COHERENCE_MIN
    ghost[list(reviewed)] = True
    set_in_bank_file(path, "ghost", ghost.astype(np.uint8), "eye_ghosts",
                     f"eye_coherence < {EYE_COHERENCE_MIN} ({int((coh < EYE_COHERENCE_MIN).sum())}) "
                     f"or reviewed by eye ({len(reviewed)})")
    print(f"{path}: {int(ghost.sum())} of {len(bank)} faces ghosted around the eyes: {np.flatnonzero(ghost).tolist()} "
          f"(coherence under {EYE_COHERENCE_MIN}: {np.flatnonzero(coh < EYE_COHERENCE_MIN).tolist()})")
    return ghost


def poor(path: str | Path, reviewed=REVIEWED_POOR) -> np.ndarray:
    """Mark the bank faces of a bank file whose drawings look wrong far more often than others'
    (`AnchorFaceBank.poor`, in place; the JPEG textures are kept byte for byte): the `reviewed` ones."""
    return _mark_reviewed(path, "poor", reviewed, "drawn poorly, reviewed by eye", "faces taken last, drawn poorly")


def fringes(path: str | Path, reviewed=REVIEWED_FRINGES) -> np.ndarray:
    """Set how far above the brows each face of a bank file may be drawn (`AnchorFaceBank.forehead`,
    in place; the JPEG textures are kept byte for byte): FRINGE_REACH for the `reviewed` ones, no
    limit for the others."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        n = f.get_slice("sface").get_shape()[0]
    reach = np.full(n, np.inf, np.float32)
    reach[list(reviewed)] = FRINGE_REACH
    set_in_bank_file(path, "forehead", reach, "fringes",
                     f"forehead up to {FRINGE_REACH} eye distances, reviewed by eye ({len(reviewed)})")
    print(f"{path}: {len(reviewed)} of {n} faces drawn up to {FRINGE_REACH} eye distances above the brows: "
          f"{list(reviewed)}")
    return reach


def aged(path: str | Path, reviewed=REVIEWED_AGED) -> np.ndarray:
    """Mark the bank faces of a bank file that look aged (`AnchorFaceBank.aged`, in place; the
    JPEG textures are kept byte for byte): the `reviewed` ones."""
    return _mark_reviewed(path, "aged", reviewed, "reviewed by eye", "faces marked aged")


def _mark_reviewed(path: str | Path, name: str, reviewed, meta_text: str, said: str) -> np.ndarray:
    """Write a bank file's [N] mark `name` in place: 1 for the `reviewed` faces, 0 for the others."""
    from safetensors import safe_open

    with safe_open(str(path), "np") as f:
        n = f.get_slice("sface").get_shape()[0]
    marks = np.zeros(n, np.uint8)
    marks[list(reviewed)] = 1
    set_in_bank_file(path, name, marks, name, f"{meta_text} ({len(reviewed)})")
    print(f"{path}: {len(reviewed)} of {n} {said}: {list(reviewed)}")
    return marks.astype(bool)


def set_in_bank_file(path: str | Path, name: str, values: np.ndarray, meta_key: str, meta_text: str) -> None:
    """Write one array and one metadata entry into a bank file in place, every other tensor (the
    JPEG textures among them) and metadata entry kept byte for byte."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    d = load_file(str(path))
    with safe_open(str(path), "np") as f:
        meta = dict(f.metadata() or {})
    d[name] = values
    meta[meta_key] = meta_text
    save_file(d, str(path), metadata=meta)


def fit_sex_classifier(rows: list[dict], lfw: Path, cache: Path) -> tuple[np.ndarray, float, float]:
    """Logistic regression P(female | dlib descriptor) on the first-name labels of every scanned
    training face (classes weighted equally: LFW is ~3/4 men). dlib's descriptor, not SFace's
    embedding: on held-out identities it tells the sexes apart 96% of the time, SFace's 76%.
    Returns weights [128], bias and the accuracy on a fifth of the identities held out (by name)."""
    emb = descriptors(rows, lfw, cache).astype(np.float64)
    y = np.array([r["sex"] for r in rows], np.float64)
    held = np.array([zlib.crc32(r["name"].encode()) % 5 == 0 for r in rows])
    wt = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))  # the classes' shares over all rows
    # 129 weights, a few thousand rows
    w, b = fit_logistic(emb[~held], y[~held], lam=1e-2, steps=25, weights=wt[~held])
    acc = float(np.mean(((emb[held] @ w + b) > 0) == (y[held] == 1)))
    return w.astype(np.float32), b, acc


def read_labels(path: str | Path) -> list[tuple[str, int]]:
    """(image name, label) per labelled line of a labels file (scripts/data/*.txt; # comments)."""
    out = []
    for line in Path(path).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, label = line.split()
            out.append((name, int(label)))
    return out


def read_skin_labels(path: str | Path) -> dict[str, int]:
    """Image name -> 1 (dark-skinned) / 0 (scripts/data/dark_skin_*.txt)."""
    return dict(read_labels(path))


def fit_dark_classifier(rows: list[dict], lfw: Path, cache: Path, labels: dict[str, int]) -> tuple[np.ndarray, float, float]:
    """Logistic regression P(dark skin | dlib descriptor) on the scanned faces labelled by eye
    (`labels`: the darkest-cheeked training faces, dark-skinned people and lighter skin in dim light
    alike, so it learns the person, not the light). Returns weights [128], bias and the accuracy on
    a fifth of the labelled identities held out (by name)."""
    rows = [r for r in rows if Path(r["file"]).name in labels]
    emb = descriptors(rows, lfw, cache).astype(np.float64)
    y = np.array([labels[Path(r["file"]).name] for r in rows], np.float64)
    held = np.array([zlib.crc32(r["name"].encode()) % 5 == 0 for r in rows])
    w, b = fit_logistic(emb[~held], y[~held], lam=DARK_LAMBDA)
    acc = float(np.mean(((emb[held] @ w + b) > 0) == (y[held] == 1)))
    w, b = fit_logistic(emb, y, lam=DARK_LAMBDA)  # shipped: fitted on all of them
    return w.astype(np.float32), b, acc


def fit_logistic(x: np.ndarray, y: np.ndarray, lam: float = 0.1, steps: int = 30,
                 weights: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Logistic regression of 0/1 labels `y` [N] on `x` [N,D] by Newton steps (IRLS), with an L2 of
    `lam` per row on the weights (not the bias). `weights` [N]: each row's; default, the two classes
    weighted equally. Returns weights [D] (float64) and bias."""
    xb = np.c_[x, np.ones(len(x))].astype(np.float64)
    wt = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean())) if weights is None else weights
    reg = lam * len(x) * np.diag(np.r_[np.ones(x.shape[1]), 0])
    w = np.zeros(xb.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-np.clip(xb @ w, -30, 30)))
        w -= np.linalg.solve((xb * (wt * p * (1 - p))[:, None]).T @ xb + reg, xb.T @ (wt * (p - y)) + reg @ w)
    return w[:-1], float(w[-1])


def caricature(tex, shape, mean_tex, mean_shape, gamma: float, tris) -> tuple[np.ndarray, np.ndarray]:
    """Push an average away from its sex's mean face by `gamma` in shape and texture: averaging
    k people regresses towards the mean (k-Same identities look alike); this restores the
    distinctiveness the group has (the donor check then runs on the result)."""
    m_on = piecewise_affine(mean_tex.astype(np.float32), mesh(mean_shape), mesh(shape, mean_shape), tris, (SIZE, SIZE),
                            box=(0, 0, SIZE, SIZE))[0]
    t = m_on + gamma * (tex.astype(np.float32) - m_on)
    new_shape = (mean_shape + gamma * (shape - mean_shape)).astype(np.float32)
    t = piecewise_affine(t, mesh(shape, mean_shape), mesh(new_shape, mean_shape), tris, (SIZE, SIZE), box=(0, 0, SIZE, SIZE))[0]
    return np.clip(t + 0.5, 0, 255).astype(np.uint8), new_shape


def texture_descriptor(tex: np.ndarray, det, ev) -> np.ndarray | None:
    """The dlib descriptor of the face YuNet finds largest on a bank texture, None where it finds
    none (an average or a push no longer face-like)."""
    d = det(tex)
    return None if len(d) == 0 else ev.embed(tex, d.boxes[d.largest()])


def sface_and_tone(tex: np.ndarray, shape: np.ndarray, sface) -> tuple[np.ndarray, np.ndarray]:
    """A bank face's SFace embedding (its anchor for Eq. 1) and its cheeks' LAB mean and spread."""
    crop = cv2.warpAffine(tex, similarity_transform(five_points(shape), template(112)), (112, 112), flags=cv2.INTER_AREA)
    lab = cv2.cvtColor(tex, cv2.COLOR_RGB2LAB).astype(np.float32)
    cheeks = np.concatenate([lab[y0:y1, x0:x1].reshape(-1, 3) for k, (x0, y0, x1, y1) in regions(shape).items() if k.startswith("cheek")])
    return sface.embed(crop[None])[0], np.concatenate([cheeks.mean(0), cheeks.std(0)])


def sex_means(bank: AnchorFaceBank) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per sex, the mean bank face: its texture [S,S,3] uint8 (every face warped to the mean shape,
    averaged) and its mean shape [68,2]."""
    size, tris, out = bank.textures.shape[1], bank.triangles, {}
    for sex in np.unique(bank.sex):
        idx = np.flatnonzero(bank.sex == sex)
        ms = bank.shapes[idx].mean(0).astype(np.float32)
        warped = np.stack([piecewise_affine(bank.textures[i].astype(np.float32), mesh(bank.shapes[i], ms), mesh(ms), tris,
                                            (size, size), box=(0, 0, size, size), border=cv2.BORDER_REFLECT)[0] for i in idx])
        out[int(sex)] = blend(warped), ms
    return out


def push_bank(bank: AnchorFaceBank, donors: np.ndarray, most: float, floor: float, embed) -> np.ndarray:
    """Push each face of `bank` further from its sex's mean bank face (`caricature`, shape and
    texture; in place), by the largest factor of `most`, `most` - PUSH_STEP, ... above 1 whose
    result `embed` (texture -> dlib descriptor, None where no face is found) puts more than `floor`
    from each of its donors (`donors` [N,k,128]). A face no factor keeps that far stays as it is.
    Its `dlib` and `donor_distance` follow. Returns the factors [N] (1 where unchanged).

    Averages of six people still look alike (two bank faces drawn on one face are taken for one
    person far more often than two real people are); a further push restores some of what the
    average lost, and the donor check bounds it: a push towards a donor (the one the average
    leans to) is taken back."""
    factors = np.ones(len(bank), np.float32)
    steps = np.round(np.arange(most, 1.0, -PUSH_STEP), 3)
    for sex, (mean_tex, ms) in sex_means(bank).items():
        for i in np.flatnonzero(bank.sex == sex):
            for g in steps:
                tex, shape = caricature(bank.textures[i], bank.shapes[i], mean_tex, ms, float(g), bank.triangles)
                e = embed(tex)
                d = np.inf if e is None else float(np.linalg.norm(donors[i] - e, axis=1).min())
                if e is not None and d > floor:
                    bank.textures[i], bank.shapes[i], factors[i], bank.donor_distance[i] = tex, shape, g, d
                    if bank.dlib is not None:
                        bank.dlib[i] = e
                    break
    bank._lipless.clear()  # textures changed in place
    return factors


def same_selection(textures: list[np.ndarray], bank: AnchorFaceBank | None, tolerance: float = STORED_TOLERANCE) -> bool:
    """Whether a build's selected textures are `bank`'s faces, in its order (within `tolerance` grey
    levels, mean absolute difference: the bank stores them as JPEG), less the faces --dark-only
    appended to it (`AnchorFaceBank.dark`)."""
    if bank is None:
        return False
    own = bank.textures if bank.dark is None else bank.textures[~bank.dark]
    return len(textures) == len(own) and all(
        np.abs(t.astype(np.float32) - b.astype(np.float32)).mean() <= tolerance for t, b in zip(textures, own))


def lips_closed(shape: np.ndarray, max_mouth: float = MAX_MOUTH) -> bool:
    """Whether a bank face's lips are closed: its mouth opening (inner-lip gap over the eye
    distance) at most `max_mouth`. Donors are screened at 0.2 each, but a group of smiles averages
    to parted lips with a band of teeth between them, and the caricature widens it; drawn on a
    closed mouth, those lips are pressed onto the target's and the teeth show as a grimace (the
    build at --caricature 2.0, bank face 50 on Kate Siegel)."""
    return float(mouth_opening(shape)) <= max_mouth


def nearest_candidates(textures: np.ndarray, cand_textures: np.ndarray, tolerance: float = STORED_TOLERANCE) -> list[int | None]:
    """Each bank texture's index among a build's candidate textures (`match_candidates`), None where
    none is within `tolerance`."""
    return [j if d <= tolerance else None for j, d in _nearest(textures, cand_textures)]


def match_candidates(textures: np.ndarray, cand_textures: np.ndarray, tolerance: float = STORED_TOLERANCE) -> np.ndarray:
    """Each bank texture's index among a build's candidate textures: the candidate it was made from
    (the bank stores them as JPEG: the shipped bank's lie 0.6-1.2 grey levels, mean absolute
    difference, from theirs, and 13.6 or more from any other). Raises ValueError for a texture no
    candidate is within `tolerance` of: a bank from other candidates (another seed, k, caricature
    or scan)."""
    out = np.empty(len(textures), int)
    for i, (j, d) in enumerate(_nearest(textures, cand_textures)):
        if d > tolerance:
            raise ValueError(f"bank face {i} is no cached candidate (nearest differs by {d:.1f} grey levels)")
        out[i] = j
    return out


def _nearest(textures: np.ndarray, cand_textures: np.ndarray) -> list[tuple[int, float]]:
    """Each texture's nearest candidate texture and their mean absolute difference (grey levels)."""
    flat = cand_textures.reshape(len(cand_textures), -1).astype(np.float32)
    out = []
    for t in textures:
        d = np.abs(flat - t.reshape(-1).astype(np.float32)).mean(1)
        out.append((int(np.argmin(d)), float(d.min())))
    return out


def donor_groups(cache: Path, bank: AnchorFaceBank) -> np.ndarray:
    """The dlib descriptors [N,k,128] of each bank face's donors, from the build's cache
    (groups.npz, donor_dlib.npz). Raises OSError where the cache has none, ValueError where its
    groups are another bank's: not as many, or a face's descriptor not where the build left it
    (the shipped bank's own descriptors lie within 0.07 of its build's; two faces, 0.3+)."""
    groups_file = cache / "groups.npz"
    if not groups_file.exists():
        raise OSError(f"{groups_file}: no donor groups")
    g, desc = np.load(groups_file), np.load(cache / "donor_dlib.npz")
    files = g["donor_files"].reshape(len(g["groups"]), -1)
    if len(files) != len(bank) or (bank.dlib is not None and "bank_dlib" in g
                                   and np.linalg.norm(g["bank_dlib"] - bank.dlib, axis=1).max() > 0.2):
        raise ValueError(f"{groups_file}: donor groups of another bank")
    return np.stack([[desc[f] for f in row] for row in files])


def sex_mean_faces(donors: list[dict], lfw: Path, rng, tris) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Each sex's mean face (texture, shape) over up to 150 of its donors drawn by `rng`: what
    averages regress to, and caricature pushes from (`make_candidates`' first draws)."""
    means = {}
    for sex in (0, 1):
        pool = [i for i, r in enumerate(donors) if r["sex"] == sex]
        if not pool:
            continue
        pick = rng.choice(pool, min(len(pool), 150), replace=False)
        means[sex] = average([read_rgb(lfw / donors[i]["file"]) for i in pick],
                             [np.array(donors[i]["shape"], np.float32) for i in pick], tris)
    return means


def recover_groups(bank: AnchorFaceBank, donors: list[dict], lfw: Path, k: int, gamma: float, seed: int,
                   work: int = 64, faces: list[int] | None = None) -> tuple[list[list[int]], np.ndarray]:
    """Each bank face's k donors (indices into `donors`) found from its texture alone, for a bank
    whose build cache is lost and whose candidates a build no longer makes (the averages' path
    through the donor checks moves with library versions). The caricature is undone (the face's
    shape and texture taken back towards its sex's mean face by `gamma`), then every screened donor
    of its sex is warped to the group's mean shape and the non-negative least-squares mix of them
    closest to the average is found at `work` px over the face's mesh; the k largest weights are
    the group (its last two the two of the next few that rebuild the face best). Returns the
    groups of `faces` (default: all) and, per face, the mean absolute difference (grey levels, over the face's mesh) of the
    face rebuilt from them (`average` with those weights, `caricature`) from the stored texture: the
    shipped bank's faces that a build still makes come back with their own groups."""
    from scipy.optimize import nnls

    tris, size = bank.triangles, bank.size
    means = sex_mean_faces(donors, lfw, np.random.default_rng(seed), tris)
    crops: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def crop(i):
        if i not in crops:
            crops[i] = to_canonical(read_rgb(lfw / donors[i]["file"]), np.array(donors[i]["shape"], np.float32))
        return crops[i]

    s = work / size
    faces = list(range(len(bank))) if faces is None else faces
    groups, diffs = [], np.zeros(len(faces), np.float32)
    for n, f in enumerate(faces):
        sex = int(bank.sex[f])
        mean_tex, ms = means[sex]
        new = bank.shapes[f]
        g = (ms + (new - ms) / gamma).astype(np.float32)  # the group's mean shape, before the caricature
        whole = (0, 0, size, size)
        tex_g = piecewise_affine(bank.textures[f].astype(np.float32), mesh(new, ms), mesh(g, ms), tris, (size, size), box=whole)[0]
        m_on = piecewise_affine(mean_tex.astype(np.float32), mesh(ms), mesh(g, ms), tris, (size, size), box=whole)[0]
        avg = cv2.resize(m_on + (tex_g - m_on) / gamma, (work, work), interpolation=cv2.INTER_AREA)
        hull = np.zeros((size, size), np.float32)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(g).astype(np.int32)), 1.0)
        inside = cv2.resize(hull, (work, work), interpolation=cv2.INTER_AREA) > 0.99
        pool = [i for i, r in enumerate(donors) if r["sex"] == sex]
        cols = []
        for i in pool:
            cr, cs = crop(i)
            small = cv2.resize(cr, (work, work), interpolation=cv2.INTER_AREA).astype(np.float32)
            cols.append(piecewise_affine(small, mesh(cs * s, g * s), mesh(g * s), tris, (work, work), box=(0, 0, work, work),
                                         border=cv2.BORDER_REFLECT)[0][inside].ravel())
        w = nnls(np.stack(cols, 1), avg[inside].ravel())[0]
        order = np.argsort(-w)
        face = hull > 0  # compared over the face only

        def rebuilt(top):
            warped, mean_shape = warp_group([crop(pool[j])[0] for j in top], [crop(pool[j])[1] for j in top], tris, canonical=True)
            tex, _ = caricature(blend(warped, np.maximum(w[top], 1e-6)), mean_shape, mean_tex, ms, gamma, tris)
            return float(np.abs(tex.astype(np.float32) - bank.textures[f].astype(np.float32))[face].mean())

        # the last two places go to whichever two of the next few weights rebuild the face best: a
        # donor whose weight the build halved several times weighs as little as a look-alike
        tries = [np.r_[order[:k - 2], list(two)] for two in combinations(order[k - 2:k + 3], 2)]
        scores = [rebuilt(t) for t in tries]
        top = tries[int(np.argmin(scores))]
        diffs[n] = min(scores)
        group = [pool[j] for j in top]
        groups.append(group)
        print(f"face {f}: donors {sorted(group)}, weights {np.round(np.sort(w)[::-1][:k + 1], 3).tolist()}, "
              f"rebuilt within {diffs[n]:.1f} grey levels", flush=True)
    return groups, diffs


def save_groups(cache: Path, groups: list, bank_dlib: np.ndarray, donors: list[dict]) -> None:
    """Which donors made which bank face (their LFW files), for the evaluation's donor checks and
    `eye_ghosts`: kept in the cache only, never shipped."""
    np.savez(cache / "groups.npz", groups=np.array(groups), bank_dlib=bank_dlib,
             donor_files=np.array([donors[i]["file"] for g in groups for i in g]))


def make_candidates(donors, desc, lfw, a, rng, tris, ev, det) -> list[dict]:
    """Per sex, up to --pool x wanted averages of k donors (tone bins taken in turn), each found
    by YuNet and more than --min-donor-distance from each of its donors."""
    means = sex_mean_faces(donors, lfw, rng, tris)
    out, uses = [], np.zeros(len(donors), int)
    for sex, want in ((0, int(a.men * a.pool)), (1, int(a.women * a.pool))):
        idx = np.array([i for i, r in enumerate(donors) if r["sex"] == sex])
        idx = idx[np.argsort([donors[i]["tone_l"] for i in idx])]
        bins = list(np.array_split(idx, a.bins))
        made, tries, turn = 0, 0, 0
        while made < want and tries < want * 30 and bins:
            tries += 1
            b = turn % len(bins)
            # the least-used donors first: a second use only once a bin's first uses run out
            pool = [i for i in bins[b] if uses[i] < a.reuse]
            rng.shuffle(pool)
            pool.sort(key=lambda i: uses[i])
            group: list[int] = []
            for i in pool:  # donors far apart: an average near none of them
                if all(np.linalg.norm(desc[i] - desc[j]) > a.spread for j in group):
                    group.append(i)
                if len(group) == a.k:
                    break
            if len(group) < a.k:  # this tone bin is used up
                bins.pop(b)
                continue
            warped, mean_shape = warp_group([read_rgb(lfw / donors[i]["file"]) for i in group],
                                            [np.array(donors[i]["shape"], np.float32) for i in group], tris)
            # one donor often dominates an average (dlib finds the face near them): their weight is
            # halved, up to --reweigh times, until the average is far enough from every donor
            w, dd = np.ones(a.k), None
            for _ in range(a.reweigh + 1):
                tex, shape = blend(warped, w), mean_shape
                if a.caricature != 1:
                    tex, shape = caricature(tex, shape, *means[sex], a.caricature, tris)
                e = texture_descriptor(tex, det, ev)
                if e is None:
                    break
                dd = np.linalg.norm(desc[group] - e, axis=1)
                if dd.min() > a.min_donor_distance:
                    break
                w[int(np.argmin(dd))] *= 0.5
            if dd is None or e is None:
                continue
            if dd.min() <= a.min_donor_distance:
                uses[group[int(np.argmin(dd))]] += 1  # this person dominates averages: drawn less
                continue
            out.append({"tex": tex, "shape": shape, "sex": sex, "dd": float(dd.min()), "dlib": e, "group": group})
            uses[group] += 1
            made += 1
            turn += 1
            if made % 10 == 0:
                print(f"{SEXES[sex]} {made}/{want} candidates ({tries} tries)", flush=True)
        print(f"{SEXES[sex]}: {made} candidates of {want} wanted, {tries} tries, "
              f"nearest donor min {min([c['dd'] for c in out if c['sex'] == sex] or [np.nan]):.3f}", flush=True)
    return out


def save_candidates(path: Path, cands: list[dict], drawn: np.ndarray, targets: list[dict]) -> None:
    """A build's candidates (`make_candidates`), their render check's descriptors and its targets'
    files, cached to try other selections and reviews (--candidates-from-cache)."""
    np.savez(path, tex=np.stack([c["tex"] for c in cands]), shape=np.stack([c["shape"] for c in cands]),
             sex=np.array([c["sex"] for c in cands]), dd=np.array([c["dd"] for c in cands]),
             dlib=np.stack([c["dlib"] for c in cands]), group=np.array([c["group"] for c in cands]), drawn=drawn,
             target_files=np.array([t["file"] for t in targets]))


def load_candidates(path: Path, rows: list[dict]) -> tuple[list[dict], np.ndarray, list[dict]]:
    """`save_candidates`' candidates, render-check descriptors and targets (their scan `rows`)."""
    c = np.load(path)
    cands = [{"tex": c["tex"][j], "shape": c["shape"][j], "sex": int(c["sex"][j]), "dd": float(c["dd"][j]),
              "dlib": c["dlib"][j], "group": list(c["group"][j])} for j in range(len(c["sex"]))]
    return cands, c["drawn"], [next(r for r in rows if r["file"] == f) for f in c["target_files"]]


def check_targets(rows, donors, lfw, n, rng) -> list[dict]:
    """n training faces per sex that are nobody's donor: people the screening turned away (a
    turned head, glasses, a beard: what users' photos have), YuNet-sure and not in profile."""
    names = {r["name"] for r in donors}
    out, seen = [], set()
    for sex in (0, 1):
        pool = [r for r in rows if r["sex"] == sex and r["name"] not in names and r["score"] > 0.85 and r["yaw"] < 0.35]
        for j in rng.permutation(len(pool)):
            if pool[j]["name"] not in seen and sum(t["sex"] == sex for t in out) < n:
                seen.add(pool[j]["name"])
                out.append(pool[j])
    return out


def render_check(cands, targets, lfw, tris, ev) -> np.ndarray:
    """Each candidate drawn on each target of its sex (default RenderConfig); returns the drawings'
    dlib descriptors [C,T,128] (NaN for the other sex's targets)."""
    from fiva.anonymize.anchor_face import AnchorFaceRenderer

    tmp = AnchorFaceBank(np.stack([c["tex"] for c in cands]), np.stack([c["shape"] for c in cands]),
                         np.zeros((len(cands), 128), np.float32), np.array([c["sex"] for c in cands], np.uint8),
                         np.zeros((len(cands), 6), np.float32), tris, np.zeros(len(cands), np.float32))
    renderer = AnchorFaceRenderer(tmp)
    out = np.full((len(cands), len(targets), 128), np.nan, np.float32)
    t0 = time.time()
    for t, r in enumerate(targets):
        rgb, shape = read_rgb(lfw / r["file"]), np.array(r["shape"], np.float32)
        for c, cand in enumerate(cands):
            if cand["sex"] == r["sex"]:
                out[c, t] = ev.embed(renderer.render(rgb, shape, c), np.array(r["box"]))
        print(f"render check: target {t + 1}/{len(targets)}, {time.time() - t0:.0f} s", flush=True)
    return out


def select(cands, drawn, want: int) -> list[int]:
    """Greedy: the candidate whose drawings lie > 0.6 from the others' on the most targets
    first, then each next one the one adding the most such pairs to those already chosen, less
    one for each chosen face its own texture lies within 0.6 of (a near twin in the bank). None
    of no candidates."""
    if len(cands) == 0 or want <= 0:
        return []
    t = ~np.isnan(drawn[0, :, 0])
    far = (np.linalg.norm(drawn[:, None, t] - drawn[None, :, t], axis=3) > 0.6).mean(2)  # [C,C]
    e = np.stack([c["dlib"] for c in cands])
    twin = np.linalg.norm(e[:, None] - e[None], axis=2) <= 0.6
    np.fill_diagonal(far, 0)
    chosen = [int(np.argmax(far.sum(1)))]
    while len(chosen) < min(want, len(cands)):
        gain = far[:, chosen].sum(1) - twin[:, chosen].sum(1)
        gain[chosen] = -np.inf
        chosen.append(int(np.argmax(gain)))
    return chosen


def push_only(ap, path: str, cache: Path, most: float, floor: float) -> None:
    """`--push-only`: push the faces of bank file `path` (`push_bank`), in place, with their
    SFace embeddings, tones, descriptors and donor distances, and the cache's record of the
    descriptors (groups.npz) following them."""
    from fiva.faces.identity import DlibEvaluator, load_sface

    try:
        bank = AnchorFaceBank.load(path)
    except (OSError, ValueError, SafetensorError) as e:
        ap.error(f"{path}: not a readable bank file ({e})")
    if "pushed" in bank.meta:  # once: a second push would leave no way back to the build's candidates
        ap.error(f"{path}: already pushed further (--push-only runs once on a built bank)")
    try:
        donors = donor_groups(cache, bank)
    except (OSError, ValueError) as e:
        ap.error(f"{e}: the donors of {path} are needed (--groups-only {path} recovers them)")
    det, ev, sface = FaceDetector(score_threshold=0.5), DlibEvaluator(), load_sface()
    before = bank.donor_distance.copy()
    factors = push_bank(bank, donors, most, floor, lambda tex: texture_descriptor(tex, det, ev))
    for i in np.flatnonzero(factors != 1):
        bank.sface[i], bank.tone[i] = sface_and_tone(bank.textures[i], bank.shapes[i], sface)
    bank.meta["pushed"] = ",".join(f"{v:g}" for v in factors)
    bank.meta["pushed_floor"] = f"{floor}"
    bank.save(path)
    g = dict(np.load(cache / "groups.npz"))
    if bank.dlib is not None:
        g["bank_dlib"] = bank.dlib
    np.savez(cache / "groups.npz", **g)
    print(f"{path}: {int((factors != 1).sum())} of {len(bank)} faces pushed further (by {sorted({float(f'{v:g}') for v in factors})}; "
          f"median {np.median(factors):.2f}); nearest-donor distance min {before.min():.3f} -> {bank.donor_distance.min():.3f}")


def dark_only(ap, a, path: str, lfw: Path, cache: Path) -> None:
    """`--dark-only`: append faces made from dark-skinned donors to the built bank file `path`
    (`AnchorFaceBank.dark`), with the skin classifier (`fit_dark_classifier`) that gives them to
    dark-skinned targets only (`AnchorFaceBank.match_skin`). The donors: the training people
    labelled dark-skinned by eye (--skin-labels), and the unlabelled ones (lighter cheeks than the
    labelled) that the classifier reads so; made, checked and selected as the build's own faces
    (`make_candidates`, one tone bin, the caricature from their own mean face; `render_check` on
    dark-skinned training people who are no donors), less --dark-drop, reviewed by eye. Their
    donor groups are appended to --cache/groups.npz where it holds the bank's own."""
    from fiva.faces.identity import DlibEvaluator, load_sface

    try:
        bank = AnchorFaceBank.load(path)
    except (OSError, ValueError, SafetensorError) as e:
        ap.error(f"{path}: not a readable bank file ({e})")
    if bank.dark is not None and bank.dark.any():
        ap.error(f"{path}: already holds {int(bank.dark.sum())} dark-skinned donors' faces (--dark-only runs once on a built bank)")
    rows = scan(lfw, cache)
    labels = read_skin_labels(a.skin_labels)
    labelled = {r["name"] for r in rows if Path(r["file"]).name in labels}
    w, b, acc = fit_dark_classifier(rows, lfw, cache, labels)
    print(f"dark-skin classifier on dlib descriptors: {acc:.3f} accurate on held-out labelled identities", flush=True)
    # the people: labelled dark-skinned, or unlabelled and read so by the classifier; up to
    # DARK_IMAGES images of each, screened more loosely (few of them pass the build's own screen)
    read = descriptors(rows, lfw, cache) @ w + b > 0
    dark = [labels.get(Path(r["file"]).name, int(d)) == 1 for r, d in zip(rows, read)]  # per scanned face
    people = {r["name"]: r["sex"] for r, d in zip(rows, dark) if d}
    more = scan_more(lfw, cache, people, DARK_IMAGES)
    donors = [r for r in screen(rows, [m for m in more if m["name"] in people], loose=not a.dark_strict) if r["name"] in people]
    desc = descriptors(donors, lfw, cache)
    print(f"{len(people)} dark-skinned people, {len(donors)} pass screening ({sum(r['sex'] == 0 for r in donors)} men, "
          f"{sum(r['sex'] == 1 for r in donors)} women; {sum(r['name'] not in labelled for r in donors)} "
          f"found by the classifier)", flush=True)
    det, ev, sface = FaceDetector(score_threshold=0.5), DlibEvaluator(), load_sface()
    rng = np.random.default_rng(a.seed)
    # dlib reads dark-skinned people nearer one another (pairs of these donors: median 0.70, the
    # others' 0.78), so their groups are spread by DARK_SPREAD, which as many pairs pass as --spread's
    opts = argparse.Namespace(**{**vars(a), "men": a.dark_men, "women": a.dark_women, "bins": 1, "spread": a.dark_spread,
                                 "caricature": a.dark_caricature, "min_donor_distance": a.dark_min_donor_distance,
                                 "reuse": a.dark_reuse, "pool": a.dark_pool})
    cand_file = cache / "dark_candidates.npz"  # as the build's own: kept to try other selections and reviews
    if a.candidates_from_cache and cand_file.exists():
        cands, drawn, targets = load_candidates(cand_file, rows)
    else:
        cands = make_candidates(donors, desc, lfw, opts, rng, bank.triangles, ev, det)
        if not cands:
            ap.error(f"no average of {a.k} dark-skinned donors passes (--dark-spread {a.dark_spread}, "
                     f"--min-donor-distance {a.min_donor_distance})")
        targets = check_targets([r for r, d in zip(rows, dark) if d], donors, lfw, a.targets, rng)
        drawn = render_check(cands, targets, lfw, bank.triangles, ev)
        save_candidates(cand_file, cands, drawn, targets)
    tdesc = descriptors(targets, lfw, cache)
    faces = []
    for sex, want in ((0, a.dark_men), (1, a.dark_women)):
        ok = []
        for c, cand in enumerate(cands):
            t = ~np.isnan(drawn[c, :, 0])
            if cand["sex"] != sex or not t.any():
                continue
            # dlib takes dark-skinned strangers for one person far more often than others (of the
            # check targets' originals, never donors, 38% lie within 0.6 of one of a group's six
            # donors; 4.7% for the build's own faces), so a drawing may come within
            # --render-donor-distance of a donor only as often as the targets' own originals do:
            # no nearer to its donors than a stranger
            near = np.linalg.norm(drawn[c, t][:, None] - desc[cand["group"]][None], axis=2).min(1) <= a.render_donor_distance
            chance = np.linalg.norm(tdesc[t][:, None] - desc[cand["group"]][None], axis=2).min(1) <= a.render_donor_distance
            weak = int(np.sum(np.linalg.norm(drawn[c, t] - tdesc[t], axis=1) <= 0.6))
            if near.sum() <= chance.sum() and weak <= a.dark_weak and lips_closed(cand["shape"], a.max_mouth):
                ok.append(c)
        print(f"{SEXES[sex]}: {len(ok)} of {sum(c['sex'] == sex for c in cands)} dark candidates pass the render check "
              f"with lips closed", flush=True)
        faces += [cands[ok[i]] for i in select([cands[c] for c in ok], drawn[ok], want)]
    drop = {int(v) for v in a.dark_drop.split(",") if v.strip()}
    shown = faces
    faces = [f for j, f in enumerate(faces) if j not in drop]
    if not faces:
        ap.error("no dark-skinned donors' face passes; nothing appended")
    if a.dark_sheet:  # the selection as one image, numbered as --dark-drop counts, to review by eye
        tiles = [cv2.putText(cv2.resize(f["tex"], (160, 160)).copy(), str(j), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                             (255, 255, 0), 1) for j, f in enumerate(shown)]
        tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % 8)
        sheet = np.vstack([np.hstack(tiles[i:i + 8]) for i in range(0, len(tiles), 8)])
        cv2.imwrite(a.dark_sheet, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
        print(f"wrote {a.dark_sheet}: the {len(shown)} faces selected, before --dark-drop")
    try:  # the bank's own donor groups, to append theirs to (the evaluation's donor figures read them)
        donor_groups(cache, bank)
        groups_kept = True
    except (OSError, ValueError) as e:
        groups_kept = False
        print(f"{e}: their donors are not recorded (--groups-only {path} first, then --dark-only again)", flush=True)
    for f in faces:
        f["sface"], f["tone"] = sface_and_tone(f["tex"], f["shape"], sface)
    n, m = len(bank), len(faces)
    new_dlib = bank_descriptors(np.stack([f["tex"] for f in faces]), det, ev)
    grow = lambda old, new: None if old is None else np.concatenate([old, new])  # noqa: E731
    bank.textures = np.concatenate([bank.textures, np.stack([f["tex"] for f in faces])])
    bank.shapes = np.concatenate([bank.shapes, np.stack([f["shape"] for f in faces])])
    bank.sface = np.concatenate([bank.sface, np.stack([f["sface"] for f in faces])])
    bank.sex = np.concatenate([bank.sex, np.array([f["sex"] for f in faces], np.uint8)])
    bank.tone = np.concatenate([bank.tone, np.stack([f["tone"] for f in faces]).astype(np.float32)])
    bank.donor_distance = np.concatenate([bank.donor_distance, np.array([f["dd"] for f in faces], np.float32)])
    bank.dlib = grow(bank.dlib, new_dlib)
    # ghosted around the eyes as the build's own are told (`eye_ghosts`): their donors' eye regions
    # disagree, or reviewed by eye; the bank's own marks are kept as they are
    coh = donors_coherence(lfw, [[donors[i]["file"] for i in f["group"]] for f in faces],
                           {r["file"]: np.array(r["shape"], np.float32) for r in donors}, bank.triangles)
    ghost = coh < EYE_COHERENCE_MIN
    ghost[[i - n for i in REVIEWED_DARK_GHOSTS if n <= i < n + m]] = True
    bank.ghost = grow(bank.ghost, ghost)
    bank.aged, bank.poor = (grow(v, np.zeros(m, bool)) for v in (bank.aged, bank.poor))
    bank.forehead = grow(bank.forehead, np.full(m, np.inf, np.float32))
    bank.dark = np.r_[np.zeros(n, bool), np.ones(m, bool)]
    bank.dark_w, bank.dark_b = w, b
    bank.meta.update({"dark": f"faces {n}-{n + m - 1}: dark-skinned donors ({sum(f['sex'] == 0 for f in faces)} men, "
                              f"{sum(f['sex'] == 1 for f in faces)} women), reviewed out {a.dark_drop or 'none'}",
                      "dark_classifier_accuracy": f"{acc:.3f}"})
    bank.save(path)
    print(f"{path}: {m} faces of dark-skinned donors appended ({n}-{n + m - 1}); nearest-donor distance min "
          f"{min(f['dd'] for f in faces):.3f}; {int(ghost.sum())} ghosted around the eyes: {(n + np.flatnonzero(ghost)).tolist()}")
    if not groups_kept:
        return
    g = dict(np.load(cache / "groups.npz"))
    # their donors by file (the groups' indices name rows of the build's own donor list: -1 here)
    g["groups"] = np.concatenate([g["groups"], np.full((m, a.k), -1, g["groups"].dtype)])
    g["donor_files"] = np.concatenate([g["donor_files"], np.array([donors[i]["file"] for f in faces for i in f["group"]])])
    if "bank_dlib" in g:
        g["bank_dlib"] = np.concatenate([g["bank_dlib"], np.stack([f["dlib"] for f in faces])])
    np.savez(cache / "groups.npz", **g)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--men", type=int, default=50)
    ap.add_argument("--women", type=int, default=45)
    ap.add_argument("--bins", type=int, default=4, help="skin-tone bins per sex")
    ap.add_argument("--spread", type=float, default=0.75, help="smallest dlib distance between two donors of a group")
    ap.add_argument("--min-donor-distance", type=float, default=0.68, help="each bank face's dlib distance to each donor must exceed this")
    ap.add_argument("--render-donor-distance", type=float, default=0.6,
                    help="each drawing of a bank face on a check target must lie farther than this from each of its donors")
    ap.add_argument("--reweigh", type=int, default=6, help="times the nearest donor's weight is halved before a group is given up")
    ap.add_argument("--reuse", type=int, default=4, help="the most groups one donor may join")
    ap.add_argument("--pool", type=float, default=2.5, help="candidates made per bank face wanted (the selection keeps the most distinct)")
    ap.add_argument("--weak", type=int, default=2, help="check targets a bank face's drawing may stay within 0.6 of (a face too weak to change them)")
    ap.add_argument("--targets", type=int, default=12, help="check targets per sex (training faces that are no donors)")
    ap.add_argument("--max-mouth", type=float, default=MAX_MOUTH, help="the widest mouth opening of a bank face's "
                    "lips (inner-lip gap over eye distance): wider ones show teeth between them")
    ap.add_argument("--caricature", type=float, default=1.5, help="push each average away from its sex's mean face by this factor")
    ap.add_argument("--drop", default=",".join(map(str, REVIEWED_OUT)),
                    help="bank faces (indices as selected) left out after review by eye (default: REVIEWED_OUT; '' keeps all)")
    ap.add_argument("--out", default="src/fiva/data/face_bank.safetensors")
    ap.add_argument("--cache", default="runs/face_bank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--candidates-from-cache", action="store_true", help="reuse the last build's candidates and render check")
    ap.add_argument("--scan-only", action="store_true")
    ap.add_argument("--classifier-only", default=None, help="only (re)fit the sex classifier of this bank file")
    ap.add_argument("--descriptors-only", default=None, help="only add the bank faces' own dlib descriptors to this bank file")
    ap.add_argument("--ghosts-only", default=None, help="only mark this bank file's faces whose eye region is ghosted (`eye_ghosts`; "
                    "its donors from --cache, REVIEWED_GHOSTS)")
    ap.add_argument("--fringes-only", default=None, help="only set how far above the brows this bank file's faces are drawn "
                    "(`fringes`: REVIEWED_FRINGES)")
    ap.add_argument("--poor-only", default=None, help="only mark this bank file's faces whose drawings look wrong "
                    "far more often than others' (`poor`: REVIEWED_POOR)")
    ap.add_argument("--aged-only", default=None, help="only mark this bank file's faces that look aged (`aged`: REVIEWED_AGED)")
    ap.add_argument("--groups-only", default=None, help="only find which donors made each face of this bank file, from "
                    "--cache's candidates (a build run with the bank's settings makes them), and write --cache/groups.npz")
    ap.add_argument("--push-only", default=None, help="only push this bank file's faces further from their sex's mean "
                    "bank face (`push_bank`: by up to --push, each kept more than --min-donor-distance from its donors, "
                    "from --cache/groups.npz, which follows)")
    ap.add_argument("--push", type=float, default=1.3, help="with --push-only: the largest further push")
    ap.add_argument("--dark-only", default=None, help="only append faces of dark-skinned donors to this built bank file "
                    "(`dark_only`; its donor groups from --cache)")
    ap.add_argument("--skin-labels", default="scripts/data/dark_skin_train.txt", help="with --dark-only: skin labelled by eye")
    ap.add_argument("--dark-men", type=int, default=DARK_MEN, help="with --dark-only: men's faces wanted")
    ap.add_argument("--dark-women", type=int, default=DARK_WOMEN, help="with --dark-only: women's faces wanted")
    ap.add_argument("--dark-drop", default=",".join(map(str, REVIEWED_DARK_OUT)),
                    help="with --dark-only: its selected faces left out after review by eye")
    ap.add_argument("--dark-spread", type=float, default=DARK_SPREAD, help="with --dark-only: --spread for their groups")
    ap.add_argument("--dark-caricature", type=float, default=DARK_CARICATURE, help="with --dark-only: --caricature for them")
    ap.add_argument("--dark-min-donor-distance", type=float, default=DARK_MIN_DONOR_DISTANCE,
                    help="with --dark-only: --min-donor-distance for them")
    ap.add_argument("--dark-reuse", type=int, default=DARK_REUSE, help="with --dark-only: --reuse for them")
    ap.add_argument("--dark-pool", type=float, default=DARK_POOL, help="with --dark-only: --pool for them")
    ap.add_argument("--dark-weak", type=int, default=DARK_WEAK, help="with --dark-only: --weak for them")
    ap.add_argument("--dark-strict", action="store_true", help="with --dark-only: screen their donors as the build's own")
    ap.add_argument("--dark-sheet", default=None, help="with --dark-only: write the selected faces, numbered, to this PNG")
    a = ap.parse_args()
    cv2.setNumThreads(1)
    for path, mark in ((a.aged_only, aged), (a.fringes_only, fringes), (a.poor_only, poor)):  # marks reviewed by eye, set in place
        if path:
            try:
                mark(path)
            except (OSError, ValueError, SafetensorError) as e:
                ap.error(f"{path}: not a readable bank file ({e})")
            return
    if a.descriptors_only:
        from fiva.faces.identity import DlibEvaluator

        add_descriptors(a.descriptors_only, FaceDetector(score_threshold=0.5), DlibEvaluator())
        return
    lfw, cache = Path(a.lfw), Path(a.cache)
    if a.ghosts_only:
        eye_ghosts(a.ghosts_only, lfw, cache)
        return
    if a.groups_only:
        try:
            bank, cand_file = AnchorFaceBank.load(a.groups_only), cache / "candidates.npz"
        except (OSError, ValueError, SafetensorError) as e:
            ap.error(f"{a.groups_only}: not a readable bank file ({e})")
        if "pushed" in bank.meta:  # its textures are no candidates' any more; the push keeps the groups
            ap.error(f"{a.groups_only}: pushed further after its build (--push-only), so its faces are no candidates; "
                     "run --groups-only on the bank as built (before the push) and --push-only on it again")
        if bank.dark is not None and bank.dark.any():
            ap.error(f"{a.groups_only}: holds faces --dark-only appended; recover the donors of the bank as built")
        donors = screen(scan(lfw, cache))
        groups: list = [None] * len(bank)
        if cand_file.exists():  # the faces a build still makes: their own groups
            c = np.load(cand_file)
            for f, j in enumerate(nearest_candidates(bank.textures, c["tex"])):
                if j is not None:
                    groups[f] = list(c["group"][j])
        missing = [f for f in range(len(bank)) if groups[f] is None]
        if missing:  # the others found from their textures
            print(f"{a.groups_only}: {len(missing)} of {len(bank)} faces are no cached candidate; finding their donors "
                  f"from their textures", flush=True)
            found, diffs = recover_groups(bank, donors, lfw, int(bank.meta.get("k", a.k)),
                                          float(bank.meta.get("caricature", a.caricature)), int(bank.meta.get("seed", a.seed)),
                                          faces=missing)
            if diffs.max() > RECOVER_TOLERANCE:
                ap.error(f"{a.groups_only}: faces {[missing[i] for i in np.flatnonzero(diffs > RECOVER_TOLERANCE)]} rebuilt "
                         f"from their donors differ by more than {RECOVER_TOLERANCE} grey levels; no groups written")
            for f, g in zip(missing, found):
                groups[f] = g
        save_groups(cache, groups, bank.dlib, donors)
        print(f"wrote {cache / 'groups.npz'}: the donors of {len(bank)} faces of {a.groups_only} "
              f"({len(bank) - len(missing)} from the build's candidates)")
        return
    if a.push_only:
        push_only(ap, a.push_only, cache, a.push, a.min_donor_distance)
        return
    if a.dark_only:
        dark_only(ap, a, a.dark_only, lfw, cache)
        return
    cache.mkdir(parents=True, exist_ok=True)
    try:  # the packaged bank, before --out (by default its own file) is written over
        packaged = AnchorFaceBank.load(DEFAULT_FACE_BANK)
    except (OSError, ValueError, SafetensorError):
        packaged = None
    rows = scan(lfw, cache)
    donors = screen(rows)
    print(f"scanned {len(rows)} faces; {len(donors)} people pass screening "
          f"({sum(r['sex'] == 0 for r in donors)} men, {sum(r['sex'] == 1 for r in donors)} women)", flush=True)
    desc = descriptors(donors, lfw, cache)
    if a.scan_only:
        return
    sex_w, sex_b, acc = fit_sex_classifier(rows, lfw, cache)
    print(f"sex classifier on dlib descriptors: {acc:.3f} accurate on held-out identities", flush=True)
    if a.classifier_only:
        bank = AnchorFaceBank.load(a.classifier_only)
        bank.sex_w, bank.sex_b = sex_w, sex_b
        bank.meta["sex_classifier_accuracy"] = f"{acc:.3f}"
        bank.save(a.classifier_only)
        print(f"wrote {a.classifier_only}")
        return
    from fiva.faces.identity import DlibEvaluator, load_sface

    ev, sface, det = DlibEvaluator(), load_sface(), FaceDetector(score_threshold=0.5)
    rng = np.random.default_rng(a.seed)
    ref = np.mean([r["cshape"] for r in donors], 0).astype(np.float32)
    tris = triangulate(mesh(ref))
    cand_file = cache / "candidates.npz"  # the slow part (minutes), kept to try other selections
    if a.candidates_from_cache and cand_file.exists():
        cands, drawn, targets = load_candidates(cand_file, rows)
    else:
        cands = make_candidates(donors, desc, lfw, a, rng, tris, ev, det)
        targets = check_targets(rows, donors, lfw, a.targets, rng)
        drawn = render_check(cands, targets, lfw, tris, ev)
        save_candidates(cand_file, cands, drawn, targets)
    tdesc = descriptors(targets, lfw, cache)  # the check targets' own descriptors (cached with the rest)
    for c, cand in enumerate(cands):
        t = ~np.isnan(drawn[c, :, 0])
        # each drawing's distance to the nearest of its bank face's donors, and to the target itself
        cand["rdd"] = float(np.linalg.norm(drawn[c, t][:, None] - desc[cand["group"]][None], axis=2).min())
        cand["weak"] = int(np.sum(np.linalg.norm(drawn[c, t] - tdesc[t], axis=1) <= 0.6))
    faces = []
    for sex, want in ((0, a.men), (1, a.women)):
        ok = [c for c in range(len(cands)) if cands[c]["sex"] == sex and cands[c]["rdd"] > a.render_donor_distance
              and cands[c]["weak"] <= a.weak]
        print(f"{SEXES[sex]}: {len(ok)} of {sum(c['sex'] == sex for c in cands)} candidates pass the render check", flush=True)
        shut = [c for c in ok if lips_closed(cands[c]["shape"], a.max_mouth)]
        print(f"{SEXES[sex]}: {len(shut)} of them with lips closed (mouth opening <= {a.max_mouth})", flush=True)
        ok = shut
        if want > 0 and not ok:  # the candidates and their render check stay cached: loosen and rerun
            ap.error(f"no {SEXES[sex]} candidate passes the render check (--render-donor-distance "
                     f"{a.render_donor_distance}, --weak {a.weak} of {a.targets} targets); rerun with looser ones "
                     f"and --candidates-from-cache")
        faces += [cands[ok[i]] for i in select([cands[c] for c in ok], drawn[ok], want)]
    drop = {int(v) for v in a.drop.split(",") if v.strip()}
    kept = [f for j, f in enumerate(faces) if j not in drop]
    # the reviews by eye (REVIEWED_*) index the selection the shipped bank was reviewed from and the
    # shipped bank itself: they apply only where the selection less REVIEWED_OUT is that bank's faces
    reviewed = a.drop == ",".join(map(str, REVIEWED_OUT))
    shipped = reviewed and same_selection([f["tex"] for f in kept], packaged)
    if reviewed and not shipped:  # dropped from another selection, it would take out faces nobody looked at
        print("not the shipped bank's selection: REVIEWED_OUT is not applied; look at the faces and pass --drop", flush=True)
        kept = faces
    faces = kept
    for f in faces:
        f["sface"], f["tone"] = sface_and_tone(f["tex"], f["shape"], sface)
    dl = np.stack([f["dlib"] for f in faces])
    pair = np.linalg.norm(dl[:, None] - dl[None], axis=2)[np.triu_indices(len(faces), 1)]
    print(f"bank: {len(faces)} faces ({sum(f['sex'] == 0 for f in faces)} men, {sum(f['sex'] == 1 for f in faces)} women); "
          f"nearest-donor distance min {min(f['dd'] for f in faces):.3f}, of a drawing {min(f['rdd'] for f in faces):.3f}; "
          f"pairs of bank faces > 0.6 apart: {np.mean(pair > 0.6):.3f} (median {np.median(pair):.3f})")
    bank = AnchorFaceBank(np.stack([f["tex"] for f in faces]), np.stack([f["shape"] for f in faces]),
                          np.stack([f["sface"] for f in faces]), np.array([f["sex"] for f in faces], np.uint8),
                          np.stack([f["tone"] for f in faces]).astype(np.float32), tris,
                          np.array([f["dd"] for f in faces], np.float32),
                          {"sex_classifier_accuracy": f"{acc:.3f}", "k": a.k, "source": "LFW training identities (folds 2-10)", "spread": a.spread,
                           "min_donor_distance": a.min_donor_distance, "render_donor_distance": a.render_donor_distance,
                           "render_check_targets": a.targets, "reuse": a.reuse, "pool": a.pool,
                           "caricature": a.caricature, "max_mouth": a.max_mouth, "seed": a.seed, "reviewed_out": a.drop},
                          sex_w, sex_b, bank_descriptors(np.stack([f["tex"] for f in faces]), det, ev))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    bank.save(a.out)
    save_groups(cache, [f["group"] for f in faces], dl, donors)
    if not shipped:
        print(f"{a.out}: not the shipped bank's faces; the reviews by eye (ghosts, fringes, poor, aged) are not applied")
    eye_ghosts(a.out, lfw, cache, reviewed=REVIEWED_GHOSTS if shipped else ())
    fringes(a.out, reviewed=REVIEWED_FRINGES if shipped else ())
    poor(a.out, reviewed=REVIEWED_POOR if shipped else ())
    aged(a.out, reviewed=REVIEWED_AGED if shipped else ())
    print(f"wrote {a.out} ({Path(a.out).stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
