"""The reconstruction attack R (paper Section 3.4, Eq. 5-6).

A U-Net built from the generator's own blocks: stride-2 depthwise encoder blocks, every encoder
map carried by a skip connection, 1x1 "fully connected" layers at the bottleneck, pixel-shuffle
decoder; no identity conditioning. It sees only an anonymized face X_c and learns to give back
the original X_t. Residual output: it starts as the identity map and learns the undoing.
"""
from __future__ import annotations

from pathlib import Path

import torch
from .generator import EncoderDecoder, GeneratorConfig, load_generator, save_generator


class ReconstructionAttack(EncoderDecoder):
    def __init__(self, cfg: GeneratorConfig | None = None):
        super().__init__(cfg or GeneratorConfig(), 0, 3)

    def forward(self, x_c: torch.Tensor) -> torch.Tensor:
        """X_c [B,3,S,S] in [-1,1] -> the reconstruction R(X_c), same shape."""
        h, skips = self.encode(x_c)
        return (x_c + self.decode(self.bottleneck(h), skips)).clamp(-1, 1)


def save_attack(model: ReconstructionAttack, path: str | Path, extra: dict | None = None) -> None:
    save_generator(model, path, extra={"kind": "fiva reconstruction attack", **(extra or {})})


def load_attack(path: str | Path, device: str | torch.device = "cpu") -> ReconstructionAttack:
    return load_generator(path, device, cls=ReconstructionAttack)
