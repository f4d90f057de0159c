"""`fiva serve` end to end: the server started as a user starts it, the page in a real headless
Chromium (Debian's `chromium`, driven by Playwright). Screenshots of each state go to
runs/web-screenshots/."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import ROOT, make_video

from fiva.anonymize.video import probe_video
from fiva.cli import main
from fiva.io import read_image, write_image

pytest.importorskip("starlette", reason="fiva serve needs the [web] extra")
pytest.importorskip("uvicorn", reason="fiva serve needs the [web] extra")

SHOTS = ROOT / "runs" / "web-screenshots"
LIMIT_MB = 3  # small, so a too-large upload is quick to make


def _chromium() -> str | None:
    for name in (os.environ.get("FIVA_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _why_no_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (the [test] extra)"
    if _chromium() is None:
        return "no Chromium found (apt-get install chromium, or set FIVA_CHROMIUM; .ci/run installs it)"
    return None


needs_browser = pytest.mark.skipif(_why_no_browser() is not None, reason=str(_why_no_browser()))


def start_server(*args) -> SimpleNamespace:
    log = tempfile.TemporaryFile("w+")  # the server's stderr: a pipe nobody reads could fill and stall it
    proc = subprocess.Popen([sys.executable, "-m", "fiva.cli", "serve", *args], stdout=subprocess.PIPE, stderr=log,
                            text=True)
    line = proc.stdout.readline()
    m = re.search(r"serving on (http://\S+/) .* results in (\S+) are deleted", line)
    if not m:
        proc.kill()
        log.seek(0)
        pytest.fail(f"fiva serve did not start: {line!r} {log.read()}")
    return SimpleNamespace(url=m.group(1), root=Path(m.group(2)), proc=proc, log=log)


def stop_server(server) -> tuple[int, str]:
    """SIGTERM, as a service manager stops it; its exit code and what it wrote to stderr."""
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(timeout=60)
    server.log.seek(0)
    return code, server.log.read()


@pytest.fixture(scope="module")
def server():
    s = start_server("--max-upload-mb", str(LIMIT_MB))
    yield s
    code, err = stop_server(s)
    print(err)  # shown with -s or when a test failed


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """A photo of two people (NASA's astronaut and the cameraman, both shipped with scikit-image,
    side by side), a reference photo of the cameraman, a broken and a too-large file, a short video."""
    from skimage import data

    d = tmp_path_factory.mktemp("web")
    astronaut, cameraman = data.astronaut(), np.repeat(data.camera()[..., None], 3, axis=2)
    write_image(d / "two_people.png", np.concatenate([astronaut, cameraman], axis=1))
    write_image(d / "cameraman.png", cameraman)
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (d / "big.png").write_bytes(os.urandom((LIMIT_MB + 1) * 1024 * 1024))
    import cv2

    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    frames = [np.roll(small, 2 * i, axis=1) for i in range(30)]  # 2 s at 15 fps, the face drifting
    make_video(d / "clip.mp4", frames, fps=15)
    return d


def _post(url, body: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def _get(url) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


def _upload(server, path: Path, name: str | None = None) -> tuple[int, dict]:
    return _post(server.url + "api/uploads", path.read_bytes(), {"X-Filename": name or path.name})


# -- the server without a browser ----------------------------------------------------------------


def test_listens_on_loopback_and_refuses_other_host_names(server):
    assert server.url.startswith("http://127.0.0.1:")
    req = urllib.request.Request(server.url, headers={"Host": "attacker.example"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 400  # a rebound DNS name cannot reach the uploads


def test_bad_uploads_are_refused_in_plain_words(server, media, tmp_path):
    before = set(os.listdir(server.root))
    code, body = _upload(server, media / "big.png")  # the server checks too, not only the page
    assert code == 413 and body["error"].startswith("big.png: too large (4.0 MB; the limit is 3.0 MB")
    code, body = _upload(server, media / "broken.jpg")
    assert code == 400 and body["error"] == "broken.jpg: not a readable image (corrupt or unsupported format)"
    (tmp_path / "notes.txt").write_text("hello")
    code, body = _upload(server, tmp_path / "notes.txt", name="../../notes.txt")
    assert code == 400 and body["error"].startswith("notes.txt: unsupported file type '.txt'")
    assert set(os.listdir(server.root)) == before  # refused uploads leave nothing behind


def test_only_mode_anonymizes_just_the_chosen_face(server, media):
    code, up = _upload(server, media / "two_people.png")
    assert code == 200 and up["kind"] == "image" and len(up["faces"]) == 2
    left = min(up["faces"], key=lambda f: f["box"][0])  # the astronaut
    assert left["number"] == 1
    job = _run_job(server, up["id"], method="blur", mode="only", faces=[left["index"]])
    assert job["state"] == "done", job
    out = server.root / up["id"] / job["id"] / job["filename"]
    src, res = read_image(media / "two_people.png"), read_image(out)
    assert not np.array_equal(src[:, :512], res[:, :512]) and np.array_equal(src[:, 512:], res[:, 512:])
    code, body = _post(server.url + "api/jobs", json.dumps({"upload": up["id"], "mode": "only", "faces": []}).encode(), {})
    assert code == 400 and "click the faces to anonymize first" in body["error"]


def _run_job(server, upload: str, **choice) -> dict:
    code, job = _post(server.url + "api/jobs", json.dumps({"upload": upload, **choice}).encode(), {})
    assert code == 200, job
    for _ in range(1200):
        job = json.loads(_get(server.url + f"api/jobs/{job['id']}"))
        if job["state"] in ("done", "failed"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job still {job['state']} after 2 minutes")


def test_a_person_clicked_in_a_video_stays_in_every_frame(server, media):
    code, up = _upload(server, media / "clip.mp4")
    assert code == 200 and up["kind"] == "video" and up["frames"] == 30 and len(up["faces"]) == 1
    job = _run_job(server, up["id"], method="pixelate", mode="keep", faces=[0])
    assert job["state"] == "done", job
    assert job["summary"] == "30 face detection(s) over the frames: 30 left as they are."
    folder = server.root / up["id"]
    written = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert written == {".preview.jpg", "clip.mp4", f"{job['id']}/clip_anonymized.mp4"}  # no embeddings, no crops left


def test_a_clicked_video_face_that_cannot_be_recognised_is_named(tmp_path):
    from skimage import data

    from fiva.faces import Detections
    from fiva.web.workspace import Workspace

    ws = Workspace()
    try:
        uid, path = ws.reserve("walk.mp4")
        make_video(path, [data.astronaut()[::2, ::2].copy()] * 5, audio=False)
        up = ws.inspect(uid, path)
        # a box the detector might give on a tiny or blurred face: nothing to recognise in it on its own
        up.dets = Detections(np.array([[0, 0, 30, 30]], np.float32), np.array([0.9], np.float32), np.zeros((1, 5, 2), np.float32))
        job = ws.start(uid, "blur", "keep", [0])
        for _ in range(600):
            if job.state in ("done", "failed"):
                break
            time.sleep(0.1)
        assert job.state == "failed"
        assert job.error == "walk.mp4: face 1 is too small or blurred to be recognised in the other frames; leave it unclicked"
    finally:
        ws.close()
    assert not ws.root.exists()


def test_stopping_mid_video_ends_the_job_and_deletes_everything(media):
    from fiva.web.workspace import Workspace

    ws = Workspace()
    uid, path = ws.reserve("clip.mp4")
    shutil.copy(media / "clip.mp4", path)
    ws.inspect(uid, path)
    job = ws.start(uid, "fiva", "keep", [])
    for _ in range(600):
        if job.done > 0 or job.state not in ("queued", "running"):
            break
        time.sleep(0.05)
    assert job.state == "running" and 0 < job.done < job.total
    ws.close()  # what the server does on Ctrl+C: the job stops at its next frame
    assert job.state == "failed" and job.error == "the server stopped"
    assert not ws.root.exists()


def test_the_pixel_limit_applies_to_uploads(media):
    from fiva.io import InputError
    from fiva.web.workspace import Workspace

    ws = Workspace(max_pixels=1000)
    try:
        uid, path = ws.reserve("two_people.png")
        shutil.copy(media / "two_people.png", path)
        with pytest.raises(InputError, match=r"^two_people.png: image too large \(1024x512 = 524288 pixels, limit 1000"):
            ws.inspect(uid, path)
    finally:
        ws.close()


def test_a_port_in_use_is_a_one_line_error(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    assert capsys.readouterr().err.startswith(f"fiva: error: cannot listen on 127.0.0.1:{port} (")


def test_the_temporary_folder_goes_with_the_server(media):
    s = start_server()
    code, up = _upload(s, media / "two_people.png")
    assert code == 200 and (s.root / up["id"]).is_dir()
    code, err = stop_server(s)
    assert code == 0 and "uploads and results deleted" in err
    assert not s.root.exists()


# -- the page in Chromium --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=_chromium(), headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the server that records every request it makes and every script error."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    pg = context.new_page()
    pg.requested, pg.errors = [], []
    pg.on("request", lambda r: pg.requested.append(r.url))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" and "status of 4" not in m.text else None)
    pg.goto(server.url)
    pg.wait_for_function("() => document.getElementById('limit').textContent.includes('up to')")  # the page is ready
    yield pg
    context.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def choose_file(page, path: Path) -> None:
    """Pick a file in the page and wait until its faces are shown (or an error is)."""
    page.set_input_files("#file", str(path))
    page.wait_for_function("() => !document.getElementById('error').hidden || "
                           "document.getElementById('status').textContent.includes(' found')", timeout=60_000)
    assert page.is_hidden("#error"), page.text_content("#error")
    page.wait_for_function("() => { const i = document.getElementById('before'); return i.complete && i.naturalWidth > 0 }")


def only_local(page, server) -> None:
    """Nothing but the local server was asked for anything (no fonts, scripts, CDNs), no script errors."""
    outside = [u for u in page.requested if not u.startswith(server.url)]
    assert not outside, outside
    assert not page.errors, page.errors


@needs_browser
def test_photo_keep_one_person_and_download_what_the_cli_writes(page, server, media, tmp_path):
    shot(page, "1-start")
    choose_file(page, media / "two_people.png")
    assert "2 faces found" in page.text_content("#status")
    shot(page, "2-faces-found")
    # click the cameraman's outline (the right-hand face) on the picture: he stays
    right = page.evaluate("() => [...document.querySelectorAll('#overlay g')].sort((a, b) => "
                          "b.querySelector('rect').x.baseVal.value - a.querySelector('rect').x.baseVal.value)[0].dataset.face")
    page.click(f'#overlay g[data-face="{right}"]')
    assert page.text_content(f'#faces button[data-face="{right}"]') == "Face 2: stays as it is"
    assert page.text_content('#faces button:not([data-face="%s"])' % right) == "Face 1: will be anonymized"
    shot(page, "3-cameraman-stays")
    assert page.input_value("#method") == "fiva"
    page.click("#run")
    page.wait_for_function("() => { const i = document.getElementById('after-image'); return i && i.complete && i.naturalWidth > 0 }",
                           timeout=60_000)
    # the astronaut is drawn or, where every drawing still matched her, pixelated (beside the
    # cameraman her retries' bank faces all fail SFace since their fringes stay undrawn); the
    # cameraman is left as he is either way
    summary = page.text_content("#summary")
    assert "1 left as they are" in summary and ("1 given a new identity" in summary or "1 pixelated" in summary), summary
    shot(page, "4-photo-result")
    with page.expect_download() as dl:
        page.click("#download")
    assert dl.value.suggested_filename == "two_people_anonymized.png"
    web = tmp_path / "web.png"
    dl.value.save_as(web)
    cli = tmp_path / "cli.png"
    assert main(["anonymize", str(media / "two_people.png"), "--keep", str(media / "cameraman.png"), "-o", str(cli),
                 "--no-progress"]) == 0
    assert web.read_bytes() == cli.read_bytes()
    src, out = read_image(media / "two_people.png"), read_image(web)
    assert not np.array_equal(src[:, :512], out[:, :512]) and np.array_equal(src[:, 512:], out[:, 512:])
    only_local(page, server)


@needs_browser
def test_broken_and_too_large_files_show_their_error_on_the_page(page, server, media):
    data = list((media / "broken.jpg").read_bytes())  # dropped onto the page, as from a file manager
    dropped = page.evaluate_handle("(data) => { const t = new DataTransfer(); "
                                   "t.items.add(new File([new Uint8Array(data)], 'broken.jpg', {type: 'image/jpeg'})); "
                                   "return t }", data)
    page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    page.wait_for_selector("#error:not([hidden])")
    assert page.text_content("#error") == "broken.jpg: not a readable image (corrupt or unsupported format)"
    assert page.is_hidden("#panes")
    shot(page, "5-error-broken-file")
    page.set_input_files("#file", str(media / "big.png"))
    page.wait_for_function("() => document.getElementById('error').textContent.startsWith('big.png')")
    assert page.text_content("#error").startswith("big.png: too large (4.0 MB; the limit is 3.0 MB")
    shot(page, "6-error-too-large")
    choose_file(page, media / "two_people.png")  # a good file clears the error
    only_local(page, server)


@needs_browser
def test_video_runs_with_progress_then_plays_in_the_page(page, server, media, tmp_path):
    choose_file(page, media / "clip.mp4")
    assert "first frame of clip.mp4 (30 frames)" in page.text_content("#status")
    page.click("#run")
    seen = []
    while not page.query_selector("#after-video"):
        v = page.evaluate("() => document.getElementById('progress').value")
        if 0 < v < 1 and not any(0 < s < 1 for s in seen):
            assert re.fullmatch(r"frame \d+ of 30", page.text_content("#progress-text"))
            shot(page, "7-video-progress")
        seen.append(v)
        assert page.is_hidden("#error"), page.text_content("#error")
        page.wait_for_timeout(100)
    assert any(0 < s < 1 for s in seen), seen  # the bar moved while the frames were done
    assert seen == sorted(seen)
    page.wait_for_function("() => { const v = document.getElementById('after-video'); "
                           "return v.readyState >= 2 && v.duration > 0 && v.currentTime > 0.3 && !v.paused }", timeout=30_000)
    duration = page.evaluate("() => document.getElementById('after-video').duration")
    assert abs(duration - 2.0) < 0.2
    assert page.evaluate("() => document.getElementById('progress').value") == 1
    shot(page, "8-video-playing")
    with page.expect_download() as dl:
        page.click("#download")
    dl.value.save_as(tmp_path / "clip_anonymized.mp4")
    info = probe_video(tmp_path / "clip_anonymized.mp4")
    assert (info.frames, info.width, info.height) == (30, 256, 256)
    only_local(page, server)
