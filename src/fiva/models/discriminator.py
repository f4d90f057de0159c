"""StarGAN-v2 / FaceDancer-style discriminator: residual blocks with average-pool downsampling,
ending in a patch map of real/fake logits. Input: B,3,S,S in [-1,1]."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ResBlk(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(cin, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else nn.Identity()

    def forward(self, x):
        s = F.avg_pool2d(self.skip(x), 2)
        h = self.conv1(F.leaky_relu(x, 0.2))
        h = F.avg_pool2d(h, 2)
        h = self.conv2(F.leaky_relu(h, 0.2))
        return (s + h) / math.sqrt(2)


class Discriminator(nn.Module):
    def __init__(self, resolution: int = 112, base: int = 32, max_ch: int = 256, patch: int = 7):
        super().__init__()
        n = int(round(math.log2(resolution / patch)))
        layers: list[nn.Module] = [nn.Conv2d(3, base, 3, 1, 1)]
        c = base
        for _ in range(n):
            c2 = min(c * 2, max_ch)
            layers.append(ResBlk(c, c2))
            c = c2
        layers += [nn.LeakyReLU(0.2), nn.Conv2d(c, c, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits [B,1,P,P]."""
        return self.net(x)
