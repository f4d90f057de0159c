"""Generator and discriminator losses (paper Section 3.4) and the augmentations they rely on.

Tensors: B,3,S,S float in [-1,1] RGB unless stated.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _affine_theta(b: int, device, max_deg: float, zoom: float, shift: float, generator=None) -> torch.Tensor:
    ang = (torch.rand(b, device=device, generator=generator) * 2 - 1) * math.radians(max_deg)
    sc = 1 + (torch.rand(b, device=device, generator=generator) * 2 - 1) * zoom
    t = (torch.rand(b, 2, device=device, generator=generator) * 2 - 1) * shift * 2
    cos, sin = torch.cos(ang) / sc, torch.sin(ang) / sc
    return torch.stack([torch.stack([cos, -sin, t[:, 0]], 1), torch.stack([sin, cos, t[:, 1]], 1)], 1)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def random_affine(x: torch.Tensor, max_deg: float = 10.0, zoom: float = 0.05, shift: float = 0.02, generator=None,
                  groups: int = 1) -> torch.Tensor:
    """The paper's distortion of X_t before the generator: rotation up to `max_deg`, small zoom and
    shift. `x` may hold `groups` stacked batches of the same samples (e.g. X_t and its target),
    which get the same transform."""
    theta = _affine_theta(x.shape[0] // groups, x.device, max_deg, zoom, shift, generator)
    return _warp(x, theta.repeat(groups, 1, 1))


def degrade(x: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """A random, differentiable degradation before the identity encoder: a per-sample small
    rotation/zoom/shift (so no pattern can stay aligned with SFace's strides), down/up-sampling by
    2-4x, a Gaussian blur (sigma 0.5-2.5 px) and noise. Identity losses on such copies cannot be met by fine or grid-aligned
    patterns that fool SFace alone. `x` holds `groups` stacked batches of the same samples, which
    get the same transform (so features of X_t and X_â stay comparable)."""
    s, b = x.shape[-1], x.shape[0] // groups
    theta = _affine_theta(b, x.device, 6.0, 0.08, 0.05).repeat(groups, 1, 1)
    x = _warp(x, theta)
    f = float(torch.empty(1).uniform_(2.0, 4.0))
    small = max(8, int(s / f))
    x = F.interpolate(x, size=(small, small), mode="bilinear", align_corners=False, antialias=True)
    x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
    sigma = float(torch.empty(1).uniform_(0.5, 2.5))  # up to ~2.5 px: mid-frequency bands fade too
    r = int(math.ceil(2.5 * sigma))
    k = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-(k**2) / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, 2 * r + 1).repeat(3, 1, 1, 1)
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k, groups=3)
    x = F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.transpose(2, 3), groups=3)
    return x + torch.randn_like(x) * float(torch.empty(1).uniform_(0.0, 0.04))


def identity_hinge(z_t: torch.Tensor, emb: torch.Tensor, margin: float) -> torch.Tensor:
    """max(0, cos(I(X_t), I(X)) - margin): Eq. 4's counterfactual push, stopped at `margin`, so the
    generator is not rewarded for heading to -z_t (which retrieval by -z would find)."""
    return F.relu(F.cosine_similarity(z_t, emb, dim=1) - margin).mean()


def ifsr(feats_t: list[torch.Tensor], feats_a: list[torch.Tensor], scales: tuple[int, ...]) -> torch.Tensor:
    """IFSR (FaceDancer), as modified in FIVA: cosine distance between whole identity-encoder feature
    maps of X_t and X_â, one map per resolution scale, margins 0."""
    losses = [1 - F.cosine_similarity(feats_t[i].flatten(1), feats_a[i].flatten(1), dim=1).mean() for i in scales]
    return torch.stack(losses).mean()


def low_pass_l1(a: torch.Tensor, b: torch.Tensor, factor: int = 4) -> torch.Tensor:
    """L1 at 1/factor resolution: keeps colour, lighting and layout while leaving identity-bearing
    detail free to change."""
    return F.l1_loss(F.avg_pool2d(a, factor), F.avg_pool2d(b, factor))


def _laplacian(x: torch.Tensor) -> torch.Tensor:
    k = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=x.device, dtype=x.dtype)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k.view(1, 1, 3, 3).repeat(x.shape[1], 1, 1, 1), groups=x.shape[1])


def weighted_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return F.l1_loss(a, b) if weight is None else ((a - b).abs() * weight).mean()


def high_freq_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """L1 between the Laplacians of a and b: the generator may move shapes, but may not add
    periodic fine patterns (the pixel-shuffle grids that fool SFace, seen in trials at ~300 steps)."""
    return weighted_l1(_laplacian(a), _laplacian(b), weight)


def detail_energy_l1(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None, factor: int = 4) -> torch.Tensor:
    """L1 between the local amount of fine detail (|Laplacian| pooled over factor x factor) of a and
    b: as sharp as b, no new patterns, but free to put its edges elsewhere (no ghost of b's)."""
    ea, eb = (F.avg_pool2d(_laplacian(x).abs(), factor) for x in (a, b))
    if weight is not None:
        weight = F.avg_pool2d(weight, factor)
    return weighted_l1(ea, eb, weight)


def g_nonsaturating(d_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-d_fake).mean()


def d_nonsaturating(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def r1_penalty(d_real: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """R1: squared gradient of the discriminator's per-image score on real images. The score is the
    mean of the patch logits: with their sum, the penalty grows with the square of the patch count
    (49 at 112 px) and held the discriminator at chance through whole training runs."""
    (grad,) = torch.autograd.grad(d_real.flatten(1).mean(1).sum(), x_real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
