"""`fiva anonymize` end to end: where outputs go, what is never overwritten, bad inputs, video."""
import numpy as np
import pytest

from fiva.anonymize.video import probe_video
from fiva.cli import main
from fiva.io import read_image, write_image

from conftest import make_video


@pytest.fixture
def photo(tmp_path, astronaut):
    p = tmp_path / "in" / "astronaut.jpg"
    write_image(p, astronaut)
    return p


def test_output_goes_beside_the_input_and_the_input_is_untouched(photo):
    before = photo.read_bytes()
    assert main(["anonymize", str(photo), "--no-progress"]) == 0
    out = photo.with_name("astronaut_anonymized.jpg")
    assert out.is_file() and photo.read_bytes() == before
    assert read_image(out).shape == read_image(photo).shape


def test_existing_outputs_are_skipped_unless_overwrite(photo, capsys):
    out = photo.with_name("astronaut_anonymized.jpg")
    out.write_bytes(b"keep me")
    assert main(["anonymize", str(photo), "--no-progress"]) == 0  # a resumed run: nothing failed
    err = capsys.readouterr().err
    assert out.read_bytes() == b"keep me" and "1 skipped" in err and "--overwrite" in err
    assert main(["anonymize", str(photo), "--no-progress", "--overwrite"]) == 0
    assert out.read_bytes() != b"keep me"


def test_output_file_and_output_folder(photo, tmp_path, astronaut):
    assert main(["anonymize", str(photo), "-o", str(tmp_path / "x.png"), "--no-progress"]) == 0
    assert read_image(tmp_path / "x.png").shape == astronaut.shape
    write_image(photo.parent / "sub" / "b.png", astronaut[:, ::-1].copy())
    assert main(["anonymize", str(photo.parent), "-o", str(tmp_path / "out"), "--no-progress"]) == 0
    assert (tmp_path / "out" / "astronaut_anonymized.jpg").is_file()
    assert (tmp_path / "out" / "sub" / "b_anonymized.png").is_file()


def test_bad_inputs_get_one_line_each_and_the_run_goes_on(photo, tmp_path, capsys):
    corrupt = tmp_path / "broken.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    missing = tmp_path / "missing.jpg"
    code = main(["anonymize", str(corrupt), str(empty), str(text), str(missing), str(photo), "-o", str(tmp_path / "o"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert (tmp_path / "o" / "astronaut_anonymized.jpg").is_file()  # the good input was still done
    for bad in (corrupt, empty, text, missing):
        lines = [ln for ln in err.splitlines() if str(bad) in ln]
        assert len(lines) == 1 and lines[0].startswith("fiva: error:"), (bad, err)


def test_video_keeps_frames_fps_and_audio(tmp_path, astronaut):
    import cv2

    frames = [np.ascontiguousarray(cv2.resize(np.roll(astronaut, 2 * i, axis=1), (256, 256))) for i in range(8)]
    src = make_video(tmp_path / "clip.mp4", frames, fps=25, audio=True)
    dst = tmp_path / "clip_out.mp4"
    assert main(["anonymize", str(src), "-o", str(dst), "--no-progress"]) == 0
    a, b = probe_video(src), probe_video(dst)
    assert (b.width, b.height, b.frames, b.has_audio) == (a.width, a.height, a.frames, True)
    assert abs(b.fps - a.fps) < 1e-3


def test_corrupt_video_gets_a_clear_error(tmp_path, capsys):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(5000))
    assert main(["anonymize", str(bad), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert any(str(bad) in ln and ln.startswith("fiva: error:") for ln in err.splitlines())
    assert not (tmp_path / "bad_anonymized.mp4").exists()


def test_summary_says_which_faces_were_obfuscated():
    from fiva.anonymize.runner import describe_stats

    text = describe_stats({"faces": 4, "generated": 2, "fallback_small": 1, "rejected": 1}, "pixelate")
    assert text == "; 4 face(s): 2 generated, 1 too small (obfuscated with 'pixelate'), 1 false alarm(s) left untouched"
