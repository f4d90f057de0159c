"""Training pairs for the attack R, made by the anonymizer as `fiva anonymize` runs it (paper Eq. 5-6).

A black-box attacker sees only what the anonymizer writes. For renderers that are not a 112 px
network conditioned on z (the default anchor-face renderer draws at the face's own resolution,
with verification, retries and the noise defense), the pairs cannot be made inside the training
loop: they are rendered once, here, by the default pipeline on whole images, and stored.

Per image: the largest face; kept only when the pipeline drew it ("generated", never a fallback
obfuscation). Stored: X_t, the original's aligned crop, and X_c, the output's aligned crop taken
with the ORIGINAL's 5 points (what R sees when it is run on that face), both 8-bit, lossless PNG.

A pairs folder holds shards `pairs-NNNN.npz` (no pickles): `offsets_t`, `data_t`, `offsets_c`,
`data_c` (PNG bytes), `sources` (image paths relative to the data folder), `size`, plus
`meta.json` (the anonymizer's settings and the face bank's SHA-256). Rendering resumes: images
already in a shard, or already tried (`tried.txt`), are skipped.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..faces import align_faces
from ..io import read_image
from .data import list_images

log = logging.getLogger(__name__)


@dataclass
class PairsConfig:
    data: str  # folder of face images (LFW training identities: runs/lfw/train)
    out: str = "runs/attack_pairs"
    max_pairs: int = 4000
    size: int = 112  # aligned crop side (R's resolution)
    shard: int = 250  # pairs per shard file
    time_limit: float = 0.0  # seconds; 0: no limit
    seed: int = 0  # image order and the anonymizer's seeds
    generator: str = "anchor-face"  # the anonymizer's generator: fiva anonymize's default
    progress: bool = True


def _png(crop: np.ndarray) -> np.ndarray:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.ravel()


def _decode(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    return np.stack([cv2.cvtColor(cv2.imdecode(data[a:b], cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
                     for a, b in zip(offsets[:-1], offsets[1:])])


def _write_shard(path: Path, x_t: list, x_c: list, sources: list, size: int) -> None:
    off_t = np.cumsum([0] + [len(b) for b in x_t]).astype(np.int64)
    off_c = np.cumsum([0] + [len(b) for b in x_c]).astype(np.int64)
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, offsets_t=off_t, data_t=np.concatenate(x_t), offsets_c=off_c, data_c=np.concatenate(x_c),
             sources=np.array(sources), size=np.int64(size))
    tmp.rename(path)  # a shard is complete or absent


def shards(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("pairs-[0-9][0-9][0-9][0-9].npz"))


def load_pairs(folder: str | Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All pairs of a folder: X_t and X_c as uint8 [N,S,S,3] RGB, and the source names."""
    xt, xc, names = [], [], []
    for p in shards(folder):
        z = np.load(p, allow_pickle=False)
        xt.append(_decode(z["offsets_t"], z["data_t"]))
        xc.append(_decode(z["offsets_c"], z["data_c"]))
        names += [str(s) for s in z["sources"]]
    if not xt:
        raise ValueError(f"{folder}: no pairs-NNNN.npz shards (fiva train pairs makes them)")
    return np.concatenate(xt), np.concatenate(xc), names


def pair_of(anon, rgb: np.ndarray, size: int = 112) -> tuple[np.ndarray, np.ndarray] | None:
    """(X_t, X_c) aligned crops [S,S,3] uint8 of the image's largest face when the anonymizer drew
    it, else None (no face, or a fallback obfuscation)."""
    dets = anon.detect(rgb)
    if len(dets) == 0:
        return None
    i = dets.largest()
    out = anon.anonymize_image(rgb, dets)
    if anon.outcomes[i] != "generated":
        return None
    lm = dets.landmarks[i][None]
    # sampled as the fake detector reads its inputs (fakes.detector_scores)
    return align_faces(rgb, lm, size, antialias=False)[0][0], align_faces(out, lm, size, antialias=False)[0][0]


def render_pairs(cfg: PairsConfig) -> Path:
    """Render up to `max_pairs` pairs into `cfg.out` (resuming), within `time_limit`."""
    from ..anonymize.frame import AnonymizeConfig, Anonymizer
    from ..anonymize.runner import file_seed

    out, root = Path(cfg.out), Path(cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    anon = Anonymizer(AnonymizeConfig(generator=cfg.generator, seed=cfg.seed, progress=False))
    _write_meta(out, anon, cfg)
    done = 0
    for p in shards(out):
        done += len(np.load(p, allow_pickle=False)["sources"])
    tried_file = out / "tried.txt"
    tried = set(tried_file.read_text().split("\n")) if tried_file.exists() else set()
    paths = list_images(root)
    order = np.random.default_rng(cfg.seed).permutation(len(paths))
    todo = [paths[i] for i in order if str(paths[i].relative_to(root)) not in tried]
    buf_t, buf_c, buf_s, t0 = [], [], [], time.time()
    n_shard = len(shards(out))
    bar = tqdm(total=cfg.max_pairs, initial=min(done, cfg.max_pairs), disable=not cfg.progress, desc="pairs", unit="pair")

    def flush():
        nonlocal buf_t, buf_c, buf_s, n_shard
        if buf_s:
            _write_shard(out / f"pairs-{n_shard:04d}.npz", buf_t, buf_c, buf_s, cfg.size)
            n_shard += 1
        with open(tried_file, "a") as f:
            f.write("".join(s + "\n" for s in pending))
        pending.clear()
        buf_t, buf_c, buf_s = [], [], []

    pending: list[str] = []
    for path in todo:
        if done >= cfg.max_pairs or (cfg.time_limit and time.time() - t0 > cfg.time_limit):
            break
        rel = str(path.relative_to(root))
        pending.append(rel)
        try:
            rgb = read_image(path)
        except ValueError as e:
            log.warning("%s", e)
            continue
        anon.reset(seed=file_seed(cfg.seed, rel))  # each image its own scene, as fiva anonymize runs it
        pair = pair_of(anon, rgb, cfg.size)
        if pair is None:
            continue
        buf_t.append(_png(pair[0]))
        buf_c.append(_png(pair[1]))
        buf_s.append(rel)
        done += 1
        bar.update(1)
        if len(buf_s) >= cfg.shard:
            flush()
    flush()
    bar.close()
    log.info("%d pairs in %s (%s)", done, out, dict(anon.stats))
    return out


def _write_meta(out: Path, anon, cfg: PairsConfig) -> None:
    from ..weights import DEFAULT_FACE_BANK

    meta = {"anonymizer": {k: v for k, v in asdict(anon.cfg).items() if isinstance(v, (str, int, float, bool, type(None)))},
            "pairs": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)},
            "face_bank_sha256": hashlib.sha256(DEFAULT_FACE_BANK.read_bytes()).hexdigest() if cfg.generator == "anchor-face" else None,
            "what": "X_t: original aligned crop; X_c: fiva anonymize's output aligned with the original's 5 points; generated faces only"}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
