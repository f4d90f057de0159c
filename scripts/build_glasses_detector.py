"""Build `src/fiva/data/glasses.safetensors`: whether a face wears glasses (anonymize/glasses.py).

    OMP_NUM_THREADS=1 python scripts/build_glasses_detector.py [--lfw ../shared/data/lfw]
        [--train scripts/data/glasses_train.txt] [--held scripts/data/glasses_fold1.txt]
        [--components 80] [--recall 0.9] [--out src/fiva/data/glasses.safetensors]

Each labelled LFW image (labels by eye, in scripts/data/): its largest YuNet face, dlib's 68
points, the eye band's HOG and the bridge's span (`glasses.raw_features`). The HOGs of the
training faces are reduced to their first --components principal components; a logistic
regression (classes weighted equally, a little L2) on those and the span. Its threshold is the
probability at which 5-fold cross-validation on the training faces finds --recall of the glasses
(a face taken for a wearer loses only its drawing in full). Reported: the held-out fold-1 faces'
ROC AUC, and the share of their glasses found and of bare faces taken for glasses at that
threshold. Fold 1 is never trained on.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fiva.anonymize.glasses import GlassesModel, raw_features
from fiva.faces import FaceDetector
from fiva.faces.landmarks68 import Landmarker68
from fiva.io import read_image

sys.path.insert(0, str(Path(__file__).parent))
from build_face_bank import fit_logistic, read_labels  # noqa: E402  (labels: 0 none / 1 glasses / 2 sunglasses)


def features(lfw: Path, labels: list[tuple[str, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HOGs [N,D], spans [N] and 0/1 labels [N] of the labelled images' largest faces."""
    det, lm = FaceDetector(score_threshold=0.5), Landmarker68()
    hogs, spans, y = [], [], []
    for name, label in labels:
        rgb = read_image(lfw / "images" / name.rsplit("_", 1)[0] / name)
        d = det(rgb)
        if len(d) == 0:
            print(f"{name}: no face found; left out")
            continue
        shape = lm(rgb, d.landmarks[d.largest()][None])[0]
        h, s = raw_features(rgb, shape)
        hogs.append(h), spans.append(s), y.append(float(label > 0))
    return np.stack(hogs), np.array(spans, np.float32), np.array(y)


def fit(hogs: np.ndarray, spans: np.ndarray, y: np.ndarray, k: int) -> GlassesModel:
    mean = hogs.mean(0)
    _, _, vt = np.linalg.svd(hogs - mean, full_matrices=False)
    x = np.c_[(hogs - mean) @ vt[:k].T, spans]
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w, b = fit_logistic((x - mu) / sd, y)
    return GlassesModel(mean.astype(np.float32), vt[:k].astype(np.float32), mu.astype(np.float32), sd.astype(np.float32),
                        w.astype(np.float32), b)


def auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC: the chance a wearer scores above a bare face."""
    order = np.argsort(scores)
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(len(scores))
    pos = y == 1
    return float((ranks[pos].mean() - (pos.sum() - 1) / 2) / (~pos).sum())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--train", default="scripts/data/glasses_train.txt")
    ap.add_argument("--held", default="scripts/data/glasses_fold1.txt")
    ap.add_argument("--components", type=int, default=80)
    ap.add_argument("--recall", type=float, default=0.9)
    ap.add_argument("--out", default="src/fiva/data/glasses.safetensors")
    args = ap.parse_args(argv)
    lfw = Path(args.lfw)
    hogs, spans, y = features(lfw, read_labels(args.train))
    # the threshold: cross-validated probabilities of the training faces
    fold = np.random.default_rng(0).integers(0, 5, len(y))
    cv = np.zeros(len(y))
    for k in range(5):
        m = fit(hogs[fold != k], spans[fold != k], y[fold != k], args.components)
        cv[fold == k] = m.probabilities(hogs[fold == k], spans[fold == k])
    threshold = float(np.quantile(cv[y == 1], 1 - args.recall))
    model = fit(hogs, spans, y, args.components)
    hh, hs, hy = features(lfw, read_labels(args.held))
    p = model.probabilities(hh, hs)
    report = {"train_faces": len(y), "train_glasses": int(y.sum()), "cv_auc": round(auc(cv, y), 3),
              "threshold": round(threshold, 4), "held_faces": len(hy), "held_glasses": int(hy.sum()),
              "held_auc": round(auc(p, hy), 3), "held_found": round(float(np.mean(p[hy == 1] >= threshold)), 3),
              "held_false_alarms": round(float(np.mean(p[hy == 0] >= threshold)), 3)}
    print(report)
    model.threshold = report["threshold"]
    model.save(args.out, **{k: str(v) for k, v in report.items() if k != "threshold"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
