"""Training the reconstruction attack R against an anonymizer (paper Section 3.4, Eq. 5-6).

Black-box: the anonymizer is only asked for outputs. Each step samples a fake identity for each
training face as fiva would (Eq. 1 anchors), anonymizes it with the frozen generator (quantised
to 8 bits, as written to disk), and trains R to give the original back:
  L1 reconstruction (Eq. 5) + identity loss 1 - cos(I(X_t), I(R(X_c))) (Eq. 6, SFace)
  + IFSR + non-saturating adversarial loss (with lazy R1 on the discriminator).
Resumable checkpoints, CSV log, sample grids, time limit, torchrun/DDP: the generator's machinery.
"""
from __future__ import annotations

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
from .common import CsvLog, discriminator_step, load_crops, out_of_time, random_batch, resume_training, start_run, wrap_ddp

log = logging.getLogger(__name__)


@dataclass
class AttackConfig:
    data: str
    out: str = "runs/attack"
    generator: str = "fiva"  # the attacked anonymizer (registered generator) ...
    model: str | None = None  # ... and its weights (default: the shipped one)
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


def train_attack(cfg: AttackConfig) -> Path:
    out = Path(cfg.out)
    rank, world, device, gen = start_run(cfg.device, out, cfg.seed)
    main = rank == 0
    G = load_face_generator(cfg.generator, cfg.model, device).requires_grad_(False)
    S = G.resolution
    crops = load_crops(cfg.data, S, out, rank, world, device)
    anchors = AnchorSpace.load(cfg.anchors or DEFAULT_ANCHORS, seed=cfg.seed + rank)
    sface = load_sface(device)
    R = ReconstructionAttack(getattr(G, "cfg", None) or GeneratorConfig(resolution=S)).to(device)
    D = Discriminator(S).to(device)
    opt_r = torch.optim.Adam(R.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    step = resume_training(cfg.resume, out, R, D, opt_r, opt_d)
    R_train, D_train = wrap_ddp(world, device, R, D)

    fixed_t = random_batch(crops, 8, torch.Generator(device=device).manual_seed(1))
    fixed_c = anonymize_crops(G, sface, anchors, fixed_t)
    csv_log = CsvLog(out / "log.csv") if main else None
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), disable=not (main and cfg.progress), desc="train attack", unit="step")
    while step < cfg.steps:
        x_t = random_batch(crops, cfg.batch, gen)
        x_c = anonymize_crops(G, sface, anchors, x_t)
        x_r = R_train(x_c)

        real = random_batch(crops, cfg.batch, gen).requires_grad_(step % cfg.r1_every == 0)
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
            _save(out, R, D, opt_r, opt_d, step)
        if over_time:
            break
    bar.close()
    if main:
        _save(out, R, D, opt_r, opt_d, step)
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


def _save(out: Path, R, D, opt_r, opt_d, step: int) -> None:
    save_checkpoint(out / "checkpoint.safetensors", R, D, step)
    save_optim(out / "optim.safetensors", {"G": opt_r, "D": opt_d})
    save_attack(R, out / "attack.safetensors", extra={"step": step})
