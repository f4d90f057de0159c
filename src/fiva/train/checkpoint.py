"""Resumable training checkpoints in safetensors (no pickles).

checkpoint.safetensors: generator ("G.") and discriminator ("D.") weights, and the generator's moving
average ("E.") when training keeps one (fp16 by default: what resuming needs, compactly), with the
step and the generator config in the metadata.
optim.safetensors: Adam moments (bf16: half the size, enough range for second moments), optional:
training may restart them.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

log = logging.getLogger(__name__)


def _atomic_save(tensors: dict, path: Path, metadata: dict) -> None:
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_checkpoint(path: Path, G, D, step: int, half: bool = True, ema=None) -> None:
    sd = {}
    for prefix, model in (("G.", G), ("D.", D)) + ((("E.", ema),) if ema is not None else ()):
        for k, v in model.state_dict().items():
            sd[prefix + k] = (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
    _atomic_save(sd, path, {"step": str(step), "config": json.dumps(asdict(G.cfg))})


def load_checkpoint(path: Path, G, D) -> int:
    sd = load_file(str(path))
    for prefix, model in (("G.", G), ("D.", D)):
        _load_into(model, {k[len(prefix):]: v.float() for k, v in sd.items() if k.startswith(prefix)}, path)
    with safe_open(str(path), "pt") as f:
        return int((f.metadata() or {}).get("step", 0))


def load_ema(path: Path, model) -> bool:
    """Load the generator's moving average ("E.") into `model`; False if the checkpoint has none."""
    sd = load_file(str(path))
    own = {k[2:]: v.float() for k, v in sd.items() if k.startswith("E.")}
    if own:
        _load_into(model, own, path)
    return bool(own)


def _load_into(model, own: dict, path: Path) -> None:
    """Strict loading, except that weights a model has grown since the checkpoint (its
    `grown_prefixes`, zero-initialised) may be missing."""
    grown = getattr(model, "grown_prefixes", ())
    missing, unexpected = model.load_state_dict(own, strict=False)
    if unexpected or any(not k.startswith(grown) for k in missing):
        model.load_state_dict(own)  # raises with the full list of mismatched keys
    if missing:
        log.info("%s: %d weights it lacks (%s) keep their initial values", path, len(missing), ", ".join(sorted({k.split(".")[0] for k in missing})))


def save_optim(path: Path, optims: dict[str, torch.optim.Optimizer]) -> None:
    sd = {}
    for name, opt in optims.items():
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                v = torch.as_tensor(v).detach()
                sd[f"{name}.{i}.{k}"] = (v.float() if k == "step" else v.bfloat16()).cpu().contiguous()
    _atomic_save(sd, path, {})


def load_optim(path: Path, optims: dict[str, torch.optim.Optimizer]) -> None:
    sd = load_file(str(path))
    for name, opt in optims.items():
        state = opt.state_dict()
        params = [p for g in state["param_groups"] for p in g["params"]]
        new = {}
        for i in params:
            keys = {k.split(".", 2)[2]: v.float() for k, v in sd.items() if k.startswith(f"{name}.{i}.")}
            if keys:
                new[i] = keys
        state["state"] = new
        opt.load_state_dict(state)
