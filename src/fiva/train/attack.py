"""Training the reconstruction attack R against an anonymizer (paper Section 3.4, Eq. 5-6).

Black-box: the anonymizer is only asked for outputs. Two sources of them:
- a 112 px generator in the loop (`generator`): each step samples a fake identity for each training
  face as fiva would (Eq. 1 anchors), anonymizes it with the frozen generator (quantised to 8 bits,
  as written to disk);
- stored pairs (`pairs`, from `fiva train pairs`): what `fiva anonymize` wrote with its default
  pipeline (the anchor-face renderer, which draws at the face's own resolution and is no network to
  run in the loop), read back as aligned crops. New shards are picked up while the run goes on.
With `real_share`, that share of each batch is an untouched real face given back as it is
(X_c = X_t): R learns to leave real faces alone, which makes its residual a fake detector (Section 3.6).
R is trained to give the original back:
  L1 reconstruction (Eq. 5) + identity loss 1 - cos(I(X_t), I(R(X_c))) (Eq. 6, SFace)
  + IFSR + non-saturating adversarial loss (with lazy R1 on the discriminator).
Resumable checkpoints, CSV log, sample grids, time limit, torchrun/DDP: the generator's machinery.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from ..anonymize.anchors import AnchorSpace
from ..faces.identity import identity_input, load_sface, to_tensor, to_uint8
from ..models import Discriminator, GeneratorConfig
from ..models.attack import ReconstructionAttack, save_attack
from ..models.registry import load_face_generator
from ..weights import DEFAULT_ANCHORS
from . import losses as L
from .checkpoint import save_checkpoint, save_optim
from .common import CsvLog, as_batch, discriminator_step, load_crops, out_of_time, random_batch, resume_training, start_run, wrap_ddp
from .pairs import load_pairs, shards

log = logging.getLogger(__name__)


@dataclass
class AttackConfig:
    data: str | None = None  # face images for the generator in the loop (not read with `pairs`)
    out: str = "runs/attack"
    generator: str = "fiva"  # the attacked anonymizer (registered generator) ...
    model: str | None = None  # ... and its weights (default: the shipped one)
    pairs: str | None = None  # ... or a folder of stored pairs (train/pairs.py); then `data` is not read
    real_share: float = 0.0  # share of each batch that is a real face to give back unchanged
    reload_every: int = 50  # pairs: look for new shards every N steps (a rendering may still be adding them)
    anchors: str | None = None
    steps: int = 1000
    batch: int = 16
    lr: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.5, 0.99)
    w_rec: float = 10.0
    w_id: float = 1.0
    w_ifsr: float = 1.0
    w_adv: float = 0.1
    r1: float = 0.2
    r1_every: int = 4
    resume: str | None = None
    sample_every: int = 200
    save_every: int = 500
    time_limit: float = 0.0
    device: str = "auto"
    seed: int = 0
    progress: bool = True


@torch.no_grad()
def anonymize_crops(G, sface, anchors: AnchorSpace, x_t: torch.Tensor) -> torch.Tensor:
    """What the attacker gets: each aligned face anonymized with a sampled anchor, in 8 bits."""
    z = sface.identity(x_t).cpu().numpy()
    z_a = torch.from_numpy(np.stack([anchors.sample(v) for v in z])).to(x_t.device)
    _, _, x_hat = G(x_t, z_a)
    return to_tensor(to_uint8(x_hat)).to(x_t.device)


class _InLoop:
    """Pairs made by a 112 px generator in the training loop."""

    def __init__(self, cfg: AttackConfig, out: Path, rank: int, world: int, device, sface):
        self.G = load_face_generator(cfg.generator, cfg.model, device).requires_grad_(False)
        self.crops = load_crops(cfg.data, self.G.resolution, out, rank, world, device)
        self.anchors = AnchorSpace.load(cfg.anchors or DEFAULT_ANCHORS, seed=cfg.seed + rank)
        self.sface = sface
        self.resolution = self.G.resolution
        self.cfg = getattr(self.G, "cfg", None) or GeneratorConfig(resolution=self.resolution)
        self.meta = {"trained_against": f"{cfg.generator} ({cfg.model or 'shipped weights'}), in the loop"}

    def batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x_t = random_batch(self.crops, n, gen)
        return x_t, anonymize_crops(self.G, self.sface, self.anchors, x_t)

    def reals(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return random_batch(self.crops, n, gen)

    def reload(self) -> None:
        pass


class _Stored:
    """Stored pairs (X_t, X_c) of `fiva train pairs`, both mirrored alike."""

    def __init__(self, folder: str, device):
        self.folder, self.device, self.count = folder, device, -1
        self.reload()
        self.resolution = int(self.x_t.shape[1])
        self.cfg = GeneratorConfig(resolution=self.resolution)
        meta = Path(folder) / "meta.json"
        info = json.loads(meta.read_text()) if meta.exists() else {}
        gen = info.get("anonymizer", {}).get("generator", "unknown")
        self.meta = {"trained_against": f"fiva anonymize, generator {gen} (stored pairs, generated faces only)",
                     **({"face_bank_sha256": info["face_bank_sha256"]} if info.get("face_bank_sha256") else {})}

    def reload(self) -> None:
        n = len(shards(self.folder))
        if n == self.count:
            return
        x_t, x_c, _ = load_pairs(self.folder)
        self.x_t, self.x_c = torch.from_numpy(x_t).to(self.device), torch.from_numpy(x_c).to(self.device)
        self.count = n
        log.info("%d stored pairs from %d shards", len(self.x_t), n)

    def batch(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.x_t), (n,), generator=gen, device=self.device)
        flip = torch.rand(n, device=self.device, generator=gen) < 0.5
        return as_batch(self.x_t[idx], flip), as_batch(self.x_c[idx], flip)

    def reals(self, n: int, gen: torch.Generator) -> torch.Tensor:
        return random_batch(self.x_t, n, gen)


def with_reals(x_t: torch.Tensor, x_c: torch.Tensor, share: float, gen: torch.Generator) -> torch.Tensor:
    """X_c with a `share` of its faces replaced by their untouched originals (R must keep those)."""
    if share <= 0:
        return x_c
    keep = torch.rand(len(x_c), device=x_c.device, generator=gen) < share
    return torch.where(keep[:, None, None, None], x_t, x_c)


def train_attack(cfg: AttackConfig) -> Path:
    out = Path(cfg.out)
    rank, world, device, gen = start_run(cfg.device, out, cfg.seed)
    main = rank == 0
    sface = load_sface(device)
    source = _Stored(cfg.pairs, device) if cfg.pairs else _InLoop(cfg, out, rank, world, device, sface)
    S = source.resolution
    R = ReconstructionAttack(source.cfg).to(device)
    D = Discriminator(S).to(device)
    opt_r = torch.optim.Adam(R.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    step = resume_training(cfg.resume, out, R, D, opt_r, opt_d)
    R_train, D_train = wrap_ddp(world, device, R, D)

    fixed_t, fixed_c = source.batch(8, torch.Generator(device=device).manual_seed(1))
    csv_log = CsvLog(out / "log.csv") if main else None
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), disable=not (main and cfg.progress), desc="train attack", unit="step")
    while step < cfg.steps:
        x_t, x_c = source.batch(cfg.batch, gen)
        x_r = R_train(with_reals(x_t, x_c, cfg.real_share, gen))

        real = source.reals(cfg.batch, gen).requires_grad_(step % cfg.r1_every == 0)
        loss_d, _ = discriminator_step(D_train, opt_d, real, x_r, cfg.r1, cfg.r1_every)

        D.requires_grad_(False)
        with torch.no_grad():
            z_t, feats_t = sface.features(identity_input(x_t))
        z_r, feats_r = sface.features(identity_input(x_r))
        l_rec = F.l1_loss(x_r, x_t)  # Eq. 5
        l_id = (1 - F.cosine_similarity(z_t, z_r, dim=1)).mean()  # Eq. 6
        l_ifsr = L.ifsr(feats_t, feats_r, (0, 1, 2))
        l_adv = L.g_nonsaturating(D(x_r))
        loss = cfg.w_rec * l_rec + cfg.w_id * l_id + cfg.w_ifsr * l_ifsr + cfg.w_adv * l_adv
        opt_r.zero_grad(set_to_none=True)
        loss.backward()
        opt_r.step()
        D.requires_grad_(True)
        step += 1
        bar.update(1)
        if step % cfg.reload_every == 0:
            source.reload()
        over_time = out_of_time(t0, cfg.time_limit, world, device)
        if not main:
            if over_time:
                break
            continue
        row = {"step": step, "time": round(time.time() - t0, 1), "loss": loss.item(), "rec": l_rec.item(), "id": l_id.item(),
               "ifsr": l_ifsr.item(), "adv": l_adv.item(), "loss_d": loss_d.item()}
        if step % 10 == 0 or step == cfg.steps or over_time:
            csv_log.write(row)
            bar.set_postfix(rec=f"{row['rec']:.3f}", id=f"{row['id']:.3f}")
        if step % cfg.sample_every == 0:
            _grid(R, fixed_t, fixed_c, out / f"sample_{step:07d}.png")
        if step % cfg.save_every == 0:  # the last step's save comes after the loop
            _save(out, R, D, opt_r, opt_d, step, source.meta)

        if over_time:
            break
    bar.close()
    if main:
        _save(out, R, D, opt_r, opt_d, step, source.meta)
        csv_log.close()
    if world > 1:
        dist.destroy_process_group()
    return out / "attack.safetensors"


def _grid(R, x_t, x_c, path: Path) -> None:
    """PNG with rows: original X_t, anonymized X_c, reconstruction R(X_c)."""
    R.eval()
    with torch.no_grad():
        x_r = R(x_c)
    R.train()
    grid = np.concatenate([np.concatenate(list(to_uint8(r)), axis=1) for r in (x_t, x_c, x_r)], axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def _save(out: Path, R, D, opt_r, opt_d, step: int, meta: dict) -> None:
    save_checkpoint(out / "checkpoint.safetensors", R, D, step)
    save_optim(out / "optim.safetensors", {"G": opt_r, "D": opt_d})
    save_attack(R, out / "attack.safetensors", extra={"step": step, **meta})
