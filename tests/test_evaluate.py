"""`fiva evaluate`: metrics on cases whose answers are known, and a whole run on a tiny LFW slice."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import SHARED, make_video, needs_dlib, needs_lfw

from fiva.evaluate.calibrate import threshold_at_far
from fiva.evaluate.lfw import read_pairs, subsample_pairs
from fiva.evaluate.metrics import Gallery, head_pose, pose_error, retrieved, temporal_consistency
from fiva.evaluate.models import IdentityModel
from fiva.evaluate.report import BEGIN, END, update_benchmarks
from fiva.faces.align import template


class _Cosine(IdentityModel):
    name, metric = "m", "cosine"


def test_threshold_at_far_admits_at_most_the_allowed_false_matches():
    impostor = np.linspace(0.5, 1.5, 2000)
    t = threshold_at_far(impostor, 0.001)
    assert (impostor < t).sum() <= 2
    assert (impostor <= t).sum() >= 2  # and it is the largest such threshold
    assert threshold_at_far(np.array([0.9, 0.7, 0.8]), 0.001) == pytest.approx(0.7)


def test_retrieval_needs_the_true_identity_nearest_and_below_threshold():
    m = _Cosine()
    g = Gallery({"m": np.eye(3)}, np.array(["a", "b", "c"]))
    q = np.array([1.0, 0.1, 0.0])
    assert retrieved(m, q, "a", g, threshold=0.3)
    assert not retrieved(m, q, "b", g, threshold=0.3)  # nearest is someone else
    assert not retrieved(m, q, "a", g, threshold=0.001)  # nearest, but too far to count
    assert not retrieved(m, q, "a", g, threshold=0.3, exclude=np.array([True, False, False]))
    assert not retrieved(m, -q, "a", g, threshold=0.3)  # the negated embedding points away


def test_temporal_consistency_of_one_identity_is_zero_and_of_alternating_ones_is_not():
    mu, sigma, D = temporal_consistency(np.tile([[1.0, 2.0, 3.0]], (10, 1)))
    assert mu == pytest.approx(0, abs=1e-6) and sigma == pytest.approx(0, abs=1e-6) and D.shape == (10, 10)
    alt = np.array([[1.0, 0.0], [0.0, 1.0]] * 5)
    mu, sigma, _ = temporal_consistency(alt)
    assert mu == pytest.approx(0.5) and sigma == pytest.approx(0.5)  # half the pairs at distance 1


def test_head_pose_sees_roll_and_yaw_but_not_translation():
    t = template(112)
    rot = cv2.getRotationMatrix2D((56, 56), 20, 1.0)
    rolled = np.c_[t, np.ones(5)] @ rot.T
    assert abs(abs(head_pose(rolled, (112, 112))[2] - head_pose(t, (112, 112))[2]) - 20) < 1.5
    assert pose_error(t, t + [5.0, 3.0], (112, 112)) < 1.0
    turned = t.copy()
    turned[2, 0] += 8  # nose tip moves sideways: the head turns
    assert abs(head_pose(turned, (112, 112))[1] - head_pose(t, (112, 112))[1]) > 10


def test_pairs_subsample_is_balanced_and_spread(tmp_path):
    lines = ["10\t300"] + [f"p{i}\t1\t2" for i in range(300)] + [f"q{i}\t1\tr{i}\t1" for i in range(300)]
    (tmp_path / "pairs.txt").write_text("\n".join(lines))
    pairs = read_pairs(tmp_path / "pairs.txt")
    assert len(pairs) == 600 and sum(p[2] for p in pairs) == 300
    sub = subsample_pairs(pairs, 20)
    assert sum(p[2] for p in sub) == 10 and len(sub) == 20
    assert sub[-1][0][0] == "q270"  # spread over the file, not its head


def test_benchmarks_section_is_replaced_not_duplicated(tmp_path):
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# Benchmarks\n\nspeed table\n")
    update_benchmarks(md, "table one")
    update_benchmarks(md, "table two")
    text = md.read_text()
    assert text.count(BEGIN) == 1 and text.count(END) == 1
    assert "table two" in text and "table one" not in text and "speed table" in text


@needs_lfw
@needs_dlib
@pytest.mark.slow
def test_evaluate_tiny_slice_gives_the_known_answers(tmp_path, astronaut):
    from fiva.cli import main

    videos = tmp_path / "videos"
    videos.mkdir()
    face = cv2.resize(astronaut, (256, 256))
    make_video(videos / "astronaut.mp4", [np.roll(face, s, axis=1) for s in range(0, 8, 2)], audio=False)
    out = tmp_path / "eval"
    bench = tmp_path / "BENCHMARKS.md"
    from fiva.models.attack import ReconstructionAttack, save_attack

    save_attack(ReconstructionAttack(), tmp_path / "identity_attack.safetensors")  # untrained R: the identity map
    rc = main(["evaluate", "--lfw", str(SHARED / "lfw"), "--videos", str(videos), "--out", str(out), "--limit", "2",
               "--frames", "4", "--workers", "1", "--benchmarks", str(bench), "--no-progress",
               "--attack", str(tmp_path / "identity_attack.safetensors")])
    assert rc == 0
    result = json.loads((out / "report.json").read_text())
    rows = {r["method"]: r for r in result["table"]}
    real, mask = rows["Real Data"], rows["Black mask"]
    assert real["ID"] == 1.0 and real["ID_sface"] == 1.0  # unmodified faces are retrieved
    assert real["detection_rate"] == 1.0 and real["landmark_error"] == 0.0
    assert mask["detection_rate"] == 0.0 and mask["ID"] == 0.0  # nothing left to find
    assert np.isnan(mask["Mtc_mu"])  # and no face to be consistent about
    assert real["Mtc_mu"] < 0.05  # one still face, barely moving
    for name, cal in result["calibration"].items():
        assert cal["same"] > 0 and cal["different"] > 0 and 0 < cal["tar"] <= 1, name
    assert 0.3 < result["calibration"]["dlib"]["threshold"] < 0.9
    assert {"FIVA", "FIVA + Sampling", "FIVA + ITM"} <= set(rows)
    assert result["models"]["generator"]["name"] == "anchor-face"  # the tables measure what `fiva anonymize` draws with
    assert result["models"]["attack"]["file"] == "identity_attack.safetensors"
    assert [r["pairs"] for r in result["swap"]] == [1, 1, 1]  # Table 4: anchor-face and both network conditionings, limit 2 -> one pair
    for name in ("FIVA", "FIVA + ITM"):  # an attack that changes nothing retrieves what ID retrieves
        assert rows[name]["RA"] == rows[name]["ID"]
    assert np.isnan(rows["Blur"]["RA"]) and np.isnan(real["RA"])  # no generator to attack
    table3 = {(r["defense"], r.get("defense_p")): r for r in result["defenses"]}
    assert table3[("none", None)]["psnr_db"] == float("inf")  # undefended against itself
    assert table3[("noise", 1.0)]["psnr_db"] < table3[("noise", 0.0025)]["psnr_db"]  # more noise, more cost
    assert np.isfinite(table3[("noise", 0.0025)]["psnr_db"])  # measured against the undefended output, not the default's noise
    fd = result["fake_detection"]
    assert {"FIVA + ITM", "Blur"} <= set(fd) and 0.0 <= fd["FIVA + ITM"]["auc"] <= 1.0
    from fiva.weights import DEFAULT_DETECTOR

    if DEFAULT_DETECTOR.exists():  # the shipped detector `fiva detect-fake` uses, measured beside R
        fdd = result["fake_detection_detector"]
        assert fdd["score"] == "detector" and 0.0 <= fdd["FIVA + ITM"]["accuracy_at_shipped"] <= 1.0
        assert result["models"]["fake_detector"]["threshold"] is not None
        assert "`fiva detect-fake` (the shipped fake detector" in (out / "report.md").read_text()
    for f in ("report.md", "hist_dlib.png", "hist_sface.png", "temporal.png", "contact_sheet.png"):
        assert (out / f).stat().st_size > 0, f
    assert "| FIVA + ITM |" in bench.read_text()
    assert "`fiva anonymize`'s default defense (" in (out / "report.md").read_text()  # the report states the default's RA
    # No embeddings in the report: nothing 128 numbers long.
    text = (out / "report.json").read_text()
    assert not any(isinstance(v, list) and len(v) == 128 for v in _walk(json.loads(text)))


def _walk(obj):
    yield obj
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _walk(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v)


def test_reconstruction_attack_changes_only_what_r_changes(astronaut):
    import torch

    from fiva.evaluate.run import reconstruct
    from fiva.faces import FaceDetector
    from fiva.models.attack import ReconstructionAttack

    rgb = np.ascontiguousarray(astronaut)
    lm = FaceDetector()(rgb).landmarks[0]
    R = ReconstructionAttack().eval()
    assert np.array_equal(reconstruct(R, rgb, lm), rgb)  # the identity map: not even resampling blur
    with torch.no_grad():
        R.head.bias.fill_(0.2)  # brightens every pixel of the crop
    rec = reconstruct(R, rgb, lm)
    assert np.abs(rec.astype(int) - rgb).max() > 10  # a real change still reaches the image


def test_realism_figures_over_seeds_keep_each_seeds_value_and_their_spread():
    """`scripts/realism_seeds.py` combines evaluate_realism.py's summaries of several seeds: for
    each figure every seed has as a number, the mean, the smallest and the largest (Eq. 1's
    random pick moves figures by a few points, so banks are compared over seeds); lists of faces,
    missing figures (None: no donor cache) and flags are left out."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "realism_seeds.py"
    spec = importlib.util.spec_from_file_location("realism_seeds", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    a = {"beyond_0.6_from_original": 0.945, "faces": 200, "beyond_0.6_from_donors": None, "worst_mouth": ["x 0.1"], "ok": True}
    b = {"beyond_0.6_from_original": 0.915, "faces": 200, "beyond_0.6_from_donors": 0.95, "worst_mouth": ["y 0.2"], "ok": False}
    c = dict(a, **{"beyond_0.6_from_original": 0.925})
    out = script.combine([a, b, c])
    assert set(out) == {"beyond_0.6_from_original", "faces"}
    f = out["beyond_0.6_from_original"]
    assert f["values"] == [0.945, 0.915, 0.925] and f["min"] == 0.915 and f["max"] == 0.945
    assert f["mean"] == pytest.approx(0.92833, abs=1e-4)
