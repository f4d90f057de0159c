"""Shared fixtures: a public-domain face (skimage's astronaut), LFW when ../shared/data is present,
and a small video writer."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
LFW = SHARED / "lfw" / "images"

needs_lfw = pytest.mark.skipif(not LFW.is_dir(), reason="LFW not found at ../shared/data/lfw (real-face data)")


def have_dlib() -> bool:
    try:
        from fiva.faces.identity import DlibEvaluator

        DlibEvaluator()
        return True
    except Exception:
        return False


needs_dlib = pytest.mark.skipif(not have_dlib(), reason="dlib evaluator needs the [eval] extra")


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()  # 512x512 RGB, one face (public domain, NASA)


@pytest.fixture(scope="session")
def bank():
    """The shipped anchor-face bank."""
    from fiva.anonymize.face_bank import AnchorFaceBank
    from fiva.weights import DEFAULT_FACE_BANK

    return AnchorFaceBank.load(DEFAULT_FACE_BANK)


@pytest.fixture(scope="session")
def astronaut_face(astronaut):
    """The astronaut's detection and its 68 points [68,2]."""
    from fiva.faces import FaceDetector
    from fiva.faces.landmarks68 import Landmarker68

    d = FaceDetector()(astronaut)
    return d, Landmarker68()(astronaut, d.landmarks[:1])[0]


def lfw_image(name: str, n: int = 1) -> np.ndarray:
    from fiva.io import read_image

    return read_image(LFW / name / f"{name}_{n:04d}.jpg")


def make_video(path, frames, fps: int = 25, audio: bool = True, pts=None, sr: int = 44100):
    """Write RGB `frames` as H.264 (+ a mono AAC sine) at the given pts (1/fps units)."""
    pts = list(range(len(frames))) if pts is None else pts
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height = w, h
        vs.pix_fmt = "yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p"
        vs.codec_context.time_base = Fraction(1, fps)
        vs.options = {"preset": "ultrafast", "crf": "10"}
        if audio:
            aus = out.add_stream("aac", rate=sr)
            aus.layout = "mono"
        for frame, p in zip(frames, pts):
            f = av.VideoFrame.from_ndarray(frame, format="rgb24")
            f.pts, f.time_base = p, Fraction(1, fps)
            out.mux(vs.encode(f))
        out.mux(vs.encode(None))
        if audio:
            t = np.arange(sr * (pts[-1] + 1) // fps) / sr
            af = av.AudioFrame.from_ndarray((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None],
                                            format="fltp", layout="mono")
            af.sample_rate, af.pts = sr, 0
            out.mux(aus.encode(af))
            out.mux(aus.encode(None))
    return path


def inner_face_detail(x):
    """A fine checkerboard for crops like x [B,3,112,112]: zero mean over every 8x8 block, inside
    the core of the generator's inner-face ellipse only (its 14x14 low-pass is unchanged)."""
    import torch

    detail = torch.zeros_like(x)
    detail[..., 48:64, 40:72] = torch.tensor([[1.0, -1.0], [-1.0, 1.0]]).repeat(8, 16) * 0.3
    return detail
