"""`fiva detect-fake` measured: real faces against what `fiva anonymize` writes and against blur (issue 17).

    python scripts/evaluate_detect_fake.py [--detector src/fiva/data/fake-detector.safetensors] \
        [--attack runs/attack_anchor/attack.safetensors] [--lfw ../shared/data/lfw] [--wild ../shared/data/wild] \
        [--calib 300] [--test 200] [--out runs/detect_fake] [--cache OUT/cache]

Scores: the fake detector's ("detector", `fiva detect-fake`'s default; default: the shipped one)
and, with --attack, R's two (identity, residual). For the detector also the figures at the
threshold stored with it (`shipped`, what `fiva detect-fake` uses: `fiva train detector` chooses it
on real faces of LFW TRAINING-split identities held out of its training, so on nobody measured
here; its metadata says how, `threshold_chosen_on`, copied into the report).

Data (never trained on by R, whose pairs come from LFW training identities):
- calibration: one photo each of half of the LFW evaluation identities (fold 1): real faces only;
  the threshold of each score is their (1 - fpr)-quantile (default 2% false positives);
- test: one photo each of the other half. Real: the photo; anonymized: `fiva anonymize` with its
  defaults (anchor-face, noise defense, verification), the faces it drew (fallback-obfuscated ones
  are counted apart); blur: `--method blur`. As `fiva detect-fake` runs: faces are detected afresh
  on each image (a face not found counts as not flagged);
- wild: every face of ../shared/data/wild that the pipeline drew, real vs anonymized vs blurred;
  and, for the detector at its stored threshold, how many of EVERY real face found in those photos
  it flags, by face size (under 24 px, 24-100 px, 100 px and over; `fiva detect-fake`'s face_px).
Per score (identity, residual; fakes.py): ROC AUC, and at the threshold the false-positive rate on
the test reals, the true-positive rate and the accuracy over real + anonymized faces.
Anonymized and blurred images are cached in --cache (default OUT/cache; they depend on neither model). Writes OUT/report.json.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fiva.anonymize.frame import Anonymizer
from fiva.anonymize.runner import file_seed
from fiva.evaluate.fakes import SCORES, roc, scores, stored_detector_threshold
from fiva.evaluate.lfw import identity_images, image_path, read_folds
from fiva.faces import FaceDetector
from fiva.faces.detect import match_face
from fiva.faces.identity import DlibEvaluator
from fiva.io import IMAGE_EXTS, read_image, write_image
from fiva.models.attack import load_attack
from fiva.models.detector import detector_metadata, load_detector
from fiva.weights import DEFAULT_DETECTOR


def lfw_split(lfw: Path, n_calib: int, n_test: int, seed: int = 0):
    """One image each of LFW evaluation identities: (calibration keys, test keys), disjoint people."""
    ids = sorted(read_folds(lfw / "people.txt")[0])
    order = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    half = len(order) // 2
    pick = lambda names, n: [identity_images(lfw, x)[0] for x in names[:n]]  # noqa: E731
    return pick(order[:half], n_calib), pick(order[half:], n_test)


def cached(cache: Path, name: str, make):
    p = cache / name
    if p.exists():
        return read_image(p)
    img = make()
    p.parent.mkdir(parents=True, exist_ok=True)
    write_image(p, img)
    return img


class Scorer:
    def __init__(self, models: dict, detector, evaluator):
        self.models, self.det, self.ev = models, detector, evaluator  # models: score kind -> model

    def __call__(self, img: np.ndarray, box: np.ndarray) -> dict | None:
        """Both scores of the face found on `img` at `box` (detected afresh), None if not found."""
        d = self.det(img)
        j = match_face(box, d.boxes)
        if j is None:
            return None
        one = d[np.array([j])]
        return {k: float(scores(k, m, img, one, self.ev)[0]) for k, m in self.models.items()}


def summarise(real: list, fake: list, calib: list, fpr: float, kinds, extra: dict | None = None, shipped: dict | None = None) -> dict:
    """Per score: AUC, threshold from `calib` at `fpr`, FPR/TPR/accuracy on real + fake (missing = not flagged);
    and the same at the `shipped` threshold of a kind."""
    out = {}
    for k in kinds:
        r = np.array([s[k] for s in real if s is not None])
        f = np.array([s[k] if s is not None else -np.inf for s in fake])
        c = np.array([s[k] for s in calib if s is not None])
        thr = float(np.quantile(c, 1 - fpr))
        ro = roc(r, f[np.isfinite(f)])
        tp, fp = int((f > thr).sum()), int((r > thr).sum())
        out[k] = {"auc": round(ro["auc"], 4), "threshold": round(thr, 6), "fpr": round(fp / len(r), 4),
                  "tpr": round(tp / len(f), 4), "accuracy": round((tp + len(r) - fp) / (len(r) + len(f)), 4),
                  "real": len(r), "fake": len(f), "fake_not_found": int((~np.isfinite(f)).sum()),
                  "median_real": round(float(np.median(r)), 4), "median_fake": round(float(np.median(f[np.isfinite(f)])), 4)}
        if k in (shipped or {}):
            t = shipped[k]
            tp, fp = int((f > t).sum()), int((r > t).sum())
            out[k]["shipped"] = {"threshold": round(t, 6), "fpr": round(fp / len(r), 4), "tpr": round(tp / len(f), 4),
                                 "accuracy": round((tp + len(r) - fp) / (len(r) + len(f)), 4)}
    return {**out, **(extra or {})}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attack", default=None, help="also score with R (identity, residual)")
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="fake detector (default: the shipped one; '' for none)")
    ap.add_argument("--cache", default=None, help="folder of cached anonymized/blurred images (default: OUT/cache)")
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--wild", default="../shared/data/wild")
    ap.add_argument("--calib", type=int, default=300)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--fpr", type=float, default=0.02, help="false-positive rate the threshold is chosen for on calibration reals")
    ap.add_argument("--out", default="runs/detect_fake")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(1)
    lfw, out = Path(a.lfw), Path(a.out)
    cache = Path(a.cache) if a.cache else out / "cache"
    det = FaceDetector()
    models, shipped = {}, {}
    if a.detector:
        models["detector"], shipped["detector"] = load_detector(a.detector), stored_detector_threshold(a.detector)
    if a.attack:
        attack = load_attack(a.attack)
        models.update({k: attack for k in SCORES})
    ev = DlibEvaluator() if a.attack else None
    score = Scorer(models, det, ev)
    anon, blur = Anonymizer(progress=False, seed=a.seed), Anonymizer(method="blur", progress=False)

    calib_keys, test_keys = lfw_split(lfw, a.calib, a.test, a.seed)
    calib = []
    for k in tqdm(calib_keys, desc="calibration reals"):
        rgb = read_image(image_path(lfw, k))
        d = det(rgb)
        if len(d):
            calib.append(score(rgb, d.boxes[d.largest()]))

    def faces_of(name: str, rgb: np.ndarray, drawn_only: bool, largest: bool):
        """Scores of the image's faces: real, anonymized (drawn faces), blurred; and the fallbacks."""
        d = det(rgb)
        if len(d) == 0:
            return [], 0
        anon.reset(seed=file_seed(a.seed, name))
        fake_img = cached(cache, f"anon/{name}.png", lambda: anon.anonymize_image(rgb, d))
        if not (cache / f"anon/{name}.json").exists():
            (cache / f"anon/{name}.json").write_text(json.dumps(list(anon.outcomes)))
        outcomes = json.loads((cache / f"anon/{name}.json").read_text())
        blur_img = cached(cache, f"blur/{name}.png", lambda: blur.anonymize_image(rgb, d))
        idx = [d.largest()] if largest else range(len(d))
        rows, fallbacks = [], 0
        for i in idx:
            if outcomes[i] != "generated":
                fallbacks += outcomes[i] not in ("rejected", "kept")
                if drawn_only:
                    continue
            box = d.boxes[i]
            rows.append((score(rgb, box), score(fake_img, box), score(blur_img, box)))
        return rows, fallbacks

    lfw_rows, lfw_fallbacks = [], 0
    for k in tqdm(test_keys, desc="LFW test"):
        rows, fb = faces_of(f"lfw/{k[0]}_{k[1]:04d}", read_image(image_path(lfw, k)), True, True)
        lfw_rows += rows
        lfw_fallbacks += fb
    wild_rows, wild_fallbacks, wild_reals = [], 0, {"under 24 px": [], "24-100 px": [], "100 px and over": []}
    for p in tqdm(sorted(q for q in Path(a.wild).iterdir() if q.suffix.lower() in IMAGE_EXTS), desc="wild"):
        rgb = read_image(p)
        rows, fb = faces_of(f"wild/{p.stem}", rgb, True, False)
        wild_rows += rows
        wild_fallbacks += fb
        if "detector" in models:  # every real face, as `fiva detect-fake` scores them
            d = det(rgb)
            for box, v in zip(d.boxes, scores("detector", models["detector"], rgb, d)):
                px = max(box[2] - box[0], box[3] - box[1])
                wild_reals["under 24 px" if px < 24 else "24-100 px" if px < 100 else "100 px and over"].append(float(v))

    report = {"attack": str(a.attack), "detector": a.detector, "shipped_thresholds": shipped, "fpr_target": a.fpr, "calibration_reals": len([c for c in calib if c is not None])}
    if "detector" in models:
        report["detector_threshold_chosen_on"] = detector_metadata(a.detector).get("threshold_chosen_on")
        report["wild_every_real_face"] = {k: {"faces": len(v), "flagged_at_shipped": int(np.sum(np.array(v) > shipped["detector"]))}
                                          for k, v in wild_reals.items()}
    for name, rows, fb in (("lfw", lfw_rows, lfw_fallbacks), ("wild", wild_rows, wild_fallbacks)):
        real = [r[0] for r in rows]
        report[name] = {"anonymized": summarise(real, [r[1] for r in rows], calib, a.fpr, models, {"fallback_faces_left_out": fb}, shipped),
                        "blur": summarise(real, [r[2] for r in rows], calib, a.fpr, models, None, shipped)}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    for name in ("lfw", "wild"):
        for vs in ("anonymized", "blur"):
            for k in models:
                s = report[name][vs][k]
                print(f"{name:4s} real vs {vs:10s} {k:8s} AUC {s['auc']:.3f}  thr {s['threshold']:.4f}  FPR {s['fpr']:.3f}  "
                      f"TPR {s['tpr']:.3f}  acc {s['accuracy']:.3f}  (real {s['real']}, fake {s['fake']}, not found {s['fake_not_found']})")
                if "shipped" in s:
                    t = s["shipped"]
                    print(f"{'':4s}   at the shipped threshold {t['threshold']:.4f}: FPR {t['fpr']:.3f}  TPR {t['tpr']:.3f}  acc {t['accuracy']:.3f}")
    if "detector" in models:
        print(f"detector threshold {shipped['detector']:.4f}, chosen on {report['detector_threshold_chosen_on']}")
        print("wild, every real face flagged at it: " + ", ".join(f"{k} {v['flagged_at_shipped']} of {v['faces']}"
                                                             for k, v in report["wild_every_real_face"].items()))


if __name__ == "__main__":
    main()
