"""What limits issue 16's "two anchors apart" figure: the anchors, or what the drawing keeps?

    OMP_NUM_THREADS=1 python scripts/two_apart_ceiling.py [--faces 60] [--caricature 1.3 1.6]

On the first --faces LFW fold-1 faces, each drawn twice (`AnchorFaceRenderer.render`, one
rendering, no in-place search) with two anchors of the target's sex, and the dlib distance between
the two drawings taken (> 0.6: two different people). The anchors are, in turn:
- two random bank faces, drawn as a photo's first drawing (native.STILL_RENDER): what
  `evaluate_realism.py` reports as "second_anchor_beyond_0.6", without its in-place search;
- the same two bank faces drawn as a swap draws its source (source_face.SWAP_RENDER: the
  anchor's eyes, key-point proportions, colour detail and half its skin tone);
- two real people, LFW training identities (folds 2-10, never fold 1) whose face the swap's
  `source_bank` makes a one-face bank of, drawn as a photo's first drawing and as a swap;
- the bank pushed a further --caricature x away from each sex's mean bank face (shape and texture:
  build_face_bank.caricature, on the bank's own faces, no donors), drawn as a photo's first
  drawing.
Also each set's share of drawings beyond 0.6 from the original. Descriptors stay in memory.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from build_face_bank import caricature, sex_means  # noqa: E402

from fiva.anonymize.anchor_face import AnchorFaceRenderer, RenderConfig  # noqa: E402
from fiva.anonymize.face_bank import AnchorFaceBank  # noqa: E402
from fiva.anonymize.native import STILL_RENDER  # noqa: E402
from fiva.anonymize.source_face import SWAP_RENDER, source_bank  # noqa: E402
from fiva.evaluate.lfw import evaluation_identities, identity_images, image_path, read_folds  # noqa: E402
from fiva.faces import FaceDetector  # noqa: E402
from fiva.faces.identity import DlibEvaluator, load_sface  # noqa: E402
from fiva.faces.landmarks68 import Landmarker68  # noqa: E402
from fiva.io import read_image  # noqa: E402


def pushed(bank: AnchorFaceBank, gamma: float) -> AnchorFaceBank:
    """A copy of `bank` with every face pushed `gamma` x away from its sex's mean bank face."""
    tex, shapes = bank.textures.copy(), bank.shapes.copy()
    for sex, (mean_tex, ms) in sex_means(bank).items():
        for i in np.flatnonzero(bank.sex == sex):
            tex[i], shapes[i] = caricature(bank.textures[i], bank.shapes[i], mean_tex, ms, gamma, bank.triangles)
    return replace(bank, textures=tex, shapes=shapes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--bank", default="src/fiva/data/face_bank.safetensors")
    ap.add_argument("--faces", type=int, default=60)
    ap.add_argument("--people", type=int, default=400, help="LFW training people read for the real anchors")
    ap.add_argument("--caricature", type=float, nargs="*", default=[1.3, 1.6])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    lfw = Path(a.lfw)
    bank = AnchorFaceBank.load(a.bank)
    det, lm, ev, sface = FaceDetector(score_threshold=0.5), Landmarker68(), DlibEvaluator(), load_sface()
    rng = np.random.default_rng(a.seed)
    photo, swap = RenderConfig(**STILL_RENDER), SWAP_RENDER
    people: dict[int, list] = {0: [], 1: []}  # training people by the sex dlib reads (as the pipeline reads it)
    train = [n for fold in read_folds(lfw / "people.txt")[1:] for n in fold]
    for name in rng.permutation(train)[:a.people]:
        rgb = read_image(image_path(lfw, identity_images(lfw, name)[0]))
        d = det(rgb)
        if len(d):
            sex = bank.predict_sex(ev.embed(rgb, d.boxes[d.largest()]))
            if sex is not None:
                people[int(sex)].append(rgb)
    banks = {f"bank x{g}": pushed(bank, g) for g in a.caricature}
    rows: dict[str, list] = {}

    def measure(key, anchors, cfg, rgb, shape, box, e0):
        """`anchors`: two (bank, index) pairs."""
        e = [ev.embed(AnchorFaceRenderer(b, cfg).render(rgb, shape, int(j)), box) for b, j in anchors]
        rows.setdefault(key, []).append((float(np.linalg.norm(e[0] - e[1])), float(np.linalg.norm(e[0] - e0)),
                                         float(np.linalg.norm(e[1] - e0))))

    for name in evaluation_identities(lfw)[:a.faces]:
        rgb = read_image(image_path(lfw, identity_images(lfw, name)[0]))
        d = det(rgb)
        if len(d) == 0:
            continue
        i = d.largest()
        box, shape = d.boxes[i], lm(rgb, d.landmarks[i:i + 1])[0]
        e0 = ev.embed(rgb, box)
        sex = bank.predict_sex(e0)
        sex = 0 if sex is None else int(sex)
        pair = rng.choice(np.flatnonzero(bank.sex == sex), 2, replace=False)
        measure("bank faces, a photo's drawing", [(bank, j) for j in pair], photo, rgb, shape, box, e0)
        measure("bank faces, drawn as a swap", [(bank, j) for j in pair], swap, rgb, shape, box, e0)
        for key, b in banks.items():
            measure(f"{key}, a photo's drawing", [(b, j) for j in pair], photo, rgb, shape, box, e0)
        real = [(source_bank(people[sex][k], det, lm, bank, sface), 0) for k in rng.choice(len(people[sex]), 2, replace=False)]
        measure("real people, a photo's drawing", real, photo, rgb, shape, box, e0)
        measure("real people, drawn as a swap", real, swap, rgb, shape, box, e0)
    print("| anchors, drawn as | faces | two drawings > 0.6 apart | median distance | drawings > 0.6 from the original |")
    print("|---|---|---|---|---|")
    for key, r in rows.items():
        x = np.array(r)
        print(f"| {key} | {len(x)} | {np.mean(x[:, 0] > 0.6):.1%} | {np.median(x[:, 0]):.3f} | {np.mean(x[:, 1:] > 0.6):.1%} |")


if __name__ == "__main__":
    main()
