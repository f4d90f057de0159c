"""The per-frame step for the 112 px generator networks (`--generator fiva`): the faces'
aligned crops in one batch through the generator, each fitted to the face it replaces (cut to its
outline, colour and light matched), verified (one retry with another anchor of Eq. 1), defended
and pasted back through the generator's mask. `native.py` is the same step for renderers that draw
at the face's own resolution (anchor faces, the default).
"""
from __future__ import annotations

import numpy as np
import torch

from ..faces import Detections, align_faces, paste_back
from ..faces.align import transform_points
from ..faces.identity import to_tensor, to_uint8
from ..faces.region import outline_mask
from .frame import DLIB_MATCH, track_key


def generate_network(anon, rgb: np.ndarray, dets: Detections, tracks: np.ndarray | None, still: bool):
    """Generate, verify (retry once with another anchor) and paste the faces; returns the image
    and, per face, whether it failed verification."""
    n, size = len(dets), anon.generator.resolution
    crops, mats = align_faces(rgb, dets.landmarks, size)
    x = to_tensor(crops).to(anon.device)
    region = regions(anon, rgb, dets, mats, size, tracks)
    z_a = np.zeros((n, anon.itm.anchors.anchors.shape[1]), np.float32)
    failed = np.zeros(n, bool)
    fresh, known = anon.recheck(tracks, n)
    for i, st in known.items():
        z_a[i], failed[i] = st["z_a"], st["failed"]
    keys: list[int | None] = [None] * n
    z_id = np.zeros_like(z_a)
    if fresh:
        z_id[fresh] = anon._embed(x[fresh])
        for i in fresh:
            z_a[i], keys[i] = anon._fake_identity(z_id[i])
    # Faces whose track failed verification stay obfuscated until their re-check: no generation.
    run = torch.from_numpy(np.array([i for i in range(n) if i in fresh or not failed[i]], np.int64))
    x_a, m, x_hat = (torch.zeros(n, c, size, size, device=anon.device) for c in (3, 1, 3))
    if len(run):
        x_a[run], m[run], x_hat[run] = fit(anon, x[run], *run_generator(anon, x[run], z_a[run.numpy()]), region[run])
    if fresh:
        check = np.array(fresh)
        same = still_same(anon, rgb, dets[check], mats[check], x_a[check], m[check], x_hat[check], z_id[check], still)
        retry = check[same]
        if len(retry) and anon.cfg.identity != "own":
            anon.stats["retried"] += len(retry)
            for i in retry:
                z_a[i] = other_anchor(anon, z_id[i], z_a[i])
            x_a2, m2, x_hat2 = fit(anon, x[retry], *run_generator(anon, x[retry], z_a[retry]), region[retry])
            again = still_same(anon, rgb, dets[retry], mats[retry], x_a2, m2, x_hat2, z_id[retry], still)
            idx = torch.from_numpy(retry)
            x_a[idx], m[idx] = x_a2, m2
            for i, s in zip(retry, again):
                if not s and keys[i] is not None:
                    anon.itm.reassign(keys[i], z_a[i])  # this person's fake identity from now on
            failed[retry] = again
        else:
            failed[retry] = True
        for i in fresh:
            if tracks is not None:
                anon._tracks[int(tracks[i])] = {"z_a": z_a[i], "failed": bool(failed[i]), "age": 1, "z_id": z_id[i]}
    if anon.cfg.defense != "none" and (~failed).any():
        x_a = defend(anon, x, x_a, m, z_id, fresh, tracks)
    return paste(anon, rgb, x_a, m, mats, ~failed), failed


def defend(anon, x, x_a, m, z_id, fresh, tracks) -> torch.Tensor:
    """Disrupt the reconstruction attack (defense.py) on the generated faces before pasting."""
    from .defense import fgsm_defense, noise_defense

    if anon.cfg.defense == "noise":
        return noise_defense(x_a, m, anon.cfg.defense_eps, anon.cfg.defense_p, anon._rng)
    for i in range(len(x_a)):  # fgsm needs each face's real identity (kept in memory only)
        if i not in fresh and tracks is not None:
            z_id[i] = anon._tracks[int(tracks[i])].get("z_id", z_id[i])
    with torch.enable_grad():
        return fgsm_defense(anon._attack, anon._encoder, x_a, torch.from_numpy(z_id).to(anon.device), anon.cfg.defense_eps)


def run_generator(anon, x: torch.Tensor, z: np.ndarray):
    """All faces of a frame in one batch; half precision on CUDA (the outputs are 8-bit anyway)."""
    z = None if anon.generator.identity_dim is None else torch.from_numpy(z).to(anon.device)
    if anon.device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.float16):
            return tuple(t.float() for t in anon.generator(x, z))
    return anon.generator(x, z)


def regions(anon, rgb, dets, mats, size, tracks=None) -> torch.Tensor:
    """[N,1,S,S] in [0,1]: where on each aligned crop the face itself is (its outline: jaw line
    and forehead, faces/region.py), so a generated face covers the face, not ears, hair or
    background, whichever way the head is turned. In the aligned crop a tracked face's outline
    changes slowly: it is redrawn every `reembed_every` frames."""
    if anon._outline is None:
        from ..faces.region import FaceOutline

        anon._outline = FaceOutline()
    masks = np.zeros((len(dets), size, size), np.float32)
    todo, known = anon.recheck(tracks, len(dets), "region")
    for i, st in known.items():
        masks[i] = st["mask"]
    if todo:
        outlines = anon._outline(rgb, dets.landmarks[todo])
        for i, o in zip(todo, outlines):
            masks[i] = outline_mask(transform_points(mats[i], o), size)
            if tracks is not None:
                anon._tracks[track_key(tracks[i], "region")] = {"mask": masks[i], "age": 1}
    return torch.from_numpy(masks[:, None]).to(anon.device)


def fit(anon, x, x_a, m, x_hat, region):
    """The generated face fitted to the one it replaces: its mask cut to the face's outline, and
    its colour and light matched there (mean and spread per channel), so dark and dimly lit
    faces stay dark. Returns (x_a, m, x_hat) as the generator does."""
    m = m * region
    w = region / region.sum((2, 3), keepdim=True).clamp_min(1e-6)
    mu_x, mu_a = (x * w).sum((2, 3), keepdim=True), (x_a * w).sum((2, 3), keepdim=True)
    sd_x = (((x - mu_x) ** 2 * w).sum((2, 3), keepdim=True)).sqrt()
    sd_a = (((x_a - mu_a) ** 2 * w).sum((2, 3), keepdim=True)).sqrt()
    gain = (sd_x / sd_a.clamp_min(1e-3)).clamp(0.7, 1.4)
    x_a = ((x_a - mu_a) * gain + mu_x).clamp(-1, 1)
    return x_a, m, m * x_a + (1 - m) * x


def paste(anon, rgb, x_a, m, mats, keep) -> np.ndarray:
    faces = to_uint8(x_a)
    masks = (m[:, 0].cpu() * anon._paste_feather).numpy()
    out = rgb.copy()  # one copy for all faces: a 200-megapixel photo is 600 MB
    for face, mat, mask, k in zip(faces, mats, masks, keep):
        if k:
            paste_back(out, face, mat, mask, inplace=True)
    return out


def still_same(anon, rgb, dets, mats, x_a, m, x_hat, z_id, still) -> np.ndarray:
    """Does each generated face still match its original? SFace on the blended crop as it will
    be written (uint8), and on still images also the independent dlib evaluator on the pasted face."""
    if anon.cfg.fallback == "none":
        return np.zeros(len(dets), bool)
    cos = (anon._embed(to_tensor(to_uint8(x_hat)).to(anon.device)) * z_id).sum(1)
    same = 1.0 - cos < anon.cfg.verify_threshold(still)
    out = paste(anon, rgb, x_a, m, mats, [True] * len(dets))
    same |= ~anon._in_place(rgb, out, dets, still)
    if anon._dlib is not None and (still or anon.cfg.verify is True):
        for i in np.flatnonzero(~same):
            d = np.linalg.norm(anon.original_descriptor(rgb, dets.boxes[i]) - anon._dlib.embed(out, dets.boxes[i]))
            same[i] = d < DLIB_MATCH
    return same


def other_anchor(anon, z_id: np.ndarray, used: np.ndarray) -> np.ndarray:
    for _ in range(8):
        z = anon.itm.anchors.sample(z_id)
        if not np.allclose(z, used):
            return z
    return z
