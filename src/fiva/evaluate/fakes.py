"""The reconstruction attack as a deepfake detector (paper Section 3.6).

R undoes the trace an identity-replacing generator leaves; on an untouched face it has nothing to
undo. So the identity distance between a face X and R(X), measured with the independent evaluator,
is a fake score: high for faces the attacked generator made, low for real ones. It says nothing
about manipulations R was not trained on (other generators, blur): measure before trusting it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..faces import FaceDetector
from ..faces.identity import DlibEvaluator
from ..io import IMAGE_EXTS, VIDEO_EXTS, InputError, read_image


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


def detect_fakes(paths: list, attack_path: str, threshold: float | None = None, frames: int = 10) -> tuple[list[dict], list[str]]:
    """Per face of each input (images; videos: `frames` frames spread over them): score and verdict,
    and one error line per input that could not be read. The threshold defaults to the one stored
    with the attack model (chosen on held-out data)."""
    from safetensors import safe_open

    from ..anonymize.video import read_frames
    from ..models.attack import load_attack

    attack = load_attack(attack_path)
    if threshold is None:
        with safe_open(str(attack_path), "pt") as f:
            stored = (f.metadata() or {}).get("fake_threshold")
        if stored is None:
            raise ValueError(f"{attack_path}: no fake threshold stored with this attack model; pass --threshold "
                             "(fiva evaluate --attack measures one)")
        threshold = float(stored)
    det, evaluator = FaceDetector(), DlibEvaluator()
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
            for box, score in zip(d.boxes, fake_scores(attack, rgb, d, evaluator)):
                results.append({"file": str(p), **({"frame_sample": i} if ext in VIDEO_EXTS else {}),
                                "box": [round(float(c), 1) for c in box], "score": round(float(score), 4),
                                "fake": bool(score > threshold), "threshold": threshold})
    return results, errors
