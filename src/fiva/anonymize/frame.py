"""The anonymization pipeline for one frame, and the `Anonymizer` API.

Per frame: detect (YuNet) -> align (ArcFace template) -> embed (SFace) -> ITM (Algorithm 1, Eq. 1
anchors) -> generate all faces in one batch (FIVA generator) -> paste back through the generator's
mask, so pixels away from faces stay bit-exact.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..faces import Detections, FaceDetector, align_faces, paste_back
from ..faces.align import feather_mask
from ..faces.identity import load_sface, to_tensor, to_uint8
from ..weights import DEFAULT_ANCHORS, DEFAULT_GENERATOR
from .anchors import AnchorSpace
from .baselines import METHODS as BASELINES
from .baselines import obfuscate
from .itm import DEFAULT_THRESHOLD, IdentityTrackingModule

METHODS = ("fiva",) + BASELINES
IDENTITY_MODES = ("itm", "sample", "own")


@dataclass
class AnonymizeConfig:
    """Settings of `fiva anonymize` (and the Python API)."""

    method: str = "fiva"
    model: str | None = None  # generator .safetensors; None = the shipped default
    anchors: str | None = None  # anchor space .safetensors; None = the shipped one
    threshold: float = DEFAULT_THRESHOLD  # ITM cosine distance for "same person"
    margin: float = 0.0  # Eq. 1 margin m
    score_threshold: float = 0.6  # face detection score
    seed: int = 0
    device: str = "cpu"
    progress: bool = True
    # Whose identity conditions the generator: "itm" (Algorithm 1: tracked fake identities from the
    # anchor space), "sample" (a new anchor for every face, no tracking) or "own" (the face's own
    # identity: the counterfactually trained generator still moves away from it). The last two
    # exist for evaluation (the paper's Table 1 rows).
    identity: str = "itm"
    # Safety net: a generated face whose identity (SFace) is still within the ITM's "same person"
    # distance of the original is obfuscated with this baseline instead ("none" keeps it).
    fallback: str = "blur"


class Anonymizer:
    """Replace the identity of every detected face.

    The Identity Tracking Module lives as long as the Anonymizer (or until `reset()`): the same
    person keeps one fake identity across the frames and images it processes.
    """

    def __init__(self, config: AnonymizeConfig | None = None, **overrides):
        cfg = config or AnonymizeConfig()
        for k, v in overrides.items():
            if not hasattr(cfg, k):
                raise TypeError(f"unknown setting '{k}'")
            setattr(cfg, k, v)
        if cfg.method not in METHODS:
            raise ValueError(f"unknown method '{cfg.method}' (choose from {', '.join(METHODS)})")
        if cfg.fallback not in BASELINES + ("none",):
            raise ValueError(f"unknown fallback '{cfg.fallback}' (choose from {', '.join(BASELINES + ('none',))})")
        if cfg.identity not in IDENTITY_MODES:
            raise ValueError(f"unknown identity mode '{cfg.identity}' (choose from {', '.join(IDENTITY_MODES)})")
        self.cfg = cfg
        self.stats = {"faces": 0, "fallbacks": 0}
        self.device = torch.device(cfg.device)
        self.detector = FaceDetector(score_threshold=cfg.score_threshold)
        self.generator = None
        if cfg.method == "fiva":
            from ..models import load_generator

            model = Path(cfg.model) if cfg.model else DEFAULT_GENERATOR
            if not model.is_file():
                raise FileNotFoundError(f"{model}: generator weights not found")
            self.generator = load_generator(model, self.device)
            self.sface = load_sface(self.device)
            anchors = AnchorSpace.load(cfg.anchors or DEFAULT_ANCHORS, margin=cfg.margin, seed=cfg.seed)
            self.itm = IdentityTrackingModule(anchors, threshold=cfg.threshold)
            size = self.generator.cfg.resolution
            self._paste_feather = torch.from_numpy(feather_mask(size, 0.06))

    def reset(self) -> None:
        """Forget every tracked identity (a new video or an unrelated image)."""
        if self.generator is not None:
            self.itm.reset()

    def detect(self, rgb: np.ndarray) -> Detections:
        return self.detector(rgb)

    @torch.no_grad()
    def anonymize_image(self, rgb: np.ndarray, detections: Detections | None = None) -> np.ndarray:
        """Anonymize every face of an RGB uint8 image [H,W,3]; returns a new image of the same size."""
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
            raise ValueError("anonymize_image expects an RGB uint8 array [H,W,3]")
        dets = self.detect(rgb) if detections is None else detections
        if len(dets) == 0:
            return rgb.copy()
        if self.generator is None:
            return obfuscate(rgb, dets, self.cfg.method)
        return self._generate(rgb, dets)

    def _embed(self, x: torch.Tensor) -> np.ndarray:
        """Unit SFace embeddings [N,128] of aligned crops [N,3,S,S] in [-1,1]."""
        return self.sface.identity(x).cpu().numpy()

    def _fake_identities(self, z_id: np.ndarray) -> np.ndarray:
        if self.cfg.identity == "own":
            return z_id
        if self.cfg.identity == "sample":
            return np.stack([self.itm.anchors.sample(z) for z in z_id])
        return np.stack([self.itm(z)[0] for z in z_id])  # Algorithm 1 per face

    def _generate(self, rgb: np.ndarray, dets: Detections) -> np.ndarray:
        size = self.generator.cfg.resolution
        crops, mats = align_faces(rgb, dets.landmarks, size)
        x = to_tensor(crops).to(self.device)
        z_id = self._embed(x)
        z_a = self._fake_identities(z_id)
        x_a, m, x_hat = self.generator(x, torch.from_numpy(z_a).to(self.device))
        faces = to_uint8(x_a)
        masks = (m[:, 0].cpu() * self._paste_feather).numpy()
        # Verify: how far the blended face (as it will be written, in uint8) moved from the original.
        cos = (self._embed(to_tensor(to_uint8(x_hat)).to(self.device)) * z_id).sum(1)
        still_same = 1.0 - cos < self.cfg.threshold
        out = rgb
        for face, mat, mask in zip(faces, mats, masks):
            out = paste_back(out, face, mat, mask)
        self.stats["faces"] += len(faces)
        if self.cfg.fallback != "none" and still_same.any():
            self.stats["fallbacks"] += int(still_same.sum())
            out = obfuscate(out, dets[np.flatnonzero(still_same)], self.cfg.fallback)
        return out

    def anonymize_video(self, src: str | Path, dst: str | Path):
        """Anonymize a video file; keeps resolution, fps, frame count and audio. Returns VideoInfo."""
        from .video import process_video

        self.reset()
        return process_video(src, dst, self.anonymize_image, progress=self.cfg.progress)
