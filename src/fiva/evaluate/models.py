"""The identity models an evaluation measures with, behind one small interface.

- `dlib`: the independent evaluator (dlib's ResNet, Euclidean distance), never used in training.
- `sface`: the encoder the generator is conditioned and trained on (cosine distance); the negated
  retrieval (¬ID) lives in its hypersphere.

Embeddings are biometric data: they stay in memory and are never written anywhere.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..faces import FaceDetector, align_faces
from ..faces.identity import DlibEvaluator, load_sface
from ..io import read_image


class IdentityModel:
    name: str
    metric: str

    def embed(self, rgb: np.ndarray, box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def distances(self, q: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        """Distances [N] from one embedding q [D] to each row of gallery [N,D]."""
        if self.metric == "cosine":
            return 1.0 - gallery @ q / (np.linalg.norm(gallery, axis=1) * np.linalg.norm(q) + 1e-12)
        return np.linalg.norm(gallery - q, axis=1)


class DlibModel(IdentityModel):
    name, metric = "dlib", "euclidean"

    def __init__(self):
        self._dlib = DlibEvaluator()

    def embed(self, rgb, box, landmarks):
        return self._dlib.embed(rgb, box)


class SFaceModel(IdentityModel):
    name, metric = "sface", "cosine"

    def __init__(self):
        self._sface = load_sface()

    def embed(self, rgb, box, landmarks):
        crops, _ = align_faces(rgb, landmarks[None], 112)
        return self._sface.embed(crops)[0]


def load_models(names=("dlib", "sface")) -> dict[str, IdentityModel]:
    kinds = {"dlib": DlibModel, "sface": SFaceModel}
    return {n: kinds[n]() for n in names}


@dataclass
class Face:
    """The main (largest) face of an image: where it is and, per model, who it is."""

    box: np.ndarray
    landmarks: np.ndarray
    emb: dict[str, np.ndarray]


_worker: dict = {}


def _init_worker(names):
    import torch

    torch.set_num_threads(1)
    _worker["det"], _worker["models"] = FaceDetector(), load_models(names)


def _embed_main_face(path: Path) -> Face | None:
    rgb = read_image(path)
    d = _worker["det"](rgb)
    if len(d) == 0:
        return None
    i = d.largest()
    return Face(d.boxes[i], d.landmarks[i], {n: m.embed(rgb, d.boxes[i], d.landmarks[i]) for n, m in _worker["models"].items()})


def embed_images(paths: list[Path], models: dict[str, IdentityModel], workers: int | None = None, progress: bool = True,
                 desc: str = "embedding originals") -> dict[Path, Face | None]:
    """Main face of each image, embedded by each model; None where no face is found. Runs on
    `workers` processes (default: all cores; dlib is single-threaded) when there is enough work."""
    names = tuple(models)
    workers = workers or os.cpu_count() or 1
    paths = list(dict.fromkeys(paths))
    bar = tqdm(total=len(paths), desc=desc, unit="img", disable=not progress)
    out: dict[Path, Face | None] = {}
    if workers <= 1 or len(paths) < 50:
        _worker.update(det=FaceDetector(), models=models)
        for p in paths:
            out[p] = _embed_main_face(p)
            bar.update(1)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, _init_worker, (names,)) as pool:
            for p, face in zip(paths, pool.imap(_embed_main_face, paths, chunksize=16)):
                out[p] = face
                bar.update(1)
    bar.close()
    return out
