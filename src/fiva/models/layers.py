"""Building blocks shared by the generator and the discriminator."""
from __future__ import annotations

import torch
import torch.nn as nn


def icnr_(weight: torch.Tensor, scale: int = 2, init=lambda w: nn.init.kaiming_normal_(w, a=0.2)) -> torch.Tensor:
    """ICNR init for a conv feeding PixelShuffle(scale): each group of scale**2 output channels
    starts identical, so the shuffle starts as nearest-neighbour upsampling (no checkerboard)."""
    out_c, in_c, kh, kw = weight.shape
    sub = torch.zeros(out_c // scale**2, in_c, kh, kw)
    init(sub)
    with torch.no_grad():
        weight.copy_(sub.repeat_interleave(scale**2, dim=0))
    return weight


class DownBlock(nn.Module):
    """Encoder block: stride-2 depthwise 3x3 conv, pointwise 1x1, LeakyReLU, then a 3x3 refinement."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(cin, cin, 3, 2, 1, groups=cin),
            nn.Conv2d(cin, cout, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(cout, cout, 3, 1, 1, groups=cout),
            nn.Conv2d(cout, cout, 1),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x):
        return self.net(x)


class UpBlock(nn.Module):
    """Decoder block: 1x1 conv to 4*cout channels, PixelShuffle(2), concat the skip, fuse."""

    def __init__(self, cin: int, cskip: int, cout: int):
        super().__init__()
        self.expand = nn.Conv2d(cin, cout * 4, 1)
        icnr_(self.expand.weight)
        self.expand._icnr = True
        nn.init.zeros_(self.expand.bias)
        self.shuffle = nn.PixelShuffle(2)
        self.fuse = nn.Sequential(
            nn.Conv2d(cout + cskip, cout, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(cout, cout, 3, 1, 1, groups=cout),
            nn.Conv2d(cout, cout, 1),
            nn.LeakyReLU(0.2),
        )

    def forward(self, x, skip):
        x = nn.functional.leaky_relu(self.shuffle(self.expand(x)), 0.2)
        return self.fuse(torch.cat([x, skip], 1))
