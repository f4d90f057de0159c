"""Choose the ITM threshold t (cosine distance on SFace embeddings) on all 6,000 LFW pairs.

    python scripts/calibrate_itm.py [--lfw ../shared/data/lfw] [--far 0.001]

t is the largest distance at which at most `far` of the different-person pairs would be taken for
the same person; the script prints t and the share of same-person pairs matched at t. The pairs
overlap both the training and the evaluation identities. Embeddings stay in memory. `fiva evaluate`
reports the same calibration for SFace and the dlib evaluator.
"""
import argparse
from pathlib import Path

import numpy as np

from fiva.evaluate.calibrate import threshold_at_far
from fiva.evaluate.lfw import read_pairs
from fiva.faces import FaceDetector, align_faces
from fiva.faces.identity import load_sface
from fiva.io import read_image


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--far", type=float, default=0.001)
    a = ap.parse_args()
    lfw = Path(a.lfw)
    pairs = list(read_pairs(lfw / "pairs.txt"))
    keys = sorted({k for p in pairs for k in p[:2]})
    det, sface = FaceDetector(), load_sface()
    crops, index = [], {}
    for name, n in keys:
        img = read_image(lfw / "images" / name / f"{name}_{n:04d}.jpg")
        d = det(img)
        if len(d):
            index[(name, n)] = len(crops)
            crops.append(align_faces(img, d.landmarks[d.largest()][None])[0][0])
    emb = sface.embed(np.stack(crops))
    dist, same = [], []
    for k1, k2, s in pairs:
        if k1 in index and k2 in index:
            dist.append(1 - float(emb[index[k1]] @ emb[index[k2]]))
            same.append(s)
    dist, same = np.array(dist), np.array(same)
    diff = dist[~same]
    t = threshold_at_far(diff, a.far)  # at most far*len(diff) different pairs fall below t
    print(f"pairs used: {len(dist)} ({same.sum()} same, {(~same).sum()} different; {len(pairs) - len(dist)} without a face)")
    print(f"threshold t = {t:.4f} (cosine distance): false matches {np.mean(diff < t):.4f}, "
          f"same-person pairs matched {np.mean(dist[same] < t):.4f}")


if __name__ == "__main__":
    main()
