"""Pluggable face generators (--generator), any identity size, and face swapping (fiva swap)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from fiva import Anonymizer
from fiva.anonymize.anchors import AnchorSpace, build_anchor_space
from fiva.cli import main
from fiva.io import read_image, write_image
from fiva.models.registry import generator_names, load_face_generator, register_generator


class TinySwapper(nn.Module):
    """A stand-in third-party generator: 64-D identities from its own encoder, tints the face by z."""

    resolution = 96
    identity_dim = 64
    counterfactual = False

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(3 * 8 * 8, 64)
        self.tint = nn.Linear(64, 3)

    def identity_encoder(self, x):  # crops [B,3,112,112] in [-1,1] -> [B,64]
        return self.proj(nn.functional.adaptive_avg_pool2d(x, 8).flatten(1))

    def forward(self, x, z):
        x_a = (x + 0.5 * torch.tanh(self.tint(z))[:, :, None, None]).clamp(-1, 1)
        m = torch.ones_like(x[:, :1])
        return x_a, m, x_a


def test_registry_lists_builtins_and_refuses_unknown_names():
    assert {"fiva", "crop-blur", "crop-pixelate", "crop-mask"} <= set(generator_names())
    with pytest.raises(ValueError, match="unknown generator 'nope'"):
        load_face_generator("nope")
    g = load_face_generator("crop-mask")
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    x_a, m, x_hat = g(x, None)
    assert x_a.shape == x.shape and m.shape == (2, 1, 112, 112) and g.identity_dim is None
    assert torch.allclose(x_hat[:, :, 0, 0], x[:, :, 0, 0])  # corners are outside the face: kept


def test_baselines_through_the_generator_interface_change_only_the_face(astronaut):
    out = Anonymizer(generator="crop-mask", fallback="none", verify=False).anonymize_image(astronaut)
    assert not np.array_equal(out[150:260, 180:280], astronaut[150:260, 180:280])
    assert np.array_equal(out[400:, :], astronaut[400:, :])


def test_a_plugged_generator_with_64_d_identities_runs_with_itm_and_anchors(astronaut, tmp_path):
    register_generator("tiny-swapper", lambda model=None, device="cpu": TinySwapper())
    anchors = tmp_path / "anchors64.safetensors"
    AnchorSpace(build_anchor_space(np.random.default_rng(0).normal(size=(50, 64)), size=500)).save(anchors)
    anon = Anonymizer(generator="tiny-swapper", anchors=str(anchors), fallback="none", verify=False)
    out = anon.anonymize_image(astronaut)
    assert len(anon.itm) == 1 and anon.itm._t_id[0].shape == (64,)
    assert not np.array_equal(out, astronaut)
    with pytest.raises(ValueError, match="64-D"):  # the shipped 128-D anchors do not fit its encoder
        Anonymizer(generator="tiny-swapper")


def test_fiva_swap_writes_a_swapped_copy(tmp_path, astronaut):
    target = tmp_path / "target.png"
    write_image(target, astronaut)
    source = tmp_path / "source.png"
    write_image(source, astronaut[:, ::-1].copy())
    assert main(["swap", "--source", str(source), str(target), "--no-progress"]) == 0
    out = tmp_path / "target_swapped.png"
    assert out.is_file() and read_image(out).shape == astronaut.shape
    # the 112 px network still swaps on request
    assert main(["swap", "--source", str(source), str(target), "--generator", "fiva", "--no-progress", "--overwrite"]) == 0
    assert read_image(out).shape == astronaut.shape
    assert main(["swap", "--source", str(tmp_path / "missing.png"), str(target), "--no-progress", "--overwrite"]) == 2
