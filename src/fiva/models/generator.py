"""The FIVA generator (paper Section 3.1).

An identity-conditioned encoder-decoder: encoder blocks downsample with stride-2 depthwise convs;
every encoder feature map is carried to the decoder by a skip connection; the identity vector is
broadcast over the bottleneck and concatenated (spatial size kept), followed by 1x1 "fully
connected" layers on the feature maps; the decoder upsamples with pixel shuffle and outputs an
image X_a and a mask m; X_â = m·X_a + (1-m)·X_t.

The mask is max(learned mask, a fixed soft ellipse over the inner face of the aligned crop): the
generator always owns the inner face, so "copy the input" is not a solution it can fall into (a
closed learned mask is an absorbing state in training).

Tensor layout: B,3,S,S float in [-1,1], RGB, aligned to the ArcFace template scaled to S;
identity z: B,128 (normalized inside).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .layers import DownBlock, UpBlock


@dataclass
class GeneratorConfig:
    resolution: int = 112
    channels: tuple[int, ...] = (32, 48, 96, 160, 256)  # stem, then one per stride-2 block
    id_dim: int = 128
    bottleneck_layers: int = 3
    ellipse: tuple[float, float, float, float] = (0.5, 0.56, 0.36, 0.46)  # cx, cy, rx, ry (fractions of S)
    ellipse_softness: float = 0.12
    # Identity also at every decoder scale (FiLM from z after each up-block, zero-initialised so a
    # trained bottleneck-only model grows into it unchanged): beyond the paper, which conditions the
    # bottleneck only, while the skips carry the original's identity to every scale.
    modulate: bool = False
    # The generator sees the inner-face ellipse of X_t only as its (S/f)x(S/f) low-pass (0 = the
    # full face, as in the paper): it cannot copy the identity-bearing detail, only invent it. A
    # face's own 14x14 band under the mean face's finer detail is matched by dlib at 0.61 (58% beyond
    # 0.6, landmark error 0.068; its 7x7 band: 0.70, 94%, 0.080), while its 28x28 band alone is
    # matched at 0.38 (scripts/identity_bands.py). Beyond the paper.
    inner_lowpass: int = 0
    # Inside the ellipse the generator sees, and starts from, a prior face instead of X_t: the
    # training faces' mean (its `prior` buffer, set by training and shipped with the weights),
    # colour-matched to X_t there. Of the inner face only its per-channel mean and spread (skin tone,
    # lighting) reach the generator. With the 7x7 low-pass instead, the generator's residual output
    # kept that band: the colour-matched mean face takes 99.0% of 200 held-out faces beyond dlib's
    # 0.6, the same plus the face's own 7x7 band only 96.5% (the lp16w generator: 97.0%). Beyond the paper.
    inner_prior: bool = False

    @staticmethod
    def named(name: str) -> "GeneratorConfig":
        if name in ("fiva-112", "default"):
            return GeneratorConfig()
        if name == "fiva-112-mod":
            return GeneratorConfig(modulate=True)
        if name == "fiva-112-lp8":
            return GeneratorConfig(inner_lowpass=8)
        wide = {"fiva-112-lp8w": 8, "fiva-112-lp16w": 16}  # a wider ellipse: to the brows and the chin, past the cheeks
        if name in wide:
            return GeneratorConfig(inner_lowpass=wide[name], ellipse=(0.5, 0.56, 0.40, 0.50), ellipse_softness=0.10)
        if name == "fiva-112-mf":  # the wider ellipse, seen only as the colour-matched mean face
            return GeneratorConfig(inner_prior=True, ellipse=(0.5, 0.56, 0.40, 0.50), ellipse_softness=0.10)
        if name == "fiva-256":
            return GeneratorConfig(resolution=256, channels=(32, 48, 96, 160, 256, 384))
        raise ValueError(f"unknown generator config '{name}' (known: fiva-112, fiva-112-mod, fiva-112-lp8, fiva-112-lp8w, fiva-112-lp16w, fiva-112-mf, fiva-256)")


def low_pass(x: torch.Tensor, factor: int) -> torch.Tensor:
    """x's (S/factor)x(S/factor) band, at x's size: average pooling, then bilinear up-sampling."""
    return F.interpolate(F.avg_pool2d(x, factor), size=x.shape[-2:], mode="bilinear", align_corners=False)


def colour_match(src: torch.Tensor, ref: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`src` with the per-channel mean and spread of `ref` inside `weight` (both B,3,S,S; weight
    B|1,1,S,S): the donor takes the face's skin tone and lighting."""
    w = weight / weight.sum((2, 3), keepdim=True).clamp_min(1e-6)
    mu_s, mu_r = (src * w).sum((2, 3), keepdim=True), (ref * w).sum((2, 3), keepdim=True)
    sd_s = ((src - mu_s) ** 2 * w).sum((2, 3), keepdim=True).sqrt()
    sd_r = ((ref - mu_r) ** 2 * w).sum((2, 3), keepdim=True).sqrt()
    return ((src - mu_s) / (sd_s + 1e-4) * sd_r + mu_r).clamp(-1, 1)


def face_ellipse(size: int, cfg: GeneratorConfig) -> torch.Tensor:
    """A [1,1,S,S] soft ellipse over the inner face of an aligned crop: 1 inside, 0 outside."""
    cx, cy, rx, ry = cfg.ellipse
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    r = torch.sqrt(((xs / size - cx) / rx) ** 2 + ((ys / size - cy) / ry) ** 2)
    return torch.clamp((1 + cfg.ellipse_softness - r) / (2 * cfg.ellipse_softness), 0, 1)[None, None]


class EncoderDecoder(nn.Module):
    """The shared U-Net body: stem, stride-2 depthwise encoder blocks, 1x1 bottleneck layers (taking
    `extra` more input channels, e.g. the identity), pixel-shuffle decoder with all skips, and a
    zero-initialised 3x3 head of `out_ch` channels."""

    def __init__(self, cfg: GeneratorConfig, extra: int, out_ch: int):
        super().__init__()
        self.cfg = cfg
        ch = cfg.channels
        self.stem = nn.Sequential(nn.Conv2d(3, ch[0], 3, 1, 1), nn.LeakyReLU(0.2))
        self.down = nn.ModuleList(DownBlock(a, b) for a, b in zip(ch[:-1], ch[1:]))
        layers: list[nn.Module] = []
        c = ch[-1] + extra
        for _ in range(cfg.bottleneck_layers):
            layers += [nn.Conv2d(c, ch[-1], 1), nn.LeakyReLU(0.2)]
            c = ch[-1]
        self.bottleneck = nn.Sequential(*layers)
        self.up = nn.ModuleList(UpBlock(ch[i + 1], ch[i], ch[i]) for i in reversed(range(len(ch) - 1)))
        for mod in self.modules():  # variance-preserving init: keeps the bottleneck (and z) audible
            if isinstance(mod, nn.Conv2d) and not getattr(mod, "_icnr", False):
                nn.init.kaiming_normal_(mod.weight, a=0.2)
                nn.init.zeros_(mod.bias)
        self.head = nn.Conv2d(ch[0], out_ch, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h = self.stem(x)
        skips = [h]
        for block in self.down:
            h = block(h)
            skips.append(h)
        return h, skips

    def decode(self, h: torch.Tensor, skips: list[torch.Tensor], mods: list[torch.Tensor] | None = None) -> torch.Tensor:
        """`mods`: optional per-block [B,2C] scale and shift (FiLM) applied after each up-block."""
        for i, (block, skip) in enumerate(zip(self.up, reversed(skips[:-1]))):
            h = block(h, skip)
            if mods is not None:
                g, b = mods[i][:, :, None, None].chunk(2, 1)
                h = h * (1 + g) + b
        return self.head(h)


class FIVAGenerator(EncoderDecoder):
    def __init__(self, cfg: GeneratorConfig | None = None):
        cfg = cfg or GeneratorConfig()
        super().__init__(cfg, cfg.id_dim, 4)
        with torch.no_grad():
            self.head.bias[3] = -2.0  # learned mask starts mostly closed; the ellipse owns the face
        self.register_buffer("ellipse", face_ellipse(cfg.resolution, cfg), persistent=False)
        if cfg.inner_prior:  # [1,3,S,S] in [-1,1]; zero until training sets it (train/donors.py: mean_face)
            self.register_buffer("prior", torch.zeros(1, 3, cfg.resolution, cfg.resolution))
        if cfg.modulate:  # one FiLM per up-block, from the decoder's coarsest block to its finest
            outs = [cfg.channels[i] for i in reversed(range(len(cfg.channels) - 1))]
            self.film = nn.ModuleList(nn.Linear(cfg.id_dim, 2 * c) for c in outs)
            for lin in self.film:
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def conceal(self, x_t: torch.Tensor) -> torch.Tensor:
        """X_t as the generator sees it: inside the ellipse only its low-pass (cfg.inner_lowpass)
        or only the prior face in its colours (cfg.inner_prior)."""
        e = self.ellipse.to(x_t.dtype)
        if self.cfg.inner_prior:
            return e * colour_match(self.prior.to(x_t.dtype).expand_as(x_t), x_t, e) + (1 - e) * x_t
        f = self.cfg.inner_lowpass
        if not f:
            return x_t
        return e * low_pass(x_t, f) + (1 - e) * x_t

    # Weights a checkpoint of a smaller model may lack: they start at zero (the same function; the
    # prior face is set by training).
    grown_prefixes = ("film.", "prior")

    # The face-generator interface (models/registry.py).
    identity_encoder = None  # fiva's SFace
    counterfactual = True  # trained (Eq. 4) to move away from the identity it is conditioned on

    @property
    def identity_dim(self) -> int:
        return self.cfg.id_dim

    def forward(self, x_t: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (X_a, m, X_â): the generated face, the blending mask [B,1,S,S] and the blend."""
        x_in = self.conceal(x_t)
        h, skips = self.encode(x_in)
        z = F.normalize(z, dim=1) * z.shape[1] ** 0.5  # unit-variance entries, like the features
        mods = [lin(z) for lin in self.film] if self.cfg.modulate else None
        z = z[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        out = self.decode(self.bottleneck(torch.cat([h, z], 1)), skips, mods)
        x_a = (x_in + out[:, :3]).clamp(-1, 1)  # residual: starts as the input, learns the change
        m = torch.maximum(torch.sigmoid(out[:, 3:]), self.ellipse.to(out.dtype))
        return x_a, m, m * x_a + (1 - m) * x_t


def save_generator(model: nn.Module, path: str | Path, half: bool = True, extra: dict | None = None) -> None:
    """Save weights as safetensors with the config in the metadata (fp16 by default: half the size)."""
    sd = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
    meta = {"config": json.dumps(asdict(model.cfg))}
    meta.update({k: str(v) for k, v in (extra or {}).items()})
    save_file(sd, str(path), metadata=meta)


def load_generator(path: str | Path, device: str | torch.device = "cpu", cls: type | None = None) -> nn.Module:
    """Load weights saved by `save_generator` into `cls` (default FIVAGenerator) built from their config."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    raw = json.loads(meta.get("config", "{}"))
    cfg = GeneratorConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    model = (cls or FIVAGenerator)(cfg)
    sd = {k: v.float() for k, v in load_file(str(path)).items()}
    model.load_state_dict(sd)
    if "counterfactual" in meta:  # how it was trained (train/generator.py): away from z, or towards it
        model.counterfactual = meta["counterfactual"] == "1"
    return model.eval().to(device)
