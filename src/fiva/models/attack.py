"""The reconstruction attack R (paper Section 3.4, Eq. 5-6).

A U-Net built from the generator's own blocks: stride-2 depthwise encoder blocks, every encoder
map carried by a skip connection, 1x1 "fully connected" layers at the bottleneck, pixel-shuffle
decoder; no identity conditioning. It sees only an anonymized face X_c and learns to give back
the original X_t. Residual output: it starts as the identity map and learns the undoing.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .generator import GeneratorConfig, load_generator, save_generator
from .layers import DownBlock, UpBlock


class ReconstructionAttack(nn.Module):
    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GeneratorConfig()
        ch = cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(3, ch[0], 3, 1, 1), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(DownBlock(a, b) for a, b in zip(ch[:-1], ch[1:]))
        layers: list[nn.Module] = []
        for _ in range(cfg.bottleneck_layers):
            layers += [nn.Conv2d(ch[-1], ch[-1], 1), nn.LeakyReLU(0.2)]
        self.bottleneck = nn.Sequential(*layers)
        self.up = nn.ModuleList(UpBlock(ch[i + 1], ch[i], ch[i]) for i in reversed(range(len(ch) - 1)))
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d) and not getattr(mod, "_icnr", False):
                nn.init.kaiming_normal_(mod.weight, a=0.2)
                nn.init.zeros_(mod.bias)
        self.head = nn.Conv2d(ch[0], 3, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def forward(self, x_c: torch.Tensor) -> torch.Tensor:
        """X_c [B,3,S,S] in [-1,1] -> the reconstruction R(X_c), same shape."""
        h = self.stem(x_c)
        skips = [h]
        for block in self.down:
            h = block(h)
            skips.append(h)
        h = self.bottleneck(h)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            h = block(h, skip)
        return (x_c + self.head(h)).clamp(-1, 1)


def save_attack(model: ReconstructionAttack, path: str | Path, extra: dict | None = None) -> None:
    save_generator(model, path, extra={"kind": "fiva reconstruction attack", **(extra or {})})


def load_attack(path: str | Path, device: str | torch.device = "cpu") -> ReconstructionAttack:
    return load_generator(path, device, cls=ReconstructionAttack)
