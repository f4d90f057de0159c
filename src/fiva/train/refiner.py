"""Training the refiner (models/refiner.py) on stored pairs (`fiva train pairs`), SimGAN-style.

X_c, what `fiva anonymize` drew (aligned with the original's 5 points), is the refiner's input;
the real crops X_t are the discriminator's real class, unpaired (a batch's reals are other people's
photos: the refiner must never be pulled towards its own original). Losses of the refiner G, for
y = G(x):
- adversarial (hinge) against a spectrally normalised patch discriminator (14x14 verdicts of
  ~40 px patches: local texture, not who the face is), its fakes half from a history of earlier
  refinements (SimGAN's buffer, against oscillation), everything it sees with a little noise
  (stored crops may be JPEG'd, refinements are not);
- low frequencies held: L1 between y and x pooled to 8x8-pixel cells (`w_low`), and a weak L1 at
  full resolution (`w_full`): the colour, light, shape and expression of the drawing stay, what
  changes is texture and thin structures (streaks, seams, waxy skin);
- identity not given back: hinge on SFace, cos(y, X_t) may not exceed cos(x, X_t) (`w_id`).
Pairs are split by identity; the held-out ones give the log's SFace and correction figures and the
sample grid.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


@dataclass
class RefinerTrainConfig:
    pairs: str  # pairs folder(s) (fiva train pairs), comma-separated
    out: str = "runs/refiner"
    steps: int = 20000
    batch: int = 32
    lr: float = 2e-4
    w_low: float = 20.0
    w_full: float = 1.0
    w_id: float = 10.0
    low_cell: int = 8  # pixels per side of the cells whose means are held
    coarse: int = 1  # the refiner's correction is smooth on a grid this much coarser (RefinerConfig.coarse)
    d_scale: int = 1  # the discriminator sees faces shrunk this many times (2: shading, not pixel texture)
    instance_noise: float = 0.03  # Gaussian noise on everything the discriminator sees ([-1,1] scale): stored crops
    # are compressed and the refinements are not, a difference the discriminator must not lean on
    history: int = 4096  # refined crops kept for the discriminator's fakes
    val_share: float = 0.05
    time_limit: float = 0.0
    snapshot_every: float = 0.0  # seconds between kept snapshots (0: only the final weights)
    device: str = "auto"
    seed: int = 0
    log_every: int = 100


class PatchDiscriminator(nn.Module):
    """Spectrally normalised 4x4 stride-2 convolutions, 112 -> 14x14 verdicts."""

    def __init__(self, widths=(64, 128, 256)):
        super().__init__()
        sn = nn.utils.spectral_norm
        layers, c = [], 3
        for w in widths:
            layers += [sn(nn.Conv2d(c, w, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c = w
        layers += [sn(nn.Conv2d(c, c, 3, 1, 1)), nn.LeakyReLU(0.2), sn(nn.Conv2d(c, 1, 3, 1, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def _batch(crops: torch.Tensor, idx: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    x = crops[idx].permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def low(x: torch.Tensor, cell: int) -> torch.Tensor:
    return F.avg_pool2d(x, cell)


def train_refiner(cfg: RefinerTrainConfig, data: tuple | None = None) -> Path:
    """Train; write OUT/refiner.safetensors (fp16), snapshots, OUT/log.csv and OUT/summary.json.
    `data`: (X_t, X_c, names) instead of reading `cfg.pairs` (tests)."""
    from ..faces.identity import load_sface
    from ..models.refiner import Refiner, RefinerConfig, save_refiner
    from .common import resolve_device
    from .detector import identity_of, split_pairs
    from .pairs import load_pairs

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if data is None:
        parts = [load_pairs(p) for p in cfg.pairs.split(",")]
        data = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), sum((p[2] for p in parts), []))
    xt_all, xc_all, names = data
    tr, va = split_pairs(names, cfg.val_share, cfg.seed)
    xt, xc = torch.from_numpy(xt_all[tr]).to(dev), torch.from_numpy(xc_all[tr]).to(dev)
    log.info("refiner: %d training pairs, %d held out (%d identities), on %s", len(tr), len(va),
             len({identity_of(names[i]) for i in va}), dev)
    G, D0 = Refiner(RefinerConfig(coarse=cfg.coarse)).to(dev), PatchDiscriminator().to(dev)

    def D(img):
        return D0(F.avg_pool2d(img, cfg.d_scale) if cfg.d_scale > 1 else img)

    sface = load_sface(dev)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D0.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    history = torch.zeros((0, 3, 112, 112), device=dev)
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    n, b = len(tr), cfg.batch
    fields = ("step", "seconds", "loss_d", "adv", "low", "full", "id", "d_real", "d_fake")
    rows: list[tuple] = []
    t0, step, last_snap = time.time(), 0, time.time()
    while step < cfg.steps and not (cfg.time_limit and time.time() - t0 > cfg.time_limit):
        i = torch.randint(n, (b,), generator=gen).to(dev)
        j = torch.randint(n, (b,), generator=gen).to(dev)  # other people's real faces
        flip = (torch.rand(b, generator=gen) < 0.5).to(dev)
        x, real, own = _batch(xc, i, flip), _batch(xt, j, flip), _batch(xt, i, flip)
        with amp:
            y = G(x)
        # discriminator: real faces against refinements, half of them from the history
        fake = y.detach().float()
        if len(history) >= b:
            k = torch.randint(len(history), (b // 2,), generator=gen).to(dev)
            fake = torch.cat([fake[: b - b // 2], history[k]])
        sigma = cfg.instance_noise
        with amp:
            d_real, d_fake = D(real + sigma * torch.randn_like(real)), D(fake + sigma * torch.randn_like(fake))
            loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        history = torch.cat([history, y.detach().float()])[-cfg.history:]
        # refiner
        with amp:
            adv = -D(y + sigma * torch.randn_like(y)).mean()
            l_low = (low(y.float(), cfg.low_cell) - low(x, cfg.low_cell)).abs().mean()
            l_full = (y.float() - x).abs().mean()
            with torch.no_grad():
                e_own, e_x = sface.identity(own), sface.identity(x)
            e_y = sface.identity(y)
            l_id = F.relu((e_y * e_own).sum(1) - (e_x * e_own).sum(1)).mean()
            loss_g = adv + cfg.w_low * l_low + cfg.w_full * l_full + cfg.w_id * l_id
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        step += 1
        rows.append((step, time.time() - t0, loss_d.item(), adv.item(), l_low.item(), l_full.item(), l_id.item(),
                     d_real.float().mean().item(), d_fake.float().mean().item()))
        if step % cfg.log_every == 0:
            m = np.mean(np.array(rows[-cfg.log_every:]), 0)
            log.info("step %d (%.0f s) D %.3f adv %.3f low %.4f full %.4f id %.4f", step, m[1], m[2], m[3], m[4], m[5], m[6])
        if cfg.snapshot_every and time.time() - last_snap > cfg.snapshot_every:
            save_refiner(G, out / f"refiner_{step:06d}.safetensors", {"step": step})
            last_snap = time.time()
    extra = {"trained_on": cfg.pairs, "step": step, "seconds": round(time.time() - t0, 1), "train_config": asdict(cfg)}
    if len(va):
        extra.update(heldout(G, sface, xt_all[va], xc_all[va], dev))
        log.info("held out: %s", {k: v for k, v in extra.items() if k.startswith("heldout")})
        sample_grid(G, xc_all[va][:8], out / "samples.png", dev)
    path = out / "refiner.safetensors"
    save_refiner(G, path, extra)
    with open(out / "log.csv", "w") as f:
        f.write(",".join(fields) + "\n" + "".join(",".join(f"{v:.5g}" for v in r) + "\n" for r in rows))
    (out / "summary.json").write_text(json.dumps(extra, indent=1, default=str))
    return path


@torch.no_grad()
def heldout(G, sface, xt: np.ndarray, xc: np.ndarray, dev) -> dict:
    """SFace similarity to the original before and after refining, and the mean correction (0-255)."""
    G.eval()
    cos_x, cos_y, corr = [], [], []
    for a in range(0, len(xt), 64):
        own = torch.from_numpy(xt[a:a + 64]).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
        x = torch.from_numpy(xc[a:a + 64]).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
        y = G(x)
        e = sface.identity(own)
        cos_x.append((sface.identity(x) * e).sum(1).cpu())
        cos_y.append((sface.identity(y) * e).sum(1).cpu())
        corr.append((y - x).abs().mean((1, 2, 3)).cpu() * 127.5)
    G.train()
    cx, cy, c = torch.cat(cos_x), torch.cat(cos_y), torch.cat(corr)
    return {"heldout_pairs": len(xt), "heldout_sface_cos_drawn": float(cx.mean()), "heldout_sface_cos_refined": float(cy.mean()),
            "heldout_mean_correction": float(c.mean())}


@torch.no_grad()
def sample_grid(G, xc: np.ndarray, path: Path, dev) -> None:
    """Rows: the drawings, the refined faces, the correction x4 around grey."""
    import cv2

    G.eval()
    x = torch.from_numpy(xc).to(dev).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = G(x)
    d = (0.5 + 2 * (y - x)).clamp(0, 1) * 2 - 1
    rows = [torch.cat(list(t), 2) for t in (x, y, d)]
    grid = ((torch.cat(rows, 1).permute(1, 2, 0).cpu().numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
    G.train()
