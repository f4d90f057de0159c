"""Identity Tracking Module (paper Algorithm 1).

Holds the identities seen so far (T_id) and their fake identities (F_id). A face whose cosine
distance to the nearest stored identity is below `threshold` gets that identity's fake; otherwise a
new fake is sampled (Eq. 1) and stored. Kept in memory only: real embeddings are biometric data.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .anchors import AnchorSpace

# Cosine distance on SFace embeddings at which two faces count as the same person: chosen on all
# 6,000 LFW pairs for a false-match rate of at most 1 in 1,000 (scripts/calibrate_itm.py;
# MODEL_CARD.md has the figures).
DEFAULT_THRESHOLD = 0.66  # t = 0.6616 measured; 98.2% of same-person pairs match


class IdentityTrackingModule:
    def __init__(self, anchors: AnchorSpace, threshold: float = DEFAULT_THRESHOLD):
        self.anchors = anchors
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._t_id: list[np.ndarray] = []  # T_id: stored (unit) identity vectors
        self._f_id: dict[int, np.ndarray] = {}  # F_id: key -> fake identity z_a
        self.key_pointer = 0

    def __len__(self) -> int:
        return self.key_pointer

    def __call__(self, z_id: np.ndarray) -> tuple[np.ndarray, int]:
        """Algorithm 1: returns (z_a, key) for an identity vector z_id."""
        z = z_id / np.linalg.norm(z_id)
        if self._t_id:
            d = 1.0 - np.stack(self._t_id) @ z
            idx = int(np.argmin(d))
            if d[idx] < self.threshold:
                return self._f_id[idx], idx
        self._t_id.append(z)
        z_a = self.anchors.sample(z)
        key = self.key_pointer
        self._f_id[key] = z_a
        self.key_pointer += 1
        return z_a, key

    def reassign(self, key: int, z_a: np.ndarray) -> None:
        """Give the person stored under `key` another fake identity (e.g. the first one failed
        verification): later frames of that person get the new one."""
        self._f_id[key] = z_a

    def save(self, path: str | Path) -> None:
        """Write the tracked pairs (real identities: biometric data) to an owner-only file."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        dim = self.anchors.anchors.shape[1]
        t_id = np.stack(self._t_id).astype(np.float32) if self._t_id else np.zeros((0, dim), np.float32)
        f_id = np.stack([self._f_id[k] for k in range(self.key_pointer)]).astype(np.float32) if self._t_id else t_id
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.chmod(tmp, 0o600)
        save_file({"t_id": t_id, "f_id": f_id}, str(tmp), metadata={"kind": "fiva identity store", "threshold": str(self.threshold)})
        os.replace(tmp, path)

    def load(self, path: str | Path) -> None:
        """Continue from a store written by `save` (the same person gets the same fake identity)."""
        from safetensors.numpy import load_file

        data = load_file(str(path))
        if data["t_id"].shape[1:] != self.anchors.anchors.shape[1:]:
            raise ValueError(f"{path}: identity store holds {data['t_id'].shape[1]}-D identities, the encoder gives "
                             f"{self.anchors.anchors.shape[1]}-D")
        self.reset()
        self._t_id = [v for v in data["t_id"]]
        self._f_id = {i: v for i, v in enumerate(data["f_id"])}
        self.key_pointer = len(self._t_id)


def purge_store(path: str | Path) -> None:
    """Delete an identity store, overwriting its bytes first."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no identity store there")
    with open(path, "r+b") as f:
        f.write(b"\0" * path.stat().st_size)
        f.flush()
        os.fsync(f.fileno())
    path.unlink()
