"""Defenses against the reconstruction attack (paper Section 3.5, Table 3, Figure 3).

The attack R learns the trace the generator leaves in its output; a little noise on the
anonymized face disrupts it:
- `noise`: uniform noise of amplitude eps on a random fraction p of the generated face's pixels
  (black-box: needs nothing but the output);
- `fgsm`: one fast-gradient-sign step of size eps against a known R, away from the original
  identity (white-box);
- `parameter_noise`: Gaussian noise on the generator's weights.
Amplitudes are in 8-bit grey levels / 255 (eps = 0.03 is about 8 grey levels).
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

DEFENSES = ("none", "noise", "fgsm")


def noise_defense(x_a: torch.Tensor, m: torch.Tensor, eps: float, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform noise U(-eps, eps) on a fraction p of the face's pixels (where the mask > 0.5).
    x_a: [B,3,S,S] in [-1,1]; m: [B,1,S,S]."""
    pick = (torch.rand(m.shape, generator=generator, device=m.device) < p) & (m > 0.5)
    noise = (torch.rand(x_a.shape, generator=generator, device=x_a.device) * 2 - 1) * (2 * eps)  # [-1,1] spans 2
    return torch.where(pick, (x_a + noise).clamp(-1, 1), x_a)


def fgsm_defense(attack, encoder, x_c: torch.Tensor, z_t: torch.Tensor, eps: float) -> torch.Tensor:
    """One FGSM step that lowers cos(I(R(x_c)), z_t): the attacker's reconstruction is pushed away
    from the original identity z_t [B,D] (unit). x_c: [B,3,S,S] in [-1,1]."""
    x = x_c.detach().clone().requires_grad_(True)
    rec = attack(x)
    if rec.shape[-1] != 112:
        rec = F.interpolate(rec, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)
    cos = F.cosine_similarity(encoder(rec), z_t, dim=1).sum()
    (grad,) = torch.autograd.grad(cos, x)
    return (x_c - 2 * eps * grad.sign()).clamp(-1, 1).detach()


def fgsm_in_image(attack, encoder, rgb: np.ndarray, out: np.ndarray, landmarks: np.ndarray, z_t: torch.Tensor,
                  eps: float) -> np.ndarray:
    """`fgsm_defense` on faces drawn at their own resolution (anchor-face): each face of `out` is
    aligned as R sees it (by the original's 5 points `landmarks` [N,5,2]), stepped on there, and
    only the step is warped back, onto the pixels the drawing changed (`out` != `rgb`) inside the
    inner-face ellipse. Returns a new image."""
    from ..faces import align_faces
    from ..faces.align import paste_change
    from ..faces.identity import to_tensor, to_uint8
    from ..models.generator import face_ellipse

    crops, mats = align_faces(out, landmarks, attack.resolution)
    x = to_tensor(crops).to(z_t.device)
    stepped = to_uint8(fgsm_defense(attack, encoder, x, z_t, eps))
    mask = face_ellipse(attack.resolution, attack.cfg)[0, 0].numpy()
    res = out.astype(np.int16)
    drawn = np.any(out != rgb, axis=2)
    for crop, step, mat in zip(crops, stepped, mats):
        res += np.where(drawn[..., None], paste_change(out, crop, step, mat, mask), 0).astype(np.int16)
    return np.clip(res, 0, 255).astype(np.uint8)


def parameter_noise(model: torch.nn.Module, sigma: float, seed: int = 0) -> torch.nn.Module:
    """A copy of `model` with N(0, sigma * std(W)) added to every weight tensor W."""
    noisy = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in noisy.parameters():
            if p.numel() > 1:
                p.add_(torch.randn(p.shape, generator=gen).to(p.device) * sigma * p.float().std())
    return noisy
