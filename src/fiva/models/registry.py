"""Pluggable face generators behind `--generator NAME`.

A face generator takes a batch of aligned face crops and one identity vector per face, and returns
the generated face X_a, its blending mask m and the blend X_â = m·X_a + (1-m)·X_t:

    class MyGenerator(torch.nn.Module):
        resolution = 112          # crop size: the ArcFace 5-point template scaled to it
        identity_dim = 128        # length of z; None if the generator ignores identities
        identity_encoder = None   # None: fiva's SFace; or a callable crops [B,3,112,112] -> [B,D]
        counterfactual = True     # trained to move AWAY from z (FIVA); False: towards z (SimSwap, FaceDancer)

        def forward(self, x, z):  # x: [B,3,S,S] RGB in [-1,1]; z: [B,D] (unit) or None
            ...
            return x_a, m, x_hat  # [B,3,S,S], [B,1,S,S] in [0,1], [B,3,S,S]

The ITM and anchor sampling work in whatever space the encoder gives (anchors must have the same
length as z). Register a factory with `register_generator("name", factory)` or, from another
package, an entry point in the group "fiva.generators"; the factory is called with `model` (a
weights path or None) and `device`. docs/GENERATORS.md walks through wrapping a SimSwap- or
FaceDancer-style model.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from .generator import GeneratorConfig, face_ellipse

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_generator(name: str, factory: Callable[..., nn.Module]) -> None:
    _REGISTRY[name] = factory


def generator_names() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def load_face_generator(name: str, model: str | None = None, device: str | torch.device = "cpu") -> nn.Module:
    _load_entry_points()
    if name not in _REGISTRY:
        raise ValueError(f"unknown generator '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    gen = _REGISTRY[name](model=model, device=device)
    for attr in ("resolution", "identity_dim"):
        if not hasattr(gen, attr):
            raise TypeError(f"generator '{name}' lacks the '{attr}' attribute of the face-generator interface")
    return gen.eval().to(device)


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group="fiva.generators"):
        if ep.name not in _REGISTRY:
            _REGISTRY[ep.name] = ep.load()


class CropObfuscation(nn.Module):
    """The blur / pixelate / black-mask baselines through the generator interface: the aligned
    crop, obfuscated, blended through the generator's own face ellipse. Ignores identities."""

    identity_dim = None
    identity_encoder = None
    counterfactual = False

    def __init__(self, kind: str, resolution: int = 112):
        super().__init__()
        if kind not in ("blur", "pixelate", "mask"):
            raise ValueError(f"unknown obfuscation '{kind}'")
        self.kind, self.resolution = kind, resolution
        self.register_buffer("ellipse", face_ellipse(resolution, GeneratorConfig(resolution=resolution)), persistent=False)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None):
        s = x.shape[-1]
        if self.kind == "blur":
            k = s // 6 * 2 + 1
            x_a = nn.functional.avg_pool2d(nn.functional.pad(x, [k // 2] * 4, mode="reflect"), k, stride=1)
            x_a = nn.functional.avg_pool2d(nn.functional.pad(x_a, [k // 2] * 4, mode="reflect"), k, stride=1)
        elif self.kind == "pixelate":
            small = nn.functional.adaptive_avg_pool2d(x, 10)
            x_a = nn.functional.interpolate(small, size=(s, s), mode="nearest")
        else:
            x_a = torch.full_like(x, -1.0)
        m = self.ellipse.expand(x.shape[0], -1, -1, -1).to(x.dtype)
        return x_a, m, m * x_a + (1 - m) * x


def _fiva(model=None, device="cpu"):
    from ..weights import DEFAULT_GENERATOR
    from .generator import load_generator

    from pathlib import Path

    path = Path(model) if model else DEFAULT_GENERATOR
    if not path.is_file():
        raise FileNotFoundError(f"{path}: generator weights not found")
    return load_generator(path, device)


def _anchor_face(model=None, device="cpu"):
    from ..anonymize.anchor_face import load_anchor_face_generator

    return load_anchor_face_generator(model, device)


register_generator("fiva", _fiva)
register_generator("anchor-face", _anchor_face)
for _kind in ("blur", "pixelate", "mask"):
    register_generator(f"crop-{_kind}", lambda model=None, device="cpu", _k=_kind: CropObfuscation(_k))
