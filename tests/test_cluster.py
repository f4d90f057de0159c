"""`fiva anonymize --ray`: a real local Ray cluster (2 workers, 1 thread each) against the single run.

Ray starts once for the module (in this process); each `--ray` run below joins it, starts its own
two workers and stops them at the end.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import ray

from fiva.anonymize.cluster import MAX_ATTEMPTS
from fiva.cli import main
from fiva.io import write_image

from conftest import LFW, lfw_image, make_video

# Video at the default crf: x264 without its macroblock tree (video.py) encodes the same frames
# the same way in any process (with it, two single runs differed); frames are compared decoded.
RAY = ["--ray", "local", "--workers", "2", "--worker-threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, astronaut):
    """A folder tree of images and a 1.2 s video, and the single run's outputs and report."""
    root = tmp_path_factory.mktemp("corpus")
    src = root / "in"
    face = np.ascontiguousarray(cv2.resize(astronaut, (256, 256)))
    write_image(src / "a.jpg", face)
    write_image(src / "day2" / "b.png", np.ascontiguousarray(face[:, ::-1]))
    write_image(src / "day2" / "c.jpg", np.ascontiguousarray(cv2.resize(astronaut, (320, 320))[20:276, 40:296]))
    (src / "clips").mkdir()
    canvas = [np.roll(np.pad(face, ((0, 0), (32, 32), (0, 0))), 2 * k, axis=1) for k in range(30)]
    make_video(src / "clips" / "walk.mp4", canvas)
    single, report = root / "single", root / "single.json"
    assert main(["anonymize", str(src), "-o", str(single), "--report", str(report), "--no-progress"]) == 0
    return src, single, json.loads(report.read_text())


def _same_outputs(out: Path, single: Path) -> None:
    files = sorted(f.relative_to(single) for f in single.rglob("*") if f.is_file())
    assert len(files) == 4 and sorted(f.relative_to(out) for f in out.rglob("*") if f.is_file()) == files
    for f in files:
        if f.suffix == ".mp4":
            mine, theirs = _frames(out / f), _frames(single / f)
            assert len(mine) == len(theirs) == 30 and all(np.array_equal(a, b) for a, b in zip(mine, theirs)), f
        else:
            assert (out / f).read_bytes() == (single / f).read_bytes(), f"{f} differs from the single run's"


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [frame.to_ndarray(format="yuv444p") for frame in c.decode(video=0)]


def test_cluster_outputs_are_bit_identical_to_the_single_run_and_a_rerun_resumes(cluster, corpus, tmp_path, monkeypatch, capsys):
    src, single, single_rep = corpus
    monkeypatch.chdir(tmp_path)  # relative paths: the workers get absolute ones, messages keep the user's spelling
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    args = ["anonymize", str(src), "bad/broken.jpg", "bad/missing.png", "-o", "out", "--report", "run.json", *RAY]
    assert main(args) == 1  # two bad inputs: the run goes on, the exit code tells
    err = capsys.readouterr().err
    assert "fiva: error: bad/missing.png: no such file" in err  # found by the driver
    assert len([line for line in err.splitlines() if line.startswith("fiva: error: bad/broken.jpg: ")]) == 1  # by a worker
    _same_outputs(tmp_path / "out", single)
    assert not list((tmp_path / "out").rglob(".*"))  # no temporary files left
    rep = json.loads(Path("run.json").read_text())
    assert (rep["anonymized"], rep["skipped"], rep["failed"]) == (4, 0, 2)
    by_input = {r["input"]: r for r in rep["files"]}
    for rec in single_rep["files"]:  # every file's record merged, in the single run's terms
        mine = by_input[rec["input"]]
        assert mine["output"] == str(Path("out") / Path(rec["output"]).relative_to(single))
        assert {k: mine[k] for k in ("status", "kind", "faces")} == {k: rec[k] for k in ("status", "kind", "faces")}
        assert mine["worker"]
    assert by_input[str(src / "clips" / "walk.mp4")]["frames"] == 30
    assert rep["totals"]["faces"] == sum(r["faces"].get("faces", 0) for r in single_rep["files"])
    # Resume: what exists is skipped (by the driver, before any worker loads a model).
    assert main(["anonymize", str(src), "-o", "out", "--report", "run.json", *RAY]) == 0
    rep = json.loads(Path("run.json").read_text())
    assert (rep["anonymized"], rep["skipped"]) == (0, 4)


def _workers_writing(name: str) -> list[int]:
    """Ray workers started by this process that have a temporary output file of `name` open."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if not (proc / "cmdline").read_bytes().startswith(b"ray::FileWorker"):
                continue
            if not _descends_from_us(int(proc.name)):
                continue
            if any(name in os.readlink(fd) and ".tmp" in os.readlink(fd) for fd in (proc / "fd").iterdir()):
                found.append(int(proc.name))
        except OSError:
            continue  # gone meanwhile
    return found


def _descends_from_us(pid: int) -> bool:
    while pid > 1:
        if pid == os.getpid():
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def _kill_workers_writing(name: str, times: int, killed: list) -> None:
    deadline = time.time() + 120
    while len(killed) < times and time.time() < deadline:
        for pid in _workers_writing(name):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            break
        time.sleep(0.02)


@pytest.mark.parametrize("kills", [1, MAX_ATTEMPTS])
def test_a_worker_killed_mid_file_has_its_file_redone_elsewhere(cluster, corpus, tmp_path, capsys, kills):
    src, single, _ = corpus
    killed: list[int] = []
    killer = threading.Thread(target=_kill_workers_writing, args=("walk_anonymized", kills, killed))
    killer.start()
    out, report = tmp_path / "out", tmp_path / "run.json"
    rc = main(["anonymize", str(src), "-o", str(out), "--report", str(report), *RAY])
    killer.join()
    assert len(killed) == kills  # each while it was writing the video
    err = capsys.readouterr().err
    assert "its worker died" in err
    rep = json.loads(report.read_text())
    video = next(r for r in rep["files"] if r["input"].endswith("walk.mp4"))
    assert not list(out.rglob(".*"))  # the half-written video is gone
    if kills < MAX_ATTEMPTS:  # redone by another worker: the run completes as if nothing happened
        assert rc == 0 and rep["anonymized"] == 4 and video["attempts"] == kills + 1
        _same_outputs(out, single)
    else:  # a file that takes down every worker it meets fails, alone, and the exit code says so
        assert rc == 1 and rep["anonymized"] == 3 and rep["failed"] == 1 and video["attempts"] == MAX_ATTEMPTS
        assert f"fiva: error: {src / 'clips' / 'walk.mp4'}: {MAX_ATTEMPTS} workers died processing it" in err
        assert not (out / "clips" / "walk_anonymized.mp4").exists()


def test_identity_store_gives_a_person_one_fake_identity_on_every_worker(cluster, tmp_path, astronaut):
    from fiva.anonymize.anchors import AnchorSpace
    from fiva.anonymize.frame import Anonymizer
    from fiva.anonymize.itm import DEFAULT_THRESHOLD, IdentityTrackingModule
    from fiva.faces import align_faces
    from fiva.faces.identity import to_tensor
    from fiva.weights import DEFAULT_ANCHORS

    face = cv2.resize(astronaut, (256, 256))
    people = {"astronaut": [face, face[:, ::-1], cv2.resize(astronaut, (200, 200)), np.clip(face * 1.2, 0, 255).astype(np.uint8),
                            cv2.resize(astronaut, (300, 300))[10:266, 30:286], np.clip(face * 0.8, 0, 255).astype(np.uint8),
                            cv2.resize(astronaut, (280, 280)), np.clip(face[:, ::-1] * 1.1, 0, 255).astype(np.uint8)]}
    if LFW.is_dir():  # real people, eight photos each
        people.update({name: [lfw_image(name, n) for n in range(1, 9)] for name in ("Colin_Powell", "Tony_Blair")})
    files = {}
    for k in range(8):  # interleaved, so the photos of a person are spread over both workers
        for name, photos in people.items():
            files[tmp_path / "in" / f"{k}" / f"{name}.jpg"] = (name, photos[k])
            write_image(tmp_path / "in" / f"{k}" / f"{name}.jpg", np.ascontiguousarray(photos[k]))
    store, report = tmp_path / "ids.safetensors", tmp_path / "run.json"
    assert main(["anonymize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--identity-store", str(store),
                 "--report", str(report), *RAY]) == 0
    assert store.stat().st_mode & 0o777 == 0o600  # biometric data: owner-only, as in a single run
    itm = IdentityTrackingModule(AnchorSpace.load(DEFAULT_ANCHORS))
    itm.load(store)
    t_id, f_id = itm.pairs()
    # Which stored person each photo's face is, by the ITM's own rule (nearest, within the threshold).
    anon = Anonymizer(verify=False)
    keys: dict[str, set] = {name: set() for name in people}
    for path, (name, _) in files.items():
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        dets = anon.detect(rgb)
        crops, _ = align_faces(rgb, dets.landmarks[dets.largest()][None], 112)
        d = 1.0 - t_id @ anon._embed(to_tensor(crops))[0]
        assert d.min() < DEFAULT_THRESHOLD
        keys[name].add(int(np.argmin(d)))
    assert all(len(k) == 1 for k in keys.values())  # one fake identity (f_id[key]) per person ...
    assert len(set.union(*keys.values())) == len(people)  # ... and a different one for each person
    workers = {name: set() for name in people}
    for rec in json.loads(report.read_text())["files"]:
        workers[files[Path(rec["input"])][0]].add(rec["worker"])
    assert any(len(w) == 2 for w in workers.values()), workers  # ... although their files went to both workers


def test_sigterm_saves_the_identity_store_and_leaves_no_half_written_file(cluster, corpus, tmp_path):
    """A scheduler's SIGTERM mid-video: the store is saved (owner-only), the video's temporary
    file removed, exit code 130. The run joins the module's cluster by its address, as a user does."""
    src, _, _ = corpus
    out, store = tmp_path / "out", tmp_path / "ids.safetensors"
    env = dict(os.environ, RAY_AUTH_MODE="token", OMP_NUM_THREADS="1")  # Ray's token, from ~/.ray, for an address
    proc = subprocess.Popen([sys.executable, "-m", "fiva.cli", "anonymize", str(src), "-o", str(out), "--identity-store",
                             str(store), "--ray", ray.get_runtime_context().gcs_address, "--workers", "1", "--no-progress"],
                            env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.rglob(".walk_anonymized*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "interrupted" in err, err
    assert not list(out.rglob(".*")) and not (out / "clips" / "walk_anonymized.mp4").exists()
    assert store.stat().st_mode & 0o777 == 0o600
