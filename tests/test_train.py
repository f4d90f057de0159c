"""A whole tiny training of the generator through the CLI: two steps, resume, and DDP under torchrun."""
import csv
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from safetensors import safe_open

from conftest import inner_face_detail
from fiva.cli import main
from fiva.io import write_image
from fiva.models import load_generator


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory, astronaut):
    d = tmp_path_factory.mktemp("faces")
    variants = [astronaut, astronaut[:, ::-1], cv2.resize(astronaut, (300, 300)), astronaut[20:480, 10:500]]
    for i, img in enumerate(variants):
        write_image(d / "person" / f"face_{i}.png", np.ascontiguousarray(img))
    (d / "person" / "notes.txt").write_text("not an image")
    return d


def _step(path):
    with safe_open(str(path), "pt") as f:
        return int(f.metadata()["step"])


def test_train_two_steps_then_resume(face_folder, tmp_path):
    out = tmp_path / "run"
    args = ["train", "generator", "--data", str(face_folder), "--out", str(out), "--batch", "2",
            "--sample-every", "1", "--save-every", "1", "--no-progress"]
    assert main(args + ["--steps", "2", "--val-data", str(face_folder), "--val-every", "2"]) == 0
    for f in ("checkpoint.safetensors", "optim.safetensors", "generator.safetensors", "log.csv", "sample_0000002.png"):
        assert (out / f).is_file(), f
    assert _step(out / "checkpoint.safetensors") == 2
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert rows[-1]["step"] == "2" and float(rows[-1]["val_detect"]) >= 0 and np.isfinite(float(rows[-1]["loss_g"]))
    g = load_generator(out / "generator.safetensors")
    assert g.cfg.resolution == 112 and g.counterfactual is True  # Eq. 4: away from the identity it is given
    assert main(args + ["--steps", "3"]) == 0  # resumes from OUT/checkpoint.safetensors
    assert _step(out / "checkpoint.safetensors") == 3


def test_moving_average_generator_is_what_gets_saved_and_resumed(face_folder, tmp_path):
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "ema"
    args = ["train", "generator", "--data", str(face_folder), "--out", str(out), "--batch", "2", "--sample-every", "100",
            "--save-every", "1", "--no-progress", "--ema", "0.5", "--lr", "1e-2"]
    assert main(args + ["--steps", "2"]) == 0
    ck = load_file(str(out / "checkpoint.safetensors"))
    saved = load_file(str(out / "generator.safetensors"))
    key = "head.weight"  # zero at init, so the trained head and its average differ
    assert not torch.equal(ck["G." + key], ck["E." + key])
    assert torch.equal(saved[key], ck["E." + key])  # the shipped-style weights are the average
    assert main(args + ["--steps", "3"]) == 0
    ck3 = load_file(str(out / "checkpoint.safetensors"))
    # resumed, not restarted: E3 = (E2 + G3) / 2 at decay 0.5
    assert torch.allclose(ck3["E." + key].float(), (ck["E." + key].float() + ck3["G." + key].float()) / 2, atol=2e-3)


def test_concealed_inner_face_generator_trains_and_keeps_its_concealment_when_loaded(face_folder, tmp_path):
    import torch

    out = tmp_path / "lp8"
    assert main(["train", "generator", "--data", str(face_folder), "--out", str(out), "--batch", "2", "--steps", "2", "--no-progress",
                 "--sample-every", "100", "--model", "fiva-112-lp8", "--free-inner", "--rec-low-factor", "8"]) == 0
    G = load_generator(out / "generator.safetensors")
    assert G.cfg.inner_lowpass == 8  # what `fiva anonymize --model` builds from these weights
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    detail = inner_face_detail(x)
    z = torch.randn(1, 128)
    with torch.no_grad():
        assert torch.allclose(G(x, z)[0], G(x + detail, z)[0], atol=1e-4)  # float rounding only (test_models' low-pass check)
    assert np.isfinite(float(list(csv.DictReader(open(out / "log.csv")))[-1]["loss_g"]))


def test_train_rejects_a_folder_without_images(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["train", "generator", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty" in err[0] and "no images found" in err[0]


@pytest.mark.parametrize("model,faces,says", [("fiva-112", "2", "needs a model with a prior face"),
                                               ("fiva-112-mf", "99999", "needs 1 to")])
def test_train_rejects_a_prior_it_cannot_draw_before_starting(face_folder, tmp_path, capsys, model, faces, says):
    assert main(["train", "generator", "--data", str(face_folder), "--out", str(tmp_path / "o"), "--steps", "1",
                 "--no-progress", "--model", model, "--prior-faces", faces]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # beside the alignment's progress bar
    assert len(err) == 1 and err[0].startswith("fiva: error:") and says in err[0]
    assert not list((tmp_path / "o").glob("*.safetensors"))  # nothing trained or saved


@pytest.mark.slow
def test_train_runs_under_torchrun_with_ddp(face_folder, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", FIVA_DATA_CACHE=str(tmp_path / "cache"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "fiva.cli", "train", "generator", "--data", str(face_folder), "--out", str(out), "--batch", "2",
           "--steps", "2", "--no-progress", "--sample-every", "100"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _step(out / "checkpoint.safetensors") == 2
    # A time limit stops every rank together (one rank leaving alone used to hang the others).
    r = subprocess.run(cmd[:-5] + ["--steps", "100000", "--time-limit", "2", "--no-progress", "--sample-every", "100000"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 2 < _step(out / "checkpoint.safetensors") < 100000


def test_train_attack_three_steps_learns_from_black_box_pairs_and_resumes(face_folder, tmp_path):
    import torch

    from fiva.models.attack import load_attack

    out = tmp_path / "attack"
    args = ["train", "attack", "--data", str(face_folder), "--out", str(out), "--batch", "2", "--sample-every", "3",
            "--save-every", "3", "--no-progress"]
    assert main(args + ["--steps", "3"]) == 0
    for f in ("checkpoint.safetensors", "attack.safetensors", "log.csv", "sample_0000003.png"):
        assert (out / f).is_file(), f
    R = load_attack(out / "attack.safetensors")
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    assert not torch.allclose(R(x), x)  # three steps moved it off the identity map it starts as
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert rows[-1]["step"] == "3" and np.isfinite(float(rows[-1]["rec"]))
    assert main(args + ["--steps", "4"]) == 0
    assert _step(out / "checkpoint.safetensors") == 4


def test_donor_pool_draws_the_nearest_faces_of_other_people_only():
    import torch

    from fiva.models.generator import GeneratorConfig, face_ellipse
    from fiva.train.donors import donor_pool, person_ids

    g = torch.Generator().manual_seed(0)
    base = torch.randint(0, 256, (3, 112, 112, 3), generator=g).to(torch.uint8)
    near = (base.int() + torch.randint(-8, 9, base.shape, generator=g)).clamp(0, 255).to(torch.uint8)
    crops = torch.cat([base, near, base])  # 0-2 person a, 3-5 person b (close to 0-2), 6-8 person a again
    persons = person_ids([f"{p}/{i}.jpg" for i, p in enumerate("aaabbbaaa")])
    pool = donor_pool(crops, persons, face_ellipse(112, GeneratorConfig()), pool=3)
    assert pool.shape == (9, 3)
    for i in range(9):
        assert all(persons[j] != persons[i] for j in pool[i].tolist())
    assert pool[0, 0] == 3 and pool[4, 0] in (1, 7)  # the structurally nearest other person comes first
    with pytest.raises(ValueError, match="two people"):
        donor_pool(crops[:3], persons[:3], face_ellipse(112, GeneratorConfig()))


def test_colour_match_gives_the_donor_the_faces_tone_inside_the_mask():
    import torch

    from fiva.train.donors import colour_match

    g = torch.Generator().manual_seed(1)
    src, ref = torch.rand(2, 3, 32, 32, generator=g) * 0.5 - 0.6, torch.rand(2, 3, 32, 32, generator=g) * 0.3 + 0.2
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    out = colour_match(src, ref, mask)
    inside = lambda t: t[..., 8:24, 8:24]  # noqa: E731
    assert torch.allclose(inside(out).mean((2, 3)), inside(ref).mean((2, 3)), atol=1e-4)
    assert torch.allclose(inside(out).std((2, 3), unbiased=False), inside(ref).std((2, 3), unbiased=False), atol=1e-3)


def test_donor_guided_training_runs_and_logs_the_pull_towards_the_donor(face_folder, tmp_path):
    import shutil

    two = tmp_path / "two"
    shutil.copytree(face_folder / "person", two / "a")
    for f in (face_folder / "person").glob("*.png"):  # a second "person": the faces darker
        write_image(two / "b" / f.name, (cv2.imread(str(f))[:, :, ::-1] * 0.6).astype(np.uint8))
    out = tmp_path / "donor"
    assert main(["train", "generator", "--data", str(two), "--out", str(out), "--batch", "2", "--steps", "2",
                 "--no-progress", "--sample-every", "100", "--donor-share", "1", "--w-id-to", "1",
                 "--donor-mix", "2", "--w-donor-rec", "1", "--donor-mean-face", "0.5", "--model", "fiva-112-mf", "--prior-faces", "2", "--ema", "0.9"]) == 0
    rows = list(csv.DictReader(open(out / "log.csv")))
    assert 0 < float(rows[-1]["id_to"]) <= 2 and np.isfinite(float(rows[-1]["loss_g"]))
    import torch

    from fiva.models.generator import GeneratorConfig, load_generator

    G = load_generator(out / "generator.safetensors")
    assert G.cfg == GeneratorConfig.named("fiva-112-mf")
    assert G.prior.abs().mean() > 0.1 and torch.allclose(G.prior, G.prior.flip(-1), atol=1e-3)  # the mean face, shipped
    # A resume with another prior: the saved (moving-average) generator carries the new one.
    assert main(["train", "generator", "--data", str(two), "--out", str(out), "--batch", "2", "--steps", "3", "--no-progress",
                 "--sample-every", "100", "--donor-share", "1", "--donor-mix", "2", "--donor-mean-face", "0.5",
                 "--model", "fiva-112-mf", "--prior-faces", "3", "--prior-seed", "1", "--ema", "0.9"]) == 0
    from safetensors import safe_open

    G3 = load_generator(out / "generator.safetensors")
    with safe_open(str(out / "checkpoint.safetensors"), "pt") as f:
        trained = f.get_tensor("G.prior").float()
    assert not torch.allclose(G3.prior, G.prior, atol=1e-2) and torch.allclose(G3.prior, trained, atol=1e-3)
    assert G.counterfactual is False  # trained to render the identity it is given: `fiva swap` gives it the source


def test_mean_face_is_the_symmetric_average_of_all_crops():
    import torch

    from fiva.train.donors import mean_face

    g = torch.Generator().manual_seed(2)
    crops = torch.randint(0, 256, (5, 16, 16, 3), generator=g).to(torch.uint8)
    m = mean_face(crops, chunk=2)  # chunks must add up to the whole
    avg = crops.double().mean(0).permute(2, 0, 1)[None].div(127.5).sub(1).float()
    assert m.shape == (1, 3, 16, 16)
    assert torch.allclose(m, m.flip(-1))
    assert torch.allclose(m, (avg + avg.flip(-1)) / 2, atol=1e-5)


def test_resuming_into_a_log_with_other_columns_keeps_its_rows_aligned(tmp_path):
    from fiva.train.common import CsvLog

    log = CsvLog(tmp_path / "log.csv")
    log.write({"step": 1, "loss": 0.5})
    log.close()
    log = CsvLog(tmp_path / "log.csv", extra_fields=("val",))
    log.write({"step": 2, "new": 7, "loss": 0.25})
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "log.csv")))
    assert rows == [{"step": "1", "loss": "0.5"}, {"step": "2", "loss": "0.25"}]


def test_prior_face_is_the_mean_of_a_seeded_draw_of_faces():
    import torch

    from fiva.train.donors import mean_face, prior_face

    crops = torch.randint(0, 256, (6, 16, 16, 3), generator=torch.Generator().manual_seed(3)).to(torch.uint8)
    assert torch.equal(prior_face(crops), mean_face(crops))
    a, b = prior_face(crops, 2, seed=0), prior_face(crops, 2, seed=0)
    assert torch.equal(a, b) and not torch.allclose(a, mean_face(crops))  # reproducible, and not all faces
    assert any(torch.allclose(a, mean_face(crops[[i, j]])) for i in range(6) for j in range(6) if i < j)
    for bad in (7, -1):
        with pytest.raises(ValueError, match=f"{bad} faces"):
            prior_face(crops, bad)


def test_attack_pairs_are_what_fiva_anonymize_draws_and_train_r(face_folder, tmp_path):
    """`fiva train pairs` stores (original, anchor-face output) aligned by the original's points,
    generated faces only; `fiva train attack --pairs` trains R on them (and on real faces kept as they are)."""
    import torch

    from fiva.models.attack import load_attack
    from fiva.train.pairs import load_pairs

    pairs = tmp_path / "pairs"
    assert main(["train", "pairs", "--data", str(face_folder), "--out", str(pairs), "--max-pairs", "2", "--no-progress"]) == 0
    x_t, x_c, names = load_pairs(pairs)
    assert x_t.shape == x_c.shape == (2, 112, 112, 3) and x_t.dtype == np.uint8
    assert all(n.startswith("person/") for n in names)
    # the face was redrawn (not pixelated, not untouched), the background around it kept
    inner = np.abs(x_t[:, 40:90, 30:82].astype(int) - x_c[:, 40:90, 30:82]).mean((1, 2, 3))
    assert (inner > 8).all()
    assert np.abs(x_t[:, :6].astype(int) - x_c[:, :6]).mean() < 3
    assert main(["train", "pairs", "--data", str(face_folder), "--out", str(pairs), "--max-pairs", "3", "--no-progress"]) == 0
    assert len(load_pairs(pairs)[2]) == 3 and len(set(load_pairs(pairs)[2])) == 3  # resumed, no image twice
    out = tmp_path / "attack"
    assert main(["train", "attack", "--pairs", str(pairs), "--out", str(out), "--batch", "2", "--steps", "2",
                 "--real-share", "0.5", "--save-every", "2", "--no-progress"]) == 0
    with safe_open(str(out / "attack.safetensors"), "pt") as f:
        meta = f.metadata()
    assert "anchor-face" in meta["trained_against"] and len(meta["face_bank_sha256"]) == 64
    R = load_attack(out / "attack.safetensors")
    x = torch.rand(1, 3, 112, 112) * 2 - 1
    assert not torch.allclose(R(x), x)
