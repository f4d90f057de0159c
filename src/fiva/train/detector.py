"""Training the fake detector (models/detector.py) on stored pairs (`fiva train pairs`).

Real: X_t, the original's aligned crop. Fake: X_c, what `fiva anonymize` made of it (the same
pairs R trains on), and, for a share of the fakes, the real crop with its face blurred the way
`--method blur` does (so a blurred face is not called real). Both classes get the same random
augmentation (`augment`: small faces upscaled, JPEG, colour, blur, noise, flips, small shifts and
scales) so the detector cannot lean on one resolution, compression or camera. Several pairs folders
can be mixed, e.g. one rendered from LFW photos as they are and one from the same identities'
photos shrunk so their faces are 24-90 px (real small faces and what the pipeline draws there).

Pairs are split by identity (the source's folder, across all pairs folders): `val_share` of the
identities are held out; the shipped threshold is chosen on their REAL faces only (the
`threshold_quantile` of their scores: the target false-positive rate is 1 - that), and their fakes
give the held-out AUC. The pairs come from LFW TRAINING identities, so the threshold never saw a
face of the evaluation identities (fold 1) or of ../shared/data/wild.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


@dataclass
class DetectorTrainConfig:
    pairs: str  # pairs folder (fiva train pairs), or several separated by commas
    out: str = "runs/detector"
    steps: int = 3000
    batch: int = 32
    lr: float = 1e-3
    blur_share: float = 0.2  # share of the fakes that are blurred real faces
    val_share: float = 0.1  # share of identities held out (threshold and held-out AUC)
    threshold_quantile: float = 0.98  # of held-out real scores
    time_limit: float = 0.0
    seed: int = 0
    log_every: int = 50
    init: str | None = None  # start from this detector's weights (fine-tune) instead of from scratch


def identity_of(source: str) -> str:
    parts = Path(source).parts
    return parts[-2] if len(parts) > 1 else Path(source).stem


def blur_face(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The aligned crop with its face blurred like `--method blur` (downscale + Gaussian in a
    feathered ellipse around the face)."""
    s = crop.shape[0]
    f = rng.uniform(4, 10)
    small = cv2.resize(crop, (max(2, int(s / f)),) * 2, interpolation=cv2.INTER_AREA)
    k = 3 if small.shape[0] < 20 else 5
    blurred = cv2.resize(cv2.GaussianBlur(small, (k, k), 0), (s, s), interpolation=cv2.INTER_LINEAR)
    mask = np.zeros((s, s), np.float32)
    cv2.ellipse(mask, (s // 2, int(s * 0.52)), (int(s * rng.uniform(0.36, 0.5)), int(s * rng.uniform(0.45, 0.6))), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), s * 0.04)[..., None]
    return (crop * (1 - mask) + blurred * mask).round().astype(np.uint8)


def augment(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random augmentation, the same for real and fake crops so none of it is a cue.

    What a photo does to a face before `fiva detect-fake` sees it: flip; the alignment's jitter; a
    smaller face (down to a quarter of the crop: faces of ~20-100 px in group photos), JPEG-compressed
    at that size as a camera does, then upscaled back as the alignment upscales it; colour, contrast
    and gamma of another camera (and sometimes grey); slight blur, sensor noise, JPEG at full size.
    Sometimes the eye band is blurred away, so the detector also learns cues other than the eyes
    (blend seams, skin texture, colour)."""
    s = crop.shape[0]
    x = np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop)
    if rng.random() < 0.7:  # landmark jitter: the detector aligns on the output's own landmarks
        a = rng.uniform(-4, 4) * np.pi / 180
        sc = rng.uniform(0.94, 1.06)
        M = cv2.getRotationMatrix2D((s / 2, s / 2), np.degrees(a), sc)
        M[:, 2] += rng.uniform(-3, 3, 2)
        x = cv2.warpAffine(x, M, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if rng.random() < 0.5:  # a smaller face (log-uniform 0.25-0.95 of the crop), maybe JPEG'd there, upscaled back
        r = max(8, int(round(s * np.exp(rng.uniform(np.log(0.25), np.log(0.95))))))
        x = cv2.resize(x, (r, r), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            x = _jpeg(x, int(rng.integers(55, 96)))
        x = cv2.resize(x, (s, s), interpolation=cv2.INTER_LINEAR if rng.random() < 0.7 else cv2.INTER_CUBIC)
    if rng.random() < 0.5:  # another camera's colour: gain per channel, contrast, gamma
        f = x.astype(np.float32) / 255.0
        f = f * rng.uniform(0.9, 1.1, 3).astype(np.float32)
        m = f.mean()
        f = (f - m) * rng.uniform(0.8, 1.2) + m + rng.uniform(-0.06, 0.06)
        f = np.clip(f, 0, 1) ** rng.uniform(0.8, 1.25)
        x = (f * 255).round().astype(np.uint8)
    if rng.random() < 0.05:
        x = np.repeat(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)[..., None], 3, 2)
    if rng.random() < 0.15:  # the eye band blurred away (both classes)
        y0, y1 = int(s * 0.33), int(s * 0.56)
        band = cv2.GaussianBlur(x, (0, 0), rng.uniform(2, 4))
        w = np.zeros((s, s), np.float32)
        w[y0:y1] = 1
        w = cv2.GaussianBlur(w, (0, 0), s * 0.03)[:, :, None]
        x = (x * (1 - w) + band * w).round().astype(np.uint8)
    if rng.random() < 0.2:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 1.0))
    if rng.random() < 0.2:  # sensor noise
        x = np.clip(x + rng.normal(0, rng.uniform(1, 5), x.shape), 0, 255).round().astype(np.uint8)
    if rng.random() < 0.4:
        x = _jpeg(x, int(rng.integers(50, 96)))
    return np.ascontiguousarray(x)


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    """RGB uint8 through JPEG at `quality`."""
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(x[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])


def to_input(crops: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _provenance(init: str | None) -> str | None:
    """What a fine-tuned detector started from: its file name, what that one was trained on and for how long."""
    if not init:
        return None
    from ..models.detector import detector_metadata

    meta = detector_metadata(init)
    return f"{Path(init).name}: step {meta.get('step')}, pairs {meta.get('pairs')}"


def learning_rate(cfg: DetectorTrainConfig, step: int, seconds: float) -> float:
    """Linear warm-up over the first 5%, then cosine down to 2% of `cfg.lr`; progress is the larger of
    the step's and (with a time limit) the time's share, so a time-limited run still anneals."""
    frac = step / max(cfg.steps, 1)
    if cfg.time_limit:
        frac = max(frac, seconds / cfg.time_limit)
    frac = min(frac, 1.0)
    if frac < 0.05:
        return cfg.lr * max(frac / 0.05, 0.02)
    return cfg.lr * (0.02 + 0.98 * 0.5 * (1 + np.cos(np.pi * (frac - 0.05) / 0.95)))


def split_pairs(names: list[str], val_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    ids = sorted({identity_of(n) for n in names})
    rng = np.random.default_rng(seed)
    val_ids = set(rng.choice(ids, max(1, int(round(len(ids) * val_share))), replace=False)) if val_share > 0 else set()
    val = np.array([identity_of(n) in val_ids for n in names])
    return np.where(~val)[0], np.where(val)[0]


@torch.no_grad()
def score_crops(model, crops: np.ndarray, batch: int = 64) -> np.ndarray:
    """Fake probabilities of uint8 aligned crops [N,S,S,3]."""
    model.eval()
    out = [torch.sigmoid(model(to_input(crops[i:i + batch]))).numpy() for i in range(0, len(crops), batch)]
    return np.concatenate(out) if out else np.zeros(0)


def train_detector(cfg: DetectorTrainConfig, data: tuple | None = None) -> Path:
    """Train; write OUT/detector.safetensors (fp16, threshold in the metadata) and OUT/log.csv.
    `data`: (X_t, X_c, names) instead of reading `cfg.pairs` (tests)."""
    from ..evaluate.fakes import roc
    from ..models.detector import FakeDetector, load_detector, save_detector
    from .pairs import load_pairs

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if data is None:
        parts = [load_pairs(p) for p in cfg.pairs.split(",")]
        data = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), sum((p[2] for p in parts), []))
    xt, xc, names = data
    tr, va = split_pairs(names, cfg.val_share, cfg.seed)
    log.info("detector: %d training pairs, %d held-out pairs (%d identities held out)", len(tr), len(va),
             len({identity_of(names[i]) for i in va}))
    # fine-tuning keeps what the earlier detector learnt from pairs that are no longer at hand
    model = load_detector(cfg.init) if cfg.init else FakeDetector()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    half = cfg.batch // 2
    t0, step, rows = time.time(), 0, []
    while step < cfg.steps and not (cfg.time_limit and time.time() - t0 > cfg.time_limit):
        model.train()
        for g in opt.param_groups:
            g["lr"] = learning_rate(cfg, step, time.time() - t0)
        real_i, fake_i = rng.choice(tr, half), rng.choice(tr, cfg.batch - half)
        fakes = [blur_face(xt[i], rng) if rng.random() < cfg.blur_share else xc[i] for i in fake_i]
        crops = np.stack([augment(xt[i], rng) for i in real_i] + [augment(f, rng) for f in fakes])
        y = torch.cat([torch.zeros(half), torch.ones(cfg.batch - half)])
        loss = F.binary_cross_entropy_with_logits(model(to_input(crops)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        rows.append((step, loss.item(), time.time() - t0))
        if step % cfg.log_every == 0:
            log.info("step %d loss %.4f (%.0f s)", step, np.mean([r[1] for r in rows[-cfg.log_every:]]), time.time() - t0)
    extra = {"trained_against": "fiva anonymize (anchor-face default) outputs and --method-blur-like faces, "
                                "from stored pairs of LFW training identities",
             "pairs": cfg.pairs, "step": step, "fine_tuned_from": _provenance(cfg.init), "train_config": asdict(cfg)}
    if len(va):
        # each real crop once (pairs folders rendered from the same photos hold the same X_t)
        seen, real_va = set(), []
        for i in va:
            if (h := hash(xt[i].tobytes())) not in seen:
                seen.add(h)
                real_va.append(i)
        real_s, fake_s = score_crops(model, xt[real_va]), score_crops(model, xc[va])
        blur_s = score_crops(model, np.stack([blur_face(xt[i], rng) for i in va]))
        thr = float(np.quantile(real_s, cfg.threshold_quantile))
        extra.update({"fake_threshold": thr, "threshold_chosen_on": f"held-out real faces: the {cfg.threshold_quantile:.3g} quantile of the scores "
                                            f"of {len(real_va)} real faces of {len({identity_of(names[i]) for i in va})} LFW training-split "
                                            "identities held out of training",
                      "heldout_auc_anonymized": roc(real_s, fake_s)["auc"], "heldout_auc_blur": roc(real_s, blur_s)["auc"],
                      "heldout_tpr_anonymized": float(np.mean(fake_s > thr)), "heldout_tpr_blur": float(np.mean(blur_s > thr))})
        log.info("held out: AUC anonymized %.3f blur %.3f; threshold %.4f: TPR anonymized %.3f blur %.3f",
                 extra["heldout_auc_anonymized"], extra["heldout_auc_blur"], thr, extra["heldout_tpr_anonymized"], extra["heldout_tpr_blur"])
    path = out / "detector.safetensors"
    save_detector(model, path, extra)
    with open(out / "log.csv", "w") as f:
        f.write("step,loss,seconds\n" + "".join(f"{s},{l:.5f},{t:.1f}\n" for s, l, t in rows))
    (out / "summary.json").write_text(json.dumps({k: v for k, v in extra.items()}, indent=1, default=str))
    return path
