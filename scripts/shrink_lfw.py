"""Small faces for the fake detector's training pairs: LFW training photos shrunk so their faces are ~24-90 px.

    python scripts/shrink_lfw.py [--data runs/lfw/train] [--out runs/lfw_small] [--n 2500]
    fiva train pairs --data runs/lfw_small --out runs/pairs_small --max-pairs 2500

In group photos faces are 24-100 px; upscaled to the detector's 112 px they look unlike LFW's
250 px portraits, and a detector trained only on those flags them as fake. Shrunk photos run
through the real pipeline give both real small faces and what `fiva anonymize` draws at that size.

Each of `--n` photos (the end of `fiva train pairs`' seed-0 order, so mostly photos the default
pairs folder did not use) is scaled by a factor log-uniform in 0.22-0.8 (LFW faces of ~110 px ->
24-90 px) and written as JPEG of quality 70-95, at OUT/<Name>/<file>.jpg: LFW TRAINING identities
only, never evaluation ones. Written under runs/ (git-ignored): never commit it.
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from fiva.train.data import list_images


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="runs/lfw/train", help="LFW training identities (scripts/prepare_lfw.py)")
    ap.add_argument("--out", default="runs/lfw_small")
    ap.add_argument("--n", type=int, default=2500, help="how many photos (default: 2500)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    paths = list_images(a.data)
    order = np.random.default_rng(0).permutation(len(paths))[::-1][:a.n]
    rng = np.random.default_rng(a.seed)
    for i in order:
        p = paths[i]
        img = cv2.imread(str(p))
        s = float(np.exp(rng.uniform(np.log(0.22), np.log(0.8))))
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        out = Path(a.out) / p.parent.name / p.name
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), small, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(70, 96))])
    print(f"{len(order)} photos in {a.out}")


if __name__ == "__main__":
    main()
