"""Where does dlib find a face's identity? Edits of the inner-face ellipse, judged like the default model.

    python scripts/identity_bands.py [--n 64] [--train-pack runs/cache/crops-112-....npz]

Each variant replaces what lies inside the generator's inner-face ellipse of the aligned crop (colour-
matched to the face there) and pastes it back like the pipeline does; then, as in
scripts/evaluate_default.py, dlib distance to the original, YuNet detection and landmark error on the
first image of the first N LFW evaluation identities (fold 1). The figures motivate donor guidance
(src/fiva/train/donors.py): reconstruction losses that pin any band of the inner face pin identity.
Needs the [eval] extra, ../shared/data and the training crop pack (for other people's faces).
"""
import argparse
import json
from pathlib import Path

import torch

from fiva.anonymize.frame import Anonymizer
from fiva.evaluate.lfw import read_folds
from fiva.evaluate.quality import evaluate_quality
from fiva.models.generator import GeneratorConfig, face_ellipse, low_pass
from fiva.train.data import load_pack
from fiva.train.donors import colour_match, structure_descriptor
from fiva.train.donors import mean_face as mean_of_all


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--train-pack", required=True, help="crop pack of the LFW training identities (fiva train caches one)")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--offset", type=int, default=0, help="skip the first identities (e.g. 200: a set disjoint from evaluate_default.py's)")
    ap.add_argument("--bank-every", type=int, default=5, help="other people's faces: every k-th crop of the pack (default: 5)")
    ap.add_argument("--only", nargs="*", default=None, help="run only these variants (names as printed)")
    ap.add_argument("--ellipse-of", default=None, help="edit inside this generator config's ellipse (default: the shipped model's)")
    a = ap.parse_args()
    torch.manual_seed(0)
    lfw = Path(a.lfw)
    names = sorted(read_folds(lfw / "people.txt")[0])[a.offset:a.offset + a.n]
    images = [sorted((lfw / "images" / n).glob("*.jpg"))[0] for n in names]
    anon = Anonymizer(method="fiva", fallback="none", defense="none", progress=False)
    G = anon.generator
    ell = face_ellipse(112, GeneratorConfig.named(a.ellipse_of)) if a.ellipse_of else G.ellipse
    pack = torch.from_numpy(load_pack(a.train_pack)[0])
    prior = mean_of_all(pack)  # fiva-112-mf's prior: the mean of all training faces
    bank = pack[::a.bank_every].permute(0, 3, 1, 2).float().div(127.5).sub(1)
    mean_face = bank[torch.randperm(len(bank))[:200]].mean(0, keepdim=True)
    desc = torch.cat([structure_descriptor(bank[i:i + 1024], ell) for i in range(0, len(bank), 1024)])

    def random_others(x, k):  # mean of k random faces of the bank per face
        return bank[torch.randint(len(bank), (len(x), k))].mean(1)

    def nearest(x):
        return bank[(structure_descriptor(x, ell) @ desc.T).argmax(1)]

    def mean_of_nearest(k, pool):  # train/donors.py's --donor-mix k --donor-pool pool
        def edit(x):
            top = (structure_descriptor(x, ell) @ desc.T).topk(pool, dim=1).indices
            return bank[top[:, torch.randperm(pool)[:k]]].mean(1)
        return edit

    variants = {
        "own 28x28 low-pass": lambda x: low_pass(x, 4),
        "own 14x14 low-pass": lambda x: low_pass(x, 8),
        "mean face's 28x28 low-pass + own finer detail": lambda x: x + low_pass(colour_match(mean_face.expand_as(x), x, ell), 4) - low_pass(x, 4),
        "mean of 200 training faces": lambda x: mean_face.expand_as(x),
        "mean of all training faces": lambda x: prior.expand_as(x),
        "mean of all training faces + own 7x7 low-pass": lambda x: prior.expand_as(x),  # what a residual lp16w generator starts from
        "another person (random)": lambda x: random_others(x, 1),
        "another person (nearest in structure)": nearest,
        "mean of 2 random other people": lambda x: random_others(x, 2),
        "mean of 4 of the 50 nearest in structure": mean_of_nearest(4, 50),
        "mean of 8 of the 50 nearest in structure": mean_of_nearest(8, 50),
        "half mean face, half mean of 2 random other people": lambda x: 0.5 * mean_face + 0.5 * random_others(x, 2),
        "0.7 mean face, 0.3 mean of 2 random other people": lambda x: 0.7 * mean_face + 0.3 * random_others(x, 2),
        "half mean face, half another person (random)": lambda x: 0.5 * mean_face + 0.5 * random_others(x, 1),
    }
    results = {}
    for name, edit in variants.items():
        if a.only and name not in a.only:
            continue
        def forward(x, z, edit=edit, own_band=name.endswith("+ own 7x7 low-pass")):
            m = ell.expand(len(x), -1, -1, -1)
            x_a = colour_match(edit(x), x, m)
            if own_band:
                x_a = x_a + low_pass(x, 16) - low_pass(x_a, 16)
            return x_a, m, m * x_a + (1 - m) * x

        G.forward = forward
        results[name] = evaluate_quality(anon, images, progress=False).summary()
        print(json.dumps({name: results[name]}), flush=True)


if __name__ == "__main__":
    main()
