"""What the generator's and the attack's training loops share: process set-up (one process or
torchrun/DDP), the aligned-crop data, resuming, DDP wrapping and the D step."""
from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from . import losses as L
from .checkpoint import load_checkpoint, load_optim
from .data import crop_pack_for, load_pack

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """"auto": cuda where there is a GPU, else cpu; any other name as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def setup_distributed(device: str) -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(device)
    if world > 1:
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
        if device == "cuda":
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return rank, world, torch.device("cuda", local)
    return rank, world, torch.device(device)


def start_run(device: str, out: Path, seed: int) -> tuple[int, int, torch.device, torch.Generator]:
    """Process rank, world size, device and this rank's random generator; the output folder made."""
    rank, world, dev = setup_distributed(device)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed + rank)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return rank, world, dev, torch.Generator(device=dev).manual_seed(seed + 1000 * rank)


def load_crops(data: str, size: int, out: Path, rank: int, world: int, device: torch.device, sources: bool = False):
    """The aligned crops of a folder or pack (rank 0 aligns and caches them once; the others wait),
    as a uint8 tensor N,S,S,3 on `device` (and, with `sources`, the image each came from)."""
    cache = Path(os.environ.get("FIVA_DATA_CACHE", out / "cache"))
    pack = crop_pack_for(data, size, cache) if rank == 0 else None
    if world > 1:
        holder = [str(pack)]
        dist.broadcast_object_list(holder)
        pack = Path(holder[0])
    crops, names = load_pack(pack)
    crops = torch.from_numpy(crops).to(device)
    return (crops, names) if sources else crops


def resume_path(resume: str | None, out: Path) -> Path | None:
    """The checkpoint a run resumes from: `resume`, else OUT/checkpoint.safetensors if present."""
    ckpt = out / "checkpoint.safetensors"
    return Path(resume) if resume else (ckpt if ckpt.exists() else None)


def resume_training(resume: str | None, out: Path, model, D, opt_model, opt_d) -> int:
    """Load `resume` (default: OUT/checkpoint.safetensors if present) and its optimizer moments when
    they fit; returns the step to go on from (0 for a fresh run)."""
    path = resume_path(resume, out)
    if not path:
        return 0
    step = load_checkpoint(path, model, D)
    optim_file = path.with_name("optim.safetensors")
    if optim_file.exists():
        try:
            load_optim(optim_file, {"G": opt_model, "D": opt_d})
        except Exception as e:  # moments may restart; weights are what matter
            log.warning("optimizer state not restored (%s); Adam moments restart", e)
    log.info("resumed from %s at step %d", path, step)
    return step


def wrap_ddp(world: int, device: torch.device, *models):
    """The models as DDP modules under torchrun (world > 1), else unchanged."""
    if world == 1:
        return models
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [device.index] if device.type == "cuda" else None
    return tuple(DDP(m, device_ids=ids) for m in models)


def discriminator_step(D_train, opt_d, real: torch.Tensor, fake: torch.Tensor, r1: float, r1_every: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One non-saturating D update, with lazy R1 when `real` requires grad; returns (loss, R1)."""
    d_real = D_train(real)
    loss_d = L.d_nonsaturating(d_real, D_train(fake.detach()))
    pen = torch.zeros((), device=real.device)
    if real.requires_grad:
        pen = L.r1_penalty(d_real, real)
        loss_d = loss_d + r1 * r1_every * 0.5 * pen
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return loss_d, pen


class CsvLog:
    """Rows appended to a training run's CSV log. Resuming into a log written with other columns
    keeps that log's header (columns it lacks are left out, with a warning), so rows never shift."""

    def __init__(self, path: Path, extra_fields: tuple[str, ...] = ()):
        self.path, self.extra = Path(path), extra_fields
        self.fh = open(self.path, "a", newline="")
        self.writer = None

    def write(self, row: dict) -> None:
        if self.writer is None:
            fields = list(row) + [k for k in self.extra if k not in row]
            if self.fh.tell():
                with open(self.path, newline="") as f:
                    old = next(csv.reader(f), None)
                if old and old != fields:
                    missing = [k for k in fields if k not in old]
                    if missing:
                        log.warning("%s has no columns %s: not logged (start a new --out to log them)", self.path, ", ".join(missing))
                    fields = old
            self.writer = csv.DictWriter(self.fh, fieldnames=fields, extrasaction="ignore")
            if not self.fh.tell():
                self.writer.writeheader()
        self.writer.writerow(row)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def out_of_time(t0: float, limit: float, world: int, device: torch.device) -> bool:
    """Has the run's time limit passed? Agreed by all ranks (the first past the limit stops them
    all), so no rank stops alone and leaves the others waiting in a collective."""
    if not limit:
        return False
    over = time.time() - t0 > limit
    if world > 1:
        flag = torch.tensor([float(over)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        over = bool(flag.item())
    return over


def random_batch(crops: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """`n` random crops as B,3,S,S floats in [-1,1], half of them mirrored."""
    return random_batch_indexed(crops, n, gen)[0]


def random_batch_indexed(crops: torch.Tensor, n: int, gen: torch.Generator):
    """`random_batch`, also returning the crop indices and which were mirrored."""
    idx = torch.randint(len(crops), (n,), generator=gen, device=crops.device)
    flip = torch.rand(n, device=crops.device, generator=gen) < 0.5
    return as_batch(crops[idx], flip), idx, flip


def as_batch(crops: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """uint8 crops N,S,S,3 as N,3,S,S floats in [-1,1], mirrored where `flip`."""
    x = crops.permute(0, 3, 1, 2).float().div(127.5).sub(1)
    return torch.where(flip[:, None, None, None], x.flip(3), x)
