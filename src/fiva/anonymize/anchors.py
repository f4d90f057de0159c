"""The anchor search space S_a and fake-identity sampling (paper Section 3.3, Eq. 1).

S_a holds mean identity embeddings of training identities, spherically interpolated with a shifted
copy of themselves, repeated until the space is large enough: every anchor is a mix of people, never
one real person's embedding. Sampling picks an anchor whose |cos(z_id, anchor)| is closest to the
margin m (default 0): far from both z_id and -z_id, so searching for -z_id finds nobody.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file


def slerp(a: np.ndarray, b: np.ndarray, t: float = 0.5) -> np.ndarray:
    """Spherical interpolation between rows of unit vectors a and b."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    dot = np.clip((a * b).sum(1, keepdims=True), -1.0, 1.0)
    omega = np.arccos(dot)
    so = np.sin(omega)
    safe = so[:, 0] > 1e-6
    out = (1 - t) * a + t * b  # nearly parallel rows: linear is exact enough
    out[safe] = (np.sin((1 - t) * omega[safe]) / so[safe]) * a[safe] + (np.sin(t * omega[safe]) / so[safe]) * b[safe]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def build_anchor_space(identity_means: np.ndarray, size: int = 10_000, seed: int = 0) -> np.ndarray:
    """Interpolate identity means with shifted copies of themselves, level after level, to `size` anchors."""
    rng = np.random.default_rng(seed)
    level = identity_means.astype(np.float64)
    out, n = [], len(level)
    if n < 2:
        raise ValueError("the anchor space needs at least two identities")
    while sum(len(o) for o in out) < size:
        shift = int(rng.integers(1, n))
        level = slerp(level, np.roll(level, shift, axis=0))
        out.append(level)
    return np.concatenate(out)[:size].astype(np.float32)


class AnchorSpace:
    """Anchors [K,128] (unit rows) and Eq. 1 sampling."""

    def __init__(self, anchors: np.ndarray, margin: float = 0.0, candidates: int = 16, seed: int = 0):
        self.anchors = anchors / np.linalg.norm(anchors, axis=1, keepdims=True)
        self.margin = margin
        self.candidates = candidates
        self.rng = np.random.default_rng(seed)

    @classmethod
    def load(cls, path: str | Path, **kw) -> "AnchorSpace":
        return cls(load_file(str(path))["anchors"].astype(np.float32), **kw)

    def save(self, path: str | Path) -> None:
        save_file({"anchors": self.anchors.astype(np.float16)}, str(path))

    def sample(self, z_id: np.ndarray) -> np.ndarray:
        """Eq. 1: an anchor with |cos(z_id, anchor)| closest to the margin.

        Ties are broken at random among the `candidates` best (seeded), so two people with similar
        embeddings need not share a fake identity.
        """
        z = z_id / np.linalg.norm(z_id)
        score = np.abs(np.abs(self.anchors @ z) - self.margin)
        best = np.argpartition(score, self.candidates)[: self.candidates] if len(score) > self.candidates else np.arange(len(score))
        return self.anchors[int(self.rng.choice(best))].copy()


def build_from_data(data: str | Path, size: int = 10_000, seed: int = 0, device: str = "cpu") -> AnchorSpace:
    """`fiva anchors build`: mean SFace embedding per identity (first folder level under `data`),
    then `build_anchor_space`. Identity means stay in memory; only their mixes are written."""
    import tempfile

    from ..faces.identity import load_sface
    from ..train.data import crop_pack_for, load_pack

    pack = crop_pack_for(data, 112, Path(tempfile.gettempdir()) / "fiva-anchors")
    crops, sources = load_pack(pack)
    names = [Path(s).parts[0] if len(Path(s).parts) > 1 else s for s in sources]
    emb = load_sface(device).embed(crops)
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(n, []).append(i)
    means = np.stack([emb[idx].mean(0) for idx in groups.values()])
    return AnchorSpace(build_anchor_space(means, size=size, seed=seed), seed=seed)
