"""Defenses against the reconstruction attack: noise, FGSM, parameter noise, and the CLI wiring."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fiva import Anonymizer
from fiva.anonymize.defense import fgsm_defense, noise_defense, parameter_noise
from fiva.faces.identity import load_sface
from fiva.models.attack import ReconstructionAttack, save_attack


def test_noise_touches_the_asked_fraction_of_face_pixels_within_eps():
    x = torch.zeros(4, 3, 112, 112)
    m = torch.zeros(4, 1, 112, 112)
    m[:, :, 20:90, 20:90] = 1
    out = noise_defense(x, m, eps=0.03, p=0.1, generator=torch.Generator().manual_seed(0))
    changed = (out != x).any(1, keepdim=True)
    assert not changed[m == 0].any()  # never outside the face
    assert abs(changed[m == 1].float().mean().item() - 0.1) < 0.02
    assert (out - x).abs().max() <= 2 * 0.03 + 1e-6  # [-1,1] spans 255 grey levels twice over


def test_fgsm_pushes_the_attackers_reconstruction_away_from_the_original():
    sface = load_sface()
    R = ReconstructionAttack()  # untrained: the identity map, enough to test the gradient step
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    z = sface.identity(x).detach()
    defended = fgsm_defense(R, sface.identity, x, z, eps=0.03)
    before = torch.cosine_similarity(sface.identity(R(x)), z).mean()
    after = torch.cosine_similarity(sface.identity(R(defended)), z).mean()
    assert after < before - 0.01 and (defended - x).abs().max() <= 0.06 + 1e-6


def test_parameter_noise_perturbs_a_copy():
    R = ReconstructionAttack()
    w = R.stem[0].weight.clone()
    noisy = parameter_noise(R, 0.1)
    assert torch.equal(R.stem[0].weight, w)
    rel = ((noisy.stem[0].weight - w).std() / w.std()).item()
    assert 0.05 < rel < 0.2


def test_anonymizer_defenses(astronaut, tmp_path):
    plain = Anonymizer(fallback="none", verify=False).anonymize_image(astronaut)
    noisy = Anonymizer(fallback="none", verify=False, defense="noise", defense_p=0.2).anonymize_image(astronaut)
    diff = np.abs(plain.astype(int) - noisy).sum(2)
    ys, xs = np.nonzero(diff)
    x1, y1, x2, y2 = Anonymizer(method="blur").detect(astronaut).boxes[0]
    assert len(ys) > 100  # only in the face:
    assert y1 - 20 < ys.min() and ys.max() < y2 + 20 and x1 - 20 < xs.min() and xs.max() < x2 + 20
    with pytest.raises(ValueError, match="--attack"):
        Anonymizer(defense="fgsm")
    save_attack(ReconstructionAttack(), tmp_path / "r.safetensors")
    fgsm = Anonymizer(fallback="none", verify=False, defense="fgsm", attack=str(tmp_path / "r.safetensors"))
    assert not np.array_equal(fgsm.anonymize_image(astronaut), plain)
