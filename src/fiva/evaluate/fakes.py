"""Fake detection: the shipped fake detector, and the reconstruction attack R (paper Section 3.6).

`fiva detect-fake` uses the dedicated detector by default ("detector" score: its fake probability,
models/detector.py, trained by train/detector.py; threshold stored with its weights, chosen on
held-out real faces). R's scores stay available with `--attack`:

R undoes the trace an identity-replacing generator leaves; on an untouched face it has nothing to
undo. Two fake scores, high for faces the attacked anonymizer made and low for real ones:
- "identity" (the paper's): the identity distance between X and R(X), measured with the
  independent evaluator (dlib, cosine distance);
- "residual": how much R changes the face, the mean |R(X) - X| inside the inner-face ellipse of the
  aligned crop, in 8-bit levels (the paper's premise taken literally: R leaves real faces alone).
Which one a shipped R uses, and its threshold, are stored with its weights (`fake_score`,
`fake_threshold`; chosen by scripts/evaluate_detect_fake.py). Neither says anything about
manipulations R was not trained on (other generators, blur): measure before trusting it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..faces import FaceDetector
from ..faces.identity import DlibEvaluator
from ..io import IMAGE_EXTS, VIDEO_EXTS, InputError, read_image


SCORES = ("identity", "residual")  # R's scores
KINDS = ("detector",) + SCORES


def detector_scores(detector, rgb: np.ndarray, dets) -> np.ndarray:
    """Per face: the fake detector's probability that its aligned crop is anonymized (0-1)."""
    import torch

    from ..faces import align_faces
    from ..faces.identity import to_tensor

    if len(dets) == 0:
        return np.zeros(0)
    # sampled as in its training: blurred first, Paul Rudd's real 1000 px face scored 0.62, not 0.02
    crops, _ = align_faces(rgb, dets.landmarks, detector.resolution, antialias=False)
    with torch.no_grad():
        return torch.sigmoid(detector(to_tensor(crops))).numpy().astype(float)


def residual_scores(attack, rgb: np.ndarray, dets) -> np.ndarray:
    """Per face: mean |R(X) - X| over the inner-face ellipse of its aligned crop, in 8-bit levels."""
    import torch

    from ..faces import align_faces
    from ..faces.identity import to_tensor
    from ..models.generator import face_ellipse

    if len(dets) == 0:
        return np.zeros(0)
    crops, _ = align_faces(rgb, dets.landmarks, attack.resolution, antialias=False)  # as the detector's
    x = to_tensor(crops)
    with torch.no_grad():
        r = attack(x)
    w = face_ellipse(attack.resolution, attack.cfg)
    diff = (r - x).abs().mean(1, keepdim=True)
    return ((diff * w).sum((1, 2, 3)) / w.sum() * 127.5).numpy().astype(float)


def scores(kind: str, attack, rgb: np.ndarray, dets, evaluator: DlibEvaluator | None = None) -> np.ndarray:
    """Per face: the fake score `kind` (KINDS); `attack` is the fake detector for "detector"."""
    if kind == "detector":
        return detector_scores(attack, rgb, dets)
    if kind == "residual":
        return residual_scores(attack, rgb, dets)
    if kind == "identity":
        return fake_scores(attack, rgb, dets, evaluator)
    raise ValueError(f"unknown fake score '{kind}' (choose from {', '.join(KINDS)})")


def stored_detector_threshold(path) -> float:
    """The threshold stored with a fake detector's weights (chosen on held-out real faces)."""
    from ..models.detector import detector_metadata

    meta = detector_metadata(path)
    if "fake_threshold" not in meta:
        raise ValueError(f"{path}: no fake threshold stored with this detector; pass --threshold")
    return float(meta["fake_threshold"])


def stored_score(attack_path) -> tuple[str, float | None]:
    """The fake score kind and threshold stored with an attack model's weights (chosen on held-out
    real faces); weights from before the residual score use the paper's identity score."""
    from ..weights import metadata

    meta = metadata(attack_path)
    threshold = meta.get("fake_threshold")
    return meta.get("fake_score", "identity"), None if threshold is None else float(threshold)


def fake_scores(attack, rgb: np.ndarray, dets, evaluator: DlibEvaluator) -> np.ndarray:
    """Per face: cosine distance between the evaluator's embeddings of X and of R(X)."""
    from .run import reconstruct

    out = []
    for box, lm in zip(dets.boxes, dets.landmarks):
        a = evaluator.embed(rgb, box)
        b = evaluator.embed(reconstruct(attack, rgb, lm), box)
        out.append(1.0 - float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return np.array(out)


def roc(real: np.ndarray, fake: np.ndarray, calib: np.ndarray | None = None) -> dict:
    """ROC AUC (fakes scored higher is positive) and the TPR at 1% FPR with its threshold.

    The threshold is the 99th percentile of `calib` (held-out real scores); without it, of `real`
    itself. With `calib`, the false-positive rate is measured on `real`, which it did not see."""
    real, fake = np.asarray(real, float), np.asarray(fake, float)
    both = np.concatenate([real, fake])
    ranks = np.argsort(np.argsort(both, kind="mergesort"), kind="mergesort") + 1.0
    for v in np.unique(both):  # average ranks of ties
        ranks[both == v] = ranks[both == v].mean()
    auc = (ranks[len(real):].sum() - len(fake) * (len(fake) + 1) / 2) / (len(real) * len(fake))
    ref = real if calib is None else np.asarray(calib, float)
    thr = float(np.quantile(ref, 0.99)) if len(ref) else float("nan")
    return {"auc": float(auc), "threshold_at_1pct_fpr": thr, "tpr_at_1pct_fpr": float(np.mean(fake > thr)),
            "fpr": float(np.mean(real > thr)), "real": len(real), "fake": len(fake),
            "calibration_real": len(ref) if calib is not None else 0}


def detect_fakes(paths: list, attack_path: str | None = None, threshold: float | None = None, frames: int = 10,
                 score: str | None = None, detector_path: str | None = None, min_face: int = 24) -> tuple[list[dict], list[str]]:
    """Per face of each input (images; videos: `frames` frames spread over them): score and verdict,
    and one error line per input that could not be read. Without `attack_path` (or with score
    "detector") the fake detector at `detector_path` (default: the shipped one) scores; with it, R's
    score. The score kind and threshold default to the ones stored with the model (chosen on held-out data).
    Faces smaller than `min_face` px (fiva anonymize's --min-face: it never draws them) get no verdict
    ("fake": null): upscaled to 112 px they look manipulated to the detector (wild crowds: 101 of 131 real
    faces under 24 px scored above its threshold)."""
    from ..anonymize.video import read_frames
    from ..weights import DEFAULT_DETECTOR

    if attack_path is None or score == "detector":
        from ..models.detector import load_detector

        path = detector_path or str(DEFAULT_DETECTOR)
        model, kind = load_detector(path), "detector"
        threshold = stored_detector_threshold(path) if threshold is None else float(threshold)
    else:
        from ..models.attack import load_attack

        model = load_attack(attack_path)
        stored_kind, stored_threshold = stored_score(attack_path)
        kind = score or stored_kind
        if kind not in SCORES:
            raise ValueError(f"unknown fake score '{kind}' for R (choose from {', '.join(SCORES)})")
        if threshold is None:
            stored = stored_threshold if kind == stored_kind else None
            if stored is None:
                raise ValueError(f"{attack_path}: no fake threshold for the {kind} score stored with this attack model; pass "
                                 "--threshold (scripts/evaluate_detect_fake.py measures one)")
            threshold = float(stored)
    det, evaluator = FaceDetector(), (DlibEvaluator() if kind == "identity" else None)
    results, errors = [], []
    for p in map(Path, paths):
        ext = p.suffix.lower()
        try:
            if ext not in IMAGE_EXTS | VIDEO_EXTS:
                raise InputError(f"{p}: unsupported file type '{p.suffix}'")
            images = [read_image(p)] if ext in IMAGE_EXTS else read_frames(p, frames)
        except InputError as e:
            errors.append(str(e).splitlines()[0])
            continue
        for i, rgb in enumerate(images):
            d = det(rgb)
            for box, value in zip(d.boxes, scores(kind, model, rgb, d, evaluator)):
                px = float(max(box[2] - box[0], box[3] - box[1]))
                results.append({"file": str(p), **({"frame_sample": i} if ext in VIDEO_EXTS else {}),
                                "box": [round(float(c), 1) for c in box], "face_px": round(px), "score": round(float(value), 4),
                                "score_kind": kind, "fake": bool(value > threshold) if px >= min_face else None,
                                "threshold": threshold})
    return results, errors
