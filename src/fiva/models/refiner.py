"""The refiner: a small residual U-Net that takes the anchor-face renderer's drawing (a 112 px aligned
crop) and returns it looking more like a photograph (the issue-16 design's "warp, match, refine").

It is trained like SimGAN (Shrivastava et al. 2017: refining rendered images with an adversarial
loss on real ones): a local (patch) discriminator tells refined drawings from real faces, and the
refiner may change only what that discriminator sees (streaks, seams, waxy skin): its output's
low frequencies are held to the drawing's, and its SFace identity may not come back towards the
original's (`train/refiner.py`). The output is the drawing plus a correction in [-CORRECTION, +CORRECTION]
(on the [-1,1] scale), so an untrained refiner changes nothing.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

CORRECTION = 0.5  # largest change of a pixel, [-1,1] scale (a quarter of the range)


@dataclass
class RefinerConfig:
    resolution: int = 112
    widths: tuple = (32, 64, 128)
    blocks: int = 4  # residual blocks at the lowest resolution
    # the correction is smooth on a grid this many pixels coarser (2: it can shade, fill and
    # remove streaks, not add pixel-level texture, which a short adversarial run draws as stripes)
    coarse: int = 1


class _Res(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1), nn.GroupNorm(8, c), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1), nn.GroupNorm(8, c))

    def forward(self, x):
        return F.silu(x + self.body(x))


def _conv(a: int, b: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(a, b, 3, stride, 1), nn.GroupNorm(8, b), nn.SiLU())


class Refiner(nn.Module):
    def __init__(self, cfg: RefinerConfig | None = None):
        super().__init__()
        self.cfg = cfg or RefinerConfig()
        w = self.cfg.widths
        self.inp = _conv(3, w[0])
        self.down = nn.ModuleList([_conv(w[i], w[i + 1], 2) for i in range(len(w) - 1)])
        self.mid = nn.Sequential(*[_Res(w[-1]) for _ in range(self.cfg.blocks)])
        self.up = nn.ModuleList([_conv(w[i + 1] + w[i], w[i]) for i in reversed(range(len(w) - 1))])
        self.out = nn.Conv2d(w[0], 3, 3, 1, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity map
        nn.init.zeros_(self.out.bias)

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def correction(self, x: torch.Tensor) -> torch.Tensor:
        """The change [B,3,S,S] the refiner makes to drawings x [B,3,S,S] in [-1,1]."""
        h = self.inp(x)
        skips = []
        for d in self.down:
            skips.append(h)
            h = d(h)
        h = self.mid(h)
        for u in self.up:
            s = skips.pop()
            h = u(torch.cat([F.interpolate(h, size=s.shape[-2:], mode="bilinear", align_corners=False), s], 1))
        c = CORRECTION * torch.tanh(self.out(h))
        if self.cfg.coarse > 1:
            c = F.interpolate(F.avg_pool2d(c, self.cfg.coarse), size=c.shape[-2:], mode="bilinear", align_corners=False)
        return c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.correction(x)).clamp(-1, 1)


def save_refiner(model: Refiner, path: str | Path, extra: dict | None = None) -> None:
    """fp16 weights, the config and `extra` (data, step, losses) as metadata."""
    from safetensors.torch import save_file

    sd = {k: v.half().detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"kind": "fiva refiner", "config": json.dumps(asdict(model.cfg))}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in (extra or {}).items()})
    save_file(sd, str(path), metadata=meta)


def load_refiner(path: str | Path, device: str | torch.device = "cpu") -> Refiner:
    from safetensors.torch import load_file

    from ..weights import metadata

    meta = metadata(path)
    if meta.get("kind") != "fiva refiner":
        raise ValueError(f"{path}: not a fiva refiner (kind: {meta.get('kind')!r})")
    cfg = json.loads(meta["config"])
    model = Refiner(RefinerConfig(resolution=cfg["resolution"], widths=tuple(cfg["widths"]), blocks=cfg["blocks"], coarse=cfg.get("coarse", 1)))
    model.load_state_dict({k: v.float() for k, v in load_file(str(path)).items()})
    return model.to(device).eval().requires_grad_(False)
