"""Training loop of the FIVA generator (paper Sections 3.1, 3.4 and 4).

Runs as is on one CPU or GPU, and under `torchrun --nproc_per_node N` with DDP unchanged.
Each step: distort X_t (rotation, zoom), condition on an identity (half the batch on its own z_t,
the counterfactual setting of the paper; half on another person's, as the ITM will at inference),
generate, then
  D: non-saturating loss + lazy R1;
  G: identity hinge (Eq. 4 on degraded copies of X_a and X_â), IFSR, low-pass and full L1,
     mask L1 (outside the face ellipse), non-saturating adversarial loss.
"""
from __future__ import annotations

import copy
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

from ..faces.identity import identity_input, load_sface, to_uint8
from ..models import Discriminator, FIVAGenerator, GeneratorConfig, save_generator
from . import losses as L
from .checkpoint import load_ema, save_checkpoint, save_optim
from .common import (CsvLog, as_batch, discriminator_step, load_crops, out_of_time, random_batch, random_batch_indexed,
                     resume_path, resume_training, start_run, wrap_ddp)
from .donors import donor_pool, donor_target, mean_face, person_ids, prior_face

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str
    out: str = "runs/generator"
    model: str = "fiva-112"
    steps: int = 1000
    batch: int = 16
    lr: float = 1e-4
    lr_d: float = 4e-4  # two time-scale update rule: a discriminator that keeps up penalises artefacts
    betas: tuple[float, float] = (0.5, 0.99)
    lr_decay: float = 0.97  # every 100k steps
    w_id: float = 4.0  # 2 until step 2,400 of the shipped model
    id_warmup: int = 2000  # identity weight ramps up linearly over these steps: structure first
    id_margin: float = 0.1
    # Share of samples whose identity losses see the clean, undegraded faces. Degraded copies alone
    # let SFace's similarity to the original drop to ~0.46 there while it stays ~0.71 on the clean
    # output (shipped model, 64 held-out faces): the loss was met where it is easiest. But 0.5 of
    # clean losses brought SFace-only patterns back within 300 steps (MODEL_CARD.md, CPU run 8).
    id_clean_share: float = 0.0
    w_ifsr: float = 4.0
    ifsr_scales: tuple[int, ...] = (0, 1, 2)  # 112, 56, 28 px: attributes; deeper maps carry identity
    w_rec_low: float = 10.0
    rec_low_factor: int = 4  # the low-pass L1 compares (S/f)x(S/f) images; its band is pinned to X_t's
    # Inside the face ellipse, no full or Laplacian L1 to X_t, only its amount of fine detail (the
    # detail carries identity; with --model fiva-112-lp8 the generator never sees it).
    free_inner: bool = False
    w_rec: float = 1.0
    w_hf: float = 5.0  # Laplacian L1: no new fine patterns
    w_mask: float = 1.0
    w_adv: float = 1.0
    # Donor guidance (train/donors.py): this share of each batch gets a structurally close face of
    # another training identity as the reconstruction (and IFSR) target inside the face ellipse,
    # and that donor's identity as the condition; w_id_to pulls their output towards it (SFace).
    donor_share: float = 0.0
    donor_pool: int = 20
    w_id_to: float = 0.0
    # Donors averaged into one target (their identities averaged into one condition, like the
    # anchors): 4 of the 50 nearest replace a face at dlib 0.72-0.73 with landmark error ~0.07, one
    # donor at 0.73-0.75 with ~0.08-0.09 (scripts/identity_bands.py, MODEL_CARD.md). A mean is
    # predictable enough to be a full L1 target inside the ellipse too (w_donor_rec; 0 keeps only
    # its low-pass there).
    donor_mix: int = 1
    w_donor_rec: float = 0.0
    # Share of the training faces' mean face in every donor target (the rest: the donors' mean).
    # A generator that has not yet learned what an identity looks like falls back to the mean face,
    # which no one is: in the wider ellipse of fiva-112-lp8w it replaces held-out faces at dlib 0.73
    # (99.5% of 200 beyond 0.6, landmark error 0.075), while means of structural neighbours keep
    # their look (mean of 50 nearest: 90.5%; scripts/identity_bands.py, MODEL_CARD.md).
    donor_mean_face: float = 0.0
    # Exponential moving average of the generator's weights (0 = off): with it, validation, sample
    # grids and the saved generator weights are the average (StarGAN v2 / StyleGAN practice), which
    # smooths the back-and-forth between change and realism seen in the donor-guided CPU runs.
    ema: float = 0.0
    # fiva-112-mf's prior face: the mean of `prior_faces` training faces drawn with `prior_seed`
    # (0 = all of them). Means of a few hundred faces differ in how many held-out faces they take
    # beyond dlib's 0.6 (98-100% of 200; MODEL_CARD.md): the shipped prior was chosen on a split
    # disjoint from the one its figures are reported on. Given on a resume, it replaces the resumed prior.
    prior_faces: int = 0
    prior_seed: int = 0
    r1: float = 0.2
    r1_every: int = 4
    resume: str | None = None
    val_data: str | None = None
    val_count: int = 64
    val_every: int = 500
    sample_every: int = 200
    save_every: int = 500
    time_limit: float = 0.0  # seconds; 0 = none
    device: str = "auto"
    seed: int = 0
    progress: bool = True
    keep_generators: bool = False  # also keep generator_STEP.safetensors at every save


VAL_FIELDS = ("val_sface_cos", "val_sface_below_0.3", "val_detect", "val_lmk_err", "val_mask_mean", "val_dlib_dist",
              "val_dlib_beyond_0.6")


def _pad_for_detection(crop: np.ndarray) -> np.ndarray:
    s = crop.shape[0]
    return cv2.copyMakeBorder(crop, s // 2, s // 2, s // 2, s // 2, cv2.BORDER_REFLECT)


@torch.no_grad()
def quick_validate(G, sface, val: torch.Tensor, detector, dlib=None) -> dict[str, float]:
    """Fast check on held-out aligned crops: SFace similarity to the original, face detection rate
    and landmark error on the output (padded, so YuNet sees context), mask mean, and the
    independent dlib evaluator's distance to the original (the core target: > 0.6).
    The authoritative numbers come from `fiva evaluate` / scripts/evaluate_default.py."""
    G.eval()
    x = val.permute(0, 3, 1, 2).float().div(127.5).sub(1)
    z = sface.identity(x)
    z_other = z.roll(1, 0)  # another person's identity, standing in for an anchor
    x_a, m, x_hat = G(x, z_other)
    cos = F.cosine_similarity(z, sface.identity(x_hat), dim=1)
    found, errs, dlib_d = 0, [], []
    for a, b in zip(to_uint8(x), to_uint8(x_hat)) if detector is not None else ():
        pa, pb = _pad_for_detection(a), _pad_for_detection(b)
        da, db = detector(pa), detector(pb)
        if len(db):
            found += 1
            if len(da):
                la, lb = da.landmarks[0], db.landmarks[0]
                iod = np.linalg.norm(la[0] - la[1])
                errs.append(float(np.linalg.norm(la - lb, axis=1).mean() / iod))
                if dlib is not None:  # the independent judge, never part of a loss
                    dlib_d.append(float(np.linalg.norm(dlib.embed(pa, da.boxes[0]) - dlib.embed(pb, db.boxes[0]))))
    G.train()
    return {
        "val_sface_cos": float(cos.mean()),
        "val_sface_below_0.3": float((cos < 0.3).float().mean()),
        "val_detect": found / len(x) if detector is not None else float("nan"),
        "val_lmk_err": float(np.mean(errs)) if errs else float("nan"),
        "val_mask_mean": float(m.mean()),
        "val_dlib_dist": float(np.mean(dlib_d)) if dlib_d else float("nan"),
        "val_dlib_beyond_0.6": float(np.mean(np.array(dlib_d) > 0.6)) if dlib_d else float("nan"),
    }


def sample_grid(G, x: torch.Tensor, z: torch.Tensor, path: Path) -> None:
    """PNG with rows: input, generated X_a, mask, blended X_â."""
    G.eval()
    with torch.no_grad():
        x_a, m, x_hat = G(x, z)
    G.train()
    rows = [x, x_a, m.expand(-1, 3, -1, -1) * 2 - 1, x_hat]
    grid = np.concatenate([np.concatenate(list(to_uint8(r)), axis=1) for r in rows], axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) the generator; returns the path of the latest generator weights."""
    out = Path(cfg.out)
    rank, world, device, gen = start_run(cfg.device, out, cfg.seed)
    main = rank == 0
    gcfg = GeneratorConfig.named(cfg.model)
    S = gcfg.resolution
    if cfg.prior_faces and not gcfg.inner_prior:
        raise ValueError(f"--prior-faces needs a model with a prior face (fiva-112-mf), not {cfg.model}")
    crops, sources = load_crops(cfg.data, S, out, rank, world, device, sources=True)
    log.info("training on %d aligned faces at %d px on %s (world %d)", len(crops), S, device, world)
    # A chosen prior is drawn now: a bad --prior-faces fails before the donors' minutes of start-up.
    chosen_prior = prior_face(crops, cfg.prior_faces, cfg.prior_seed) if cfg.prior_faces else None

    val = None
    if main and cfg.val_data:
        val = load_crops(cfg.val_data, S, out, 0, 1, device)[: cfg.val_count]
    from ..faces import FaceDetector

    detector = None
    if main and val is not None:
        try:
            detector = FaceDetector()
        except Exception as e:  # an old OpenCV without YuNet support: validate without detection
            log.warning("face detector unavailable for validation (%s)", e)

    dlib = None
    if detector is not None:
        try:
            from ..faces.identity import DlibEvaluator

            dlib = DlibEvaluator()
        except ImportError:
            pass  # validation without the independent evaluator (a broken dlib install)
    sface = load_sface(device)
    G, D = FIVAGenerator(gcfg).to(device), Discriminator(S).to(device)
    pool = None
    if cfg.donor_share > 0:
        pool = donor_pool(crops, person_ids(sources), G.ellipse, cfg.donor_pool)
        if not 1 <= cfg.donor_mix <= pool.shape[1]:
            raise ValueError(f"donor mix {cfg.donor_mix} needs 1 to {pool.shape[1]} donors per face (the pool size)")
        log.info("donor guidance on %.0f%% of each batch (mean of %d of %d structural neighbours per face)", 100 * cfg.donor_share,
                 cfg.donor_mix, pool.shape[1])
        donor_z = torch.from_numpy(sface.embed(crops.cpu().numpy(), batch=256)).to(device)  # in memory only: biometric data
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr, betas=cfg.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=cfg.betas)
    step = resume_training(cfg.resume, out, G, D, opt_g, opt_d)
    if gcfg.inner_prior and (chosen_prior is not None or not G.prior.any()):  # else: the resumed model's prior
        G.prior.copy_(chosen_prior if chosen_prior is not None else prior_face(crops))
        log.info("prior face: the mean of %d training faces", cfg.prior_faces or len(crops))
    face_mean = None  # the donor targets' mean face: the generator's own prior where it has one
    if pool is not None and cfg.donor_mean_face > 0:
        face_mean = G.prior.clone() if gcfg.inner_prior else mean_face(crops)
    G_ema = None
    if cfg.ema and main:
        G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        path = resume_path(cfg.resume, out)
        if path and load_ema(path, G_ema):
            log.info("generator moving average resumed (decay %g)", cfg.ema)
        if gcfg.inner_prior:  # one prior, never averaged: a resumed average may hold an older one
            G_ema.prior.copy_(G.prior)
    G_out = G_ema if G_ema is not None else G  # what is validated, sampled and saved as the generator
    counterfactual = cfg.donor_share < 0.5  # else it learns to render the (donors') identity it is given
    G_train, D_train = wrap_ddp(world, device, G, D)

    fixed_x = random_batch(val if val is not None else crops, 8, torch.Generator(device=device).manual_seed(1))
    with torch.no_grad():
        fixed_z = sface.identity(fixed_x).roll(1, 0)

    csv_log = CsvLog(out / "log.csv", VAL_FIELDS) if main else None
    t0 = time.time()
    bar = tqdm(total=cfg.steps, initial=min(step, cfg.steps), disable=not (main and cfg.progress), desc="train generator", unit="step")
    B = cfg.batch
    while step < cfg.steps:
        decay = cfg.lr_decay ** (step / 100_000)
        lr = cfg.lr * decay
        for o, base in ((opt_g, cfg.lr), (opt_d, cfg.lr_d)):
            for g in o.param_groups:
                g["lr"] = base * decay
        x_t, idx, flip = random_batch_indexed(crops, B, gen)
        with torch.no_grad():
            z_t = sface.identity(x_t)
        z_cond = torch.where((torch.arange(B, device=device) < B // 2)[:, None], z_t, z_t.roll(1, 0))
        target, use = x_t, torch.zeros(B, dtype=torch.bool, device=device)
        if pool is not None:  # donor guidance: another person's face is the target inside the ellipse
            use = torch.rand(B, device=device, generator=gen) < cfg.donor_share
            k = torch.rand(B, pool.shape[1], device=device, generator=gen).argsort(1)[:, :cfg.donor_mix]
            pick = pool[idx[:, None], k]  # B,K distinct donors
            donor = as_batch(crops[pick.flatten()], flip.repeat_interleave(pick.shape[1])).unflatten(0, pick.shape).mean(1)
            z_d = F.normalize(donor_z[pick].mean(1), dim=1)
            if face_mean is not None:
                donor = cfg.donor_mean_face * face_mean + (1 - cfg.donor_mean_face) * donor
            z_cond = torch.where(use[:, None], z_d, z_cond)
        if pool is not None and gcfg.inner_prior:
            # The prior sits at the template in the crop, distortion or not: so does the donor target,
            # built on the distorted input (built before it, the target's face turns with X_t's
            # distortion and the generator must guess the turn from what it sees outside the ellipse).
            x_in = L.random_affine(x_t, generator=gen)
            target = torch.where(use[:, None, None, None], donor_target(x_in, donor, G.ellipse), x_in)
        else:
            if pool is not None:
                target = torch.where(use[:, None, None, None], donor_target(x_t, donor, G.ellipse), x_t)
            x_in, target = L.random_affine(torch.cat([x_t, target]), generator=gen, groups=2).chunk(2)
        x_a, m, x_hat = G_train(x_in, z_cond)

        # Discriminator step. Its real faces are another batch: with the generator's own inputs as
        # the reals, real and fake differ only where the generator changed something, and the
        # shared content's gradients cancel (the discriminator then learns very slowly).
        real = L.random_affine(random_batch(crops, B, gen), generator=gen).requires_grad_(step % cfg.r1_every == 0)
        loss_d, r1 = discriminator_step(D_train, opt_d, real, x_hat, cfg.r1, cfg.r1_every)

        # Generator step: [target, X_â, X_a] share one random degradation; the target's SFace pass
        # (X_in itself, or its donor-guided target) needs no grad.
        D.requires_grad_(False)
        both = torch.cat([target, x_hat, x_a])
        degraded = L.degrade(both, groups=3)
        if cfg.id_clean_share > 0:  # some samples' identity losses see the undegraded faces
            clean = (torch.rand(B, device=device, generator=gen) < cfg.id_clean_share).repeat(3)[:, None, None, None]
            degraded = torch.where(clean, both, degraded)
        degraded = identity_input(degraded)
        with torch.no_grad():
            _, feats_in = sface.features(degraded[:B])
        emb, feats = sface.features(degraded[B:])
        emb_hat, emb_a = emb[:B], emb[B:]
        l_id = L.identity_hinge(z_t, emb_a, cfg.id_margin) + L.identity_hinge(z_t, emb_hat, cfg.id_margin)
        l_to = (1 - F.cosine_similarity(z_cond[use], emb_hat[use], dim=1)).mean() if use.any() else emb_hat.new_zeros(())
        l_ifsr = L.ifsr(feats_in, [f[:B] for f in feats], cfg.ifsr_scales)
        l_low = L.low_pass_l1(x_hat, target, cfg.rec_low_factor)
        # Inside the ellipse a donor's pixels and edges cannot be predicted from its identity alone
        # (L1 to them blurs, L1 to X_in's keeps X_in's identity): there, donor-guided samples keep
        # only the low-pass target and X_in's amount of fine detail; with free_inner, every sample.
        inner = None
        if cfg.free_inner:
            inner = G.ellipse.expand(B, -1, -1, -1)
        elif pool is not None:
            inner = use[:, None, None, None] * G.ellipse
        l_rec = L.weighted_l1(x_hat, target, None if inner is None else 1 - inner + cfg.w_donor_rec * inner)
        l_hf = L.high_freq_l1(x_hat, target, None if inner is None else 1 - inner)
        if inner is not None and not (pool is not None and cfg.w_donor_rec > 0):  # no full target inside
            l_hf = l_hf + L.detail_energy_l1(x_hat, x_in, inner)
        l_mask = F.relu(m - G.ellipse).mean()
        l_adv = L.g_nonsaturating(D(x_hat))
        w_id = cfg.w_id * min(1.0, step / cfg.id_warmup) if cfg.id_warmup else cfg.w_id
        loss_g = (w_id * l_id + cfg.w_ifsr * l_ifsr + cfg.w_rec_low * l_low + cfg.w_rec * l_rec + cfg.w_hf * l_hf
                  + cfg.w_mask * l_mask + cfg.w_adv * l_adv + cfg.w_id_to * l_to)
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        if G_ema is not None:
            with torch.no_grad():
                for pe, p in zip(G_ema.parameters(), G.parameters()):
                    pe.lerp_(p, 1 - cfg.ema)
        D.requires_grad_(True)
        step += 1
        bar.update(1)
        over_time = out_of_time(t0, cfg.time_limit, world, device)

        if not main:
            if over_time:
                break
            continue
        row = {"step": step, "time": round(time.time() - t0, 1), "lr": lr, "loss_g": loss_g.item(), "id": l_id.item(),
               "id_to": l_to.item(), "ifsr": l_ifsr.item(), "rec_low": l_low.item(), "rec": l_rec.item(), "hf": l_hf.item(), "mask": l_mask.item(),
               "adv": l_adv.item(), "loss_d": loss_d.item(), "r1": r1.item()}
        if step % 10 == 0:
            bar.set_postfix(id=f"{row['id']:.3f}", ifsr=f"{row['ifsr']:.3f}", d=f"{row['loss_d']:.2f}")
        if val is not None and (step % cfg.val_every == 0 or step == cfg.steps):
            row.update(quick_validate(G_out, sface, val, detector, dlib))
            log.info("step %d %s", step, {k: round(v, 3) for k, v in row.items() if k.startswith("val")})
        if step % 10 == 0 or step == cfg.steps or over_time or any(k.startswith("val") for k in row):
            csv_log.write(row)
        if step % cfg.sample_every == 0:
            sample_grid(G_out, fixed_x, fixed_z, out / f"sample_{step:07d}.png")
        if step % cfg.save_every == 0:  # the last step's save comes after the loop
            _save(out, G, D, opt_g, opt_d, step, cfg.keep_generators, G_ema, counterfactual)
        if over_time:
            log.info("time limit reached at step %d", step)
            break
    bar.close()
    if main:
        _save(out, G, D, opt_g, opt_d, step, cfg.keep_generators, G_ema, counterfactual)
        csv_log.close()
    if world > 1:
        dist.destroy_process_group()
    return out / "generator.safetensors"


def _save(out: Path, G, D, opt_g, opt_d, step: int, keep: bool = False, G_ema=None, counterfactual: bool = True) -> None:
    """`counterfactual`: the generator moves away from the identity it is given (Eq. 4 with X_t's own
    identity as the condition); mostly donor-guided training makes it render the identity given."""
    save_checkpoint(out / "checkpoint.safetensors", G, D, step, ema=G_ema)
    save_optim(out / "optim.safetensors", {"G": opt_g, "D": opt_d})
    G_out = G_ema if G_ema is not None else G
    meta = {"step": step, "counterfactual": int(counterfactual)}
    save_generator(G_out, out / "generator.safetensors", extra=meta)
    if keep:
        save_generator(G_out, out / f"generator_{step:07d}.safetensors", extra=meta)
