"""The refiner (experimental; `fiva train refiner`): its file, its training loop, and that its
correction lands on the drawing alone."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import needs_dlib

from fiva.models.refiner import Refiner, RefinerConfig, load_refiner, save_refiner


def test_a_fresh_refiner_changes_nothing_and_its_file_round_trips(tmp_path):
    x = torch.rand(2, 3, 112, 112) * 2 - 1
    m = Refiner().eval()
    assert torch.equal(m(x), x)  # starts as the identity map
    torch.nn.init.normal_(m.out.weight, std=0.05)
    save_refiner(m, tmp_path / "r.safetensors", {"step": 3})
    with torch.no_grad():
        assert torch.allclose(load_refiner(tmp_path / "r.safetensors")(x), m(x), atol=2e-2)  # fp16 weights
    from fiva.models.detector import FakeDetector, save_detector

    save_detector(FakeDetector(), tmp_path / "d.safetensors")
    with pytest.raises(ValueError, match="not a fiva refiner"):
        load_refiner(tmp_path / "d.safetensors")


def test_a_coarse_refiners_correction_has_nothing_finer_than_its_grid():
    m = Refiner(RefinerConfig(coarse=4)).eval()
    torch.nn.init.normal_(m.out.weight, std=0.5)
    with torch.no_grad():
        c = m.correction(torch.rand(1, 3, 112, 112) * 2 - 1)
        fine = Refiner().eval()
        fine.load_state_dict(m.state_dict())
        f = fine.correction(torch.rand(1, 3, 112, 112) * 2 - 1)
    jump = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean()  # noqa: E731  (pixel-to-pixel change)
    assert jump(c) < 0.3 * jump(f)


def test_a_short_refiner_run_trains_and_writes_what_it_learned(tmp_path):
    """Synthetic pairs: smooth 'faces' (real) and the same with a dark streak (drawn)."""
    import cv2

    from fiva.train.refiner import RefinerTrainConfig, train_refiner

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    xt = np.stack([cv2.resize(rng.integers(60, 200, (8, 8, 3)).astype(np.uint8), (112, 112), interpolation=cv2.INTER_CUBIC)
                   for _ in range(24)])
    xc = xt.copy()
    xc[:, 50:53, 20:92] //= 3
    names = [f"p{i % 12}/p{i % 12}_{i:04d}.jpg" for i in range(24)]
    cfg = RefinerTrainConfig(pairs="synthetic", out=str(tmp_path), steps=6, batch=4, val_share=0.2, log_every=1000, device="cpu")
    path = train_refiner(cfg, data=(xt, xc, names))
    from fiva.weights import metadata

    meta = metadata(path)
    assert meta["kind"] == "fiva refiner" and meta["step"] == "6"
    assert float(meta["heldout_mean_correction"]) > 0  # it changed the drawings
    assert -1 <= float(meta["heldout_sface_cos_refined"]) <= 1
    assert (tmp_path / "samples.png").is_file() and (tmp_path / "log.csv").read_text().count("\n") == 7
    assert not torch.equal(load_refiner(path).out.weight, torch.zeros_like(Refiner().out.weight))


@needs_dlib
def test_the_correction_lands_on_what_the_drawing_covers_faded_in_from_its_edge(bank, astronaut, astronaut_face):
    from fiva.anonymize.anchor_face import AnchorFaceRenderer
    from fiva.anonymize.refine import refine_drawing

    _, target = astronaut_face
    drawing = AnchorFaceRenderer(bank).draw(astronaut, target, 3)
    before = drawing.patch.copy()
    frame = astronaut.copy()
    m = Refiner().eval()
    torch.nn.init.constant_(m.out.bias, 0.2)  # brightens everything by 0.5 tanh(0.2) x 127.5: 13 levels
    refine_drawing(m, frame, drawing, target)
    assert np.array_equal(frame, astronaut)  # the frame is left as it was
    change = drawing.patch.astype(int) - before
    covered = drawing.covered
    # pasted, nothing outside what the drawing covers changed
    out = astronaut.copy()
    drawing.paste(out)
    ref = astronaut.copy()
    x0, y0, x1, y1 = drawing.box
    ref[y0:y1, x0:x1][covered] = before[covered]
    diff = out.astype(int) - ref
    where = np.zeros(astronaut.shape[:2], bool)
    where[y0:y1, x0:x1] = covered
    assert np.abs(diff[~where]).max() == 0 and np.abs(diff[where]).max() > 0
    import cv2

    inner = cv2.erode(covered.astype(np.uint8), np.ones((31, 31), np.uint8)) > 0
    edge = covered & ~cv2.erode(covered.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert np.median(change[inner]) >= 12 and np.median(change[edge]) < 4
