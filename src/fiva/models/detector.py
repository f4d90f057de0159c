"""The fake detector D_fake: a small CNN that tells a real aligned face from an anonymized one.

The reconstruction attack R, trained against the anchor-face renderer, stays the identity map, so
its scores (paper Section 3.6) cannot separate real from anonymized faces (LFW AUC 0.49). This is
the direct alternative: a classifier trained on real crops X_t against what `fiva anonymize` made
of them, X_c (and against blurred faces), at R's resolution: 112 px aligned crops in [-1,1].

Five 3x3 convolution stages (the first at full resolution, where rendering and blending leave
their traces; the others stride 2) with batch norm, then average and max pooling into one logit:
high for fake. About 0.3 M parameters, under 1 MB in fp16.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn


@dataclass
class DetectorConfig:
    resolution: int = 112
    widths: tuple = (16, 32, 64, 96, 128)


class FakeDetector(nn.Module):
    def __init__(self, cfg: DetectorConfig | None = None):
        super().__init__()
        self.cfg = cfg or DetectorConfig()
        layers: list[nn.Module] = []
        c = 3
        for i, w in enumerate(self.cfg.widths):
            layers += [nn.Conv2d(c, w, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(w), nn.LeakyReLU(0.2)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(2 * c, 1)

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B,3,S,S] in [-1,1] -> fake logits [B]."""
        h = self.features(x)
        return self.head(torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1))[:, 0]


def save_detector(model: FakeDetector, path: str | Path, extra: dict | None = None) -> None:
    """fp16 weights, the config and `extra` (what it was trained against, step, threshold) as metadata."""
    from safetensors.torch import save_file

    sd = {k: (v.half() if v.is_floating_point() else v).detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"kind": "fiva fake detector", "config": json.dumps(asdict(model.cfg))}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()})
    save_file(sd, str(path), metadata=meta)


def detector_metadata(path: str | Path) -> dict:
    from ..weights import metadata

    return metadata(path)


def load_detector(path: str | Path, device: str | torch.device = "cpu") -> FakeDetector:
    from safetensors.torch import load_file

    meta = detector_metadata(path)
    if meta.get("kind") != "fiva fake detector":
        raise ValueError(f"{path}: not a fiva fake detector (kind: {meta.get('kind')!r})")
    cfg = json.loads(meta["config"])
    model = FakeDetector(DetectorConfig(resolution=cfg["resolution"], widths=tuple(cfg["widths"])))
    sd = load_file(str(path))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    return model.to(device).eval()
