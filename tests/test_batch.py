"""Batch runs: globs, folder trees, the JSON run report, metadata, and a corpus of broken inputs."""
from __future__ import annotations

import json
import struct
import zlib
from fractions import Fraction

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from fiva.anonymize.video import probe_video
from fiva.cli import main
from fiva.io import read_image, read_image_alpha, write_image

from conftest import make_video


@pytest.fixture
def face(astronaut):
    return np.ascontiguousarray(cv2.resize(astronaut, (256, 256)))


def test_glob_patterns_folder_trees_and_the_json_report(tmp_path, face, capsys):
    src = tmp_path / "shots"
    write_image(src / "a.jpg", face)
    write_image(src / "day2" / "b.png", face[:, ::-1].copy())
    (src / "day2" / "notes.txt").write_text("not media")
    report = tmp_path / "run.json"
    rc = main(["anonymize", str(src / "**" / "*.png"), str(src / "a.jpg"), "-o", str(tmp_path / "out"),
               "--report", str(report), "--no-progress"])
    assert rc == 0
    assert (tmp_path / "out" / "b_anonymized.png").is_file() and (tmp_path / "out" / "a_anonymized.jpg").is_file()
    rep = json.loads(report.read_text())
    assert rep["anonymized"] == 2 and rep["failed"] == 0
    for rec in rep["files"]:
        assert rec["status"] == "done" and rec["faces"]["faces"] == 1 and rec["seconds"] >= 0
    assert "embedding" not in report.read_text() and "z_id" not in report.read_text()
    # A folder input mirrors its tree; a second run skips what exists, and leaves no temporary files.
    assert main(["anonymize", str(src), "-o", str(tmp_path / "tree"), "--no-progress"]) == 0
    assert (tmp_path / "tree" / "day2" / "b_anonymized.png").is_file()
    assert main(["anonymize", str(src), "-o", str(tmp_path / "tree"), "--report", str(report), "--no-progress"]) == 0
    assert json.loads(report.read_text())["skipped"] == 2
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]


def test_video_metadata_is_stripped_unless_kept_and_codec_is_chosen(tmp_path, face):
    src = make_video(tmp_path / "clip.mp4", [face] * 4, audio=True)
    tagged = tmp_path / "tagged.mov"
    with av.open(str(src)) as inp, av.open(str(tagged), "w") as out:
        out.metadata.update({"location": "+59.3293+018.0686/", "title": "secret meeting"})
        streams = {s: out.add_stream_from_template(s) for s in inp.streams}
        for p in inp.demux():
            if p.dts is not None:
                p.stream = streams[p.stream]
                out.mux(p)
    stripped, kept = tmp_path / "s.mp4", tmp_path / "k.mkv"
    assert main(["anonymize", str(tagged), "-o", str(stripped), "--codec", "h265", "--crf", "30", "--no-progress"]) == 0
    assert main(["anonymize", str(tagged), "-o", str(kept), "--keep-metadata", "--no-progress"]) == 0
    with av.open(str(stripped)) as s, av.open(str(kept)) as k:
        assert not any("59.3293" in v or "secret" in v for v in s.metadata.values())
        assert s.streams.video[0].codec_context.name == "hevc" and s.streams.audio
        assert any("secret" in v for v in k.metadata.values())
    assert probe_video(stripped).frames == 4


def _png_header_only(path, w, h):
    """A PNG whose header claims w x h pixels (a decompression bomb's shape) with one tiny row."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * (w + 1))) + chunk(b"IEND", b""))


def test_a_corpus_of_broken_and_unusual_inputs(tmp_path, face, capsys):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "zero.jpg").write_bytes(b"")
    (d / "text.jpg").write_text("this is not a picture")
    write_image(d / "tiny.png", face[:1, :1].copy())
    cv2.imwrite(str(d / "deep.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    Image.fromarray(face).convert("CMYK").save(d / "cmyk.jpg")
    cv2.imwrite(str(d / "grey.png"), cv2.cvtColor(face, cv2.COLOR_RGB2GRAY))
    rgba = np.dstack([face, np.linspace(0, 255, 256, dtype=np.uint8)[None].repeat(256, 0)])
    Image.fromarray(rgba).save(d / "rgba.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90° clockwise
    Image.fromarray(np.rot90(face, 1).copy()).save(d / "rotated.jpg", exif=exif)
    _png_header_only(d / "huge.png", 12000, 12000)
    clip = make_video(tmp_path / "clip.mp4", [face] * 6, audio=True)
    (d / "truncated.mp4").write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    with av.open(str(d / "audio_only.mp4"), "w") as out:
        a = out.add_stream("aac", rate=16000)
        a.layout = "mono"
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 16000), np.float32), format="fltp", layout="mono")
        fr.sample_rate, fr.pts, fr.time_base = 16000, 0, Fraction(1, 16000)
        for p in a.encode(fr):
            out.mux(p)
        for p in a.encode(None):
            out.mux(p)

    out = tmp_path / "out"
    report = tmp_path / "run.json"
    rc = main(["anonymize", str(d), "-o", str(out), "--report", str(report), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1  # some inputs failed, and the exit code says so
    status = {json.loads(report.read_text())["files"][i]["input"].split("/")[-1]: r["status"]
              for i, r in enumerate(json.loads(report.read_text())["files"])}
    must_fail = {"zero.jpg", "text.jpg", "huge.png", "truncated.mp4", "audio_only.mp4"}
    assert {k for k, v in status.items() if v == "failed"} == must_fail, status
    for name in must_fail:  # one line each, naming the file
        lines = [ln for ln in err.splitlines() if name in ln]
        assert len(lines) == 1 and lines[0].startswith("fiva: error:"), (name, err)
    assert "too large" in next(ln for ln in err.splitlines() if "huge.png" in ln)
    # The unusual but valid ones are anonymized, each the right way round and kind.
    for name in ("tiny.png", "deep.png", "cmyk.jpg", "grey.png", "rgba.png", "rotated.jpg"):
        assert status[name] == "done", name
    cmyk = read_image(out / "cmyk_anonymized.jpg")
    assert np.abs(cmyk.astype(int) - face).mean() < 25  # colours right, not CMYK read as BGRA
    rot = read_image(out / "rotated_anonymized.jpg")
    assert rot.shape == face.shape and np.abs(rot[:100].astype(int) - face[:100]).mean() < 25  # upright
    rgb, alpha = read_image_alpha(out / "rgba_anonymized.png")
    assert alpha is not None and np.array_equal(alpha, rgba[..., 3])  # transparency kept
    assert read_image(out / "tiny_anonymized.png").shape == (1, 1, 3)
