"""Threshold calibration: for each identity model, the distance at a false acceptance rate (FAR) on
LFW pairs, and the true acceptance rate (TAR) at that distance.

Every retrieval metric uses these thresholds, never a number from another model (the paper's 0.63
is CosFace's). Results (thresholds and the pair distances for plots, never embeddings) are cached,
so repeated evaluations skip the ~7,700 image embeddings.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..weights import cache_dir
from .lfw import Key, image_path
from .models import Face, IdentityModel


@dataclass
class Calibration:
    model: str
    metric: str
    far: float
    threshold: float  # distances strictly below it count as the same person
    tar: float  # share of same-person pairs below the threshold
    far_measured: float
    pairs: int
    same: int
    different: int
    no_face: int  # pairs skipped: no face found in one of the images
    genuine: list[float] = field(default_factory=list, repr=False)  # same-person distances (for plots)
    impostor: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict:
        d = asdict(self)
        d.pop("genuine"), d.pop("impostor")
        return d


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """The largest threshold t with at most floor(far * n) impostor distances below t."""
    diff = np.sort(np.asarray(impostor))
    return float(diff[min(len(diff) - 1, int(np.floor(far * len(diff))))])


def calibrate(model: IdentityModel, pairs: list[tuple[Key, Key, bool]], faces: dict[Path, Face | None], lfw: Path,
              far: float = 0.001) -> Calibration:
    dist, same, skipped = [], [], 0
    for k1, k2, s in pairs:
        f1, f2 = faces.get(image_path(lfw, k1)), faces.get(image_path(lfw, k2))
        if f1 is None or f2 is None:
            skipped += 1
            continue
        dist.append(float(model.distances(f1.emb[model.name], f2.emb[model.name][None])[0]))
        same.append(s)
    dist, same = np.array(dist), np.array(same, bool)
    if same.all() or not same.any():
        raise ValueError("calibration needs both same-person and different-person pairs")
    t = threshold_at_far(dist[~same], far)
    return Calibration(model.name, model.metric, far, t, float(np.mean(dist[same] < t)), float(np.mean(dist[~same] < t)),
                       len(dist), int(same.sum()), int((~same).sum()), skipped,
                       [round(float(v), 4) for v in dist[same]], [round(float(v), 4) for v in dist[~same]])


def cache_path(model: str, pairs: list, far: float) -> Path:
    h = hashlib.sha1(json.dumps([model, far, pairs]).encode()).hexdigest()[:12]
    return cache_dir() / f"calibration-{model}-{h}.json"


def load_cached(model: str, pairs: list, far: float) -> Calibration | None:
    path = cache_path(model, pairs, far)
    if not path.exists():
        return None
    try:
        return Calibration(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None


def save_cached(cal: Calibration, pairs: list) -> None:
    path = cache_path(cal.model, pairs, cal.far)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(cal)))
    tmp.replace(path)
