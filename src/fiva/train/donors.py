"""Donor guidance: another person's face, in nearly the same pose, as the target of the inner face.

Why (measured on 64 held-out LFW faces, dlib evaluator, scripts/identity_bands.py): a face keeps
its identity in every frequency band. Its own 28x28 low-pass alone is still matched by dlib (mean
distance 0.38, 0% beyond 0.6), and so is its fine detail over the mean face's structure (0.53, 16%).
The reconstruction losses (low-pass, full and Laplacian L1 against the input) pin both bands, and
the generator trained under them stalled at dlib ~0.42. A colour-matched face of someone else in
the inner-face ellipse goes to 0.78 (100% beyond 0.6) with YuNet still finding every face.

So a share of each batch gets a donor: for every training face, one of its `pool` nearest faces in
coarse structure (grey 14x14 of the inner face: similar pose, expression and layout) among the
OTHER training identities. The donor, colour-matched to the face inside the ellipse, replaces the
input as the reconstruction target there, and its identity conditions the generator. Donor faces
only ever serve as training targets; nothing of them is shipped.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..models.generator import colour_match


def person_ids(sources: list[str]) -> torch.Tensor:
    """One integer per crop: the folder its image came from (LFW: one folder per person)."""
    names: dict[str, int] = {}
    return torch.tensor([names.setdefault(str(Path(s).parent), len(names)) for s in sources])


def structure_descriptor(x: torch.Tensor, ellipse: torch.Tensor) -> torch.Tensor:
    """Unit vectors of the grey 14x14 inner face, mean removed (pose, expression, layout)."""
    g = (x * ellipse).mean(1, keepdim=True)
    g = F.adaptive_avg_pool2d(g, 14).flatten(1)
    return F.normalize(g - g.mean(1, keepdim=True), dim=1)


@torch.no_grad()
def donor_pool(crops: torch.Tensor, persons: torch.Tensor, ellipse: torch.Tensor, pool: int = 20,
               chunk: int = 1024) -> torch.Tensor:
    """[N, pool] indices of each crop's nearest crops (by structure) of other people.

    `crops`: uint8 [N,S,S,3]; `persons`: [N] person ids; `ellipse`: [1,1,S,S]."""
    if len(torch.unique(persons)) < 2:
        raise ValueError("donor guidance needs faces of at least two people (one sub-folder per person)")
    ell = ellipse.to(crops.device)
    desc = torch.cat([structure_descriptor(crops[i:i + chunk].permute(0, 3, 1, 2).float().div(127.5).sub(1), ell)
                      for i in range(0, len(crops), chunk)])
    persons = persons.to(crops.device)
    out = []
    for i in range(0, len(desc), chunk):
        sim = desc[i:i + chunk] @ desc.T
        sim[persons[i:i + chunk, None] == persons[None]] = -2.0  # never the same person
        out.append(sim.topk(min(pool, len(desc) - 1), dim=1).indices)
    return torch.cat(out)


@torch.no_grad()
def mean_face(crops: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """[1,3,S,S] in [-1, 1]: the mean of all crops (uint8 [N,S,S,3]), made left-right symmetric.

    No one's face: 200 or more people averaged. In the inner-face ellipse of the wider face models
    it replaces a held-out face at dlib 0.73 (99.5% of 200 beyond 0.6) with landmark error 0.075."""
    total = torch.zeros(crops.shape[1:], dtype=torch.float64, device=crops.device)
    for i in range(0, len(crops), chunk):
        total += crops[i:i + chunk].double().sum(0)
    m = (total / len(crops)).float().permute(2, 0, 1)[None].div(127.5).sub(1)
    return (m + m.flip(-1)) / 2


def prior_face(crops: torch.Tensor, count: int = 0, seed: int = 0) -> torch.Tensor:
    """The mean face of `count` crops drawn with `seed` (0 = of all): fiva-112-mf's prior."""
    if not count:
        return mean_face(crops)
    if not 0 < count <= len(crops):
        raise ValueError(f"a prior of {count} faces needs 1 to {len(crops)} (the training faces)")
    pick = torch.randperm(len(crops), generator=torch.Generator().manual_seed(seed))[:count]
    return mean_face(crops[pick.to(crops.device)])


def donor_target(x_t: torch.Tensor, donor: torch.Tensor, ellipse: torch.Tensor) -> torch.Tensor:
    """The reconstruction target: the colour-matched donor inside the ellipse, X_t outside."""
    e = ellipse.to(x_t.dtype)
    return e * colour_match(donor, x_t, e) + (1 - e) * x_t
