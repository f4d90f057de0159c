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
# Verification's extra distance beyond it on photos (AnonymizeConfig.verify_margin): a drawing is
# compared with the one photo it replaces, and another photo of the person can be nearer it.
VERIFY_MARGIN = 0.1


class IdentityTrackingModule:
    def __init__(self, anchors: AnchorSpace, threshold: float = DEFAULT_THRESHOLD):
        self.anchors = anchors
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        # T_id: stored (unit) identity vectors, rows [:key_pointer] of a matrix grown by doubling, so
        # a lookup is one matrix-vector product (a list stacked on every call cost 2.5 ms at 10,000).
        self._t_id = np.zeros((0, self.anchors.anchors.shape[1]), np.float32)
        self._f_id: dict[int, np.ndarray] = {}  # F_id: key -> fake identity z_a
        self.key_pointer = 0

    def __len__(self) -> int:
        return self.key_pointer

    def __call__(self, z_id: np.ndarray) -> tuple[np.ndarray, int]:
        """Algorithm 1: returns (z_a, key) for an identity vector z_id."""
        z = z_id / np.linalg.norm(z_id)
        key = self.key_pointer
        if key:
            d = 1.0 - self._t_id[:key] @ z
            idx = int(np.argmin(d))
            if d[idx] < self.threshold:
                return self._f_id[idx], idx
        if key == len(self._t_id):
            grown = np.zeros((max(64, 2 * key), self._t_id.shape[1]), np.float32)
            grown[:key] = self._t_id[:key]
            self._t_id = grown
        self._t_id[key] = z
        z_a = self.anchors.sample(z)
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
        t_id, f_id = self.pairs()
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
        self.set_pairs(data["t_id"], data["f_id"])

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """The tracked pairs as float32 arrays: T_id [N,D] (real identities) and F_id [N,D]."""
        n, dim = self.key_pointer, self.anchors.anchors.shape[1]
        t_id = self._t_id[:n].copy()
        f_id = np.stack([self._f_id[k] for k in range(n)]).astype(np.float32) if n else np.zeros((0, dim), np.float32)
        return t_id, f_id

    def set_pairs(self, t_id: np.ndarray, f_id: np.ndarray) -> None:
        """Replace the tracked pairs by T_id [N,D] and F_id [N,D] (as `pairs` returns them)."""
        self.reset()
        self._t_id = np.array(t_id, np.float32).reshape(-1, self.anchors.anchors.shape[1])
        self._f_id = {i: np.array(v, np.float32) for i, v in enumerate(f_id)}
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
