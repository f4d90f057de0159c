"""process_video / probe_video on small synthetic videos made with PyAV."""
import av
import numpy as np
import pytest

from fiva.anonymize.video import VideoInfo, probe_video, process_video
from fiva.io import InputError

from conftest import make_video as write_video

FPS, N = 25, 30


def _frame(i, w, h):
    yy, xx = np.mgrid[:h, :w]
    return np.stack([(xx * 2 + i * 3) % 128, (yy * 2) % 128, np.full_like(xx, 40 + i)], -1).astype(np.uint8)


def make_video(path, w=64, h=48, audio=True, pts=None, sr=44100):
    """Synthetic frames `_frame(i)` through the shared writer."""
    n = N if pts is None else len(pts)
    return write_video(path, [_frame(i, w, h) for i in range(n)], FPS, audio=audio, pts=pts, sr=sr)


def frames(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def frame_times(path):
    with av.open(str(path)) as c:
        return [round(f.time, 4) for f in c.decode(video=0)]


def audio_seconds(path):
    with av.open(str(path)) as c:
        return sum(f.samples / f.sample_rate for f in c.decode(audio=0))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    d = tmp_path_factory.mktemp("videos")
    return {
        "audio": make_video(d / "audio.mp4"),
        "silent": make_video(d / "silent.mp4", audio=False),
        "odd": make_video(d / "odd.mp4", 65, 49),
    }


def test_probe(videos):
    assert probe_video(videos["audio"]) == VideoInfo(64, 48, 25.0, N, True)
    assert probe_video(videos["silent"]) == VideoInfo(64, 48, 25.0, N, False)
    assert probe_video(videos["odd"]) == VideoInfo(65, 49, 25.0, N, True)


@pytest.mark.parametrize("name", ["audio", "silent", "odd"])
@pytest.mark.parametrize("ext", [".mp4", ".mov", ".mkv", ".avi", ".webm"])
def test_properties_kept(videos, tmp_path, name, ext):
    src = videos[name]
    calls = []
    dst = tmp_path / f"out{ext}"
    info = process_video(src, dst, lambda x: calls.append(1) or x, progress=False)
    want = probe_video(src)
    assert info == want and len(calls) == N
    assert probe_video(dst) == want
    assert sorted(p.name for p in tmp_path.iterdir()) == [dst.name]  # no temp file left


def test_timing_and_audio_duration_kept(tmp_path):
    pts = [0, 1, 2, 4, 5, 9, 10, 11, 15, 16]  # variable frame timing
    src = make_video(tmp_path / "vfr.mp4", pts=pts)
    for ext in (".mp4", ".mkv", ".webm"):
        dst = tmp_path / f"out{ext}"
        assert process_video(src, dst, lambda x: x, progress=False).frames == len(pts)
        times = frame_times(dst)
        assert np.allclose(np.diff(times), np.diff(pts) / FPS, atol=1e-3), (ext, times)
    assert audio_seconds(tmp_path / "out.mp4") == pytest.approx(audio_seconds(src), abs=1e-3)  # copied
    assert audio_seconds(tmp_path / "out.webm") == pytest.approx(audio_seconds(src), abs=0.01)  # to Opus


def test_fn_is_applied(videos, tmp_path):
    dst = tmp_path / "inv.mp4"
    process_video(videos["audio"], dst, lambda x: 255 - x, progress=False)
    src_means = [f.mean() for f in frames(videos["audio"])]
    out_means = [f.mean() for f in frames(dst)]
    assert np.allclose(out_means, 255 - np.array(src_means), atol=3)


@pytest.mark.parametrize("name", ["audio", "odd"])
def test_identity_is_close(videos, tmp_path, name):
    dst = tmp_path / "same.mkv"
    process_video(videos[name], dst, lambda x: x, progress=False, desc="test")
    a, b = frames(videos[name]), frames(dst)
    assert len(a) == len(b) == N and a[0].shape == b[0].shape
    for x, y in zip(a, b):
        assert np.abs(x.astype(int) - y).mean() < 3


@pytest.mark.parametrize("content", [b"", np.random.default_rng(0).bytes(5000)], ids=["empty", "corrupt"])
def test_bad_input(tmp_path, content):
    src = tmp_path / "broken_clip.mp4"
    src.write_bytes(content)
    for call in (lambda: process_video(src, tmp_path / "out.mp4", lambda x: x, progress=False),
                 lambda: probe_video(src)):
        with pytest.raises(InputError, match="broken_clip.mp4") as e:
            call()
        assert "\n" not in str(e.value)
    assert not (tmp_path / "out.mp4").exists()


def test_missing_and_audio_only_input(tmp_path):
    with pytest.raises(InputError, match="nothing.mp4"):
        probe_video(tmp_path / "nothing.mp4")
    src = tmp_path / "voice.m4a"
    with av.open(str(src), "w") as out:
        aus = out.add_stream("aac", rate=8000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.float32), format="fltp", layout="mono")
        f.sample_rate, f.pts = 8000, 0
        out.mux(aus.encode(f))
        out.mux(aus.encode(None))
    with pytest.raises(InputError, match="voice.m4a.*no video stream"):
        process_video(src, tmp_path / "out.mp4", lambda x: x, progress=False)


def test_refuses_overwriting_input(videos):
    with pytest.raises(InputError, match="audio.mp4"):
        process_video(videos["audio"], videos["audio"], lambda x: x, progress=False)
    assert probe_video(videos["audio"]).frames == N


def test_failed_run_keeps_existing_dst(videos, tmp_path):
    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"old")

    def boom(x):
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        process_video(videos["audio"], dst, boom, progress=False)
    with pytest.raises(ValueError, match="frames must come back as uint8"):
        process_video(videos["audio"], dst, lambda x: x[:10], progress=False)
    assert dst.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    process_video(videos["audio"], dst, lambda x: x, progress=False)  # overwrite on success
    assert probe_video(dst).frames == N


def test_a_failure_while_encoding_is_raised_and_keeps_existing_dst(videos, tmp_path, monkeypatch):
    """Frames are encoded on a thread of their own while the next is processed: an encoder error
    there still fails the run, with the existing output kept and no thread left behind."""
    import threading

    from fiva.anonymize import video

    dst = tmp_path / "out.mp4"
    dst.write_bytes(b"old")
    real, calls = video._mux_encoded, []

    def failing(out, ostream, frame):
        calls.append(frame)
        if len(calls) == 5:
            raise OSError("disk full")
        real(out, ostream, frame)

    monkeypatch.setattr(video, "_mux_encoded", failing)
    before = set(threading.enumerate())
    with pytest.raises(OSError, match="disk full"):
        process_video(videos["audio"], dst, lambda x: x, progress=False)
    assert dst.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.mp4"]
    assert len(calls) == 5  # nothing encoded after the failure
    assert not [t for t in set(threading.enumerate()) - before if t.name == "fiva-video-writer"]


def test_unsupported_output_extension(videos, tmp_path):
    with pytest.raises(InputError, match="out.gif"):
        process_video(videos["audio"], tmp_path / "out.gif", lambda x: x, progress=False)


def test_a_stream_is_closed_however_its_video_ends(videos, tmp_path):
    """A stream's close() runs after a finished video and after a failed one (a VideoStream gives
    torch back the thread it lent its detector there)."""
    class Stream:
        def __init__(self, fail):
            self.fail, self.closed = fail, 0

        def push(self, rgb):
            if self.fail:
                raise RuntimeError("model failed")
            return [rgb]

        def flush(self):
            return []

        def close(self):
            self.closed += 1

    ok, bad, unread = Stream(False), Stream(True), Stream(False)
    process_video(videos["audio"], tmp_path / "ok.mp4", ok, progress=False)
    with pytest.raises(RuntimeError, match="model failed"):
        process_video(videos["audio"], tmp_path / "bad.mp4", bad, progress=False)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(InputError, match="broken.mp4"):
        process_video(broken, tmp_path / "out.mp4", unread, progress=False)
    assert ok.closed == 1 and bad.closed == 1 and unread.closed == 1


def test_delayed_stream_keeps_variable_timing_and_rotation(tmp_path):
    """The tracker hands frames back a few frames late: timestamps, count and rotation still match."""
    pts = [0, 1, 2, 4, 5, 9, 10, 11, 15, 16, 17, 18]
    src = make_video(tmp_path / "vfr.mp4", pts=pts)

    class Late:  # hands each frame back three frames later, like FaceTracker
        def __init__(self):
            self.buf = []

        def push(self, rgb):
            self.buf.append(255 - rgb)
            return [self.buf.pop(0)] if len(self.buf) > 3 else []

        def flush(self):
            out, self.buf = self.buf, []
            return out

    dst = tmp_path / "out.mp4"
    assert process_video(src, dst, Late(), progress=False).frames == len(pts)
    assert np.allclose(np.diff(frame_times(dst)), np.diff(pts) / FPS, atol=1e-3)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        fa = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        fb = next(b.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs((255 - fa) - fb).mean() < 3  # frame 0 came back as frame 0

    rotated = tmp_path / "rot.mp4"
    with av.open(str(src)) as inp, av.open(str(rotated), "w") as out:
        vs = out.add_stream("libx264", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = inp.streams.video[0].width, inp.streams.video[0].height, "yuv420p"
        if not hasattr(vs, "set_display_rotation"):
            pytest.skip("this PyAV cannot write rotation metadata")
        vs.set_display_rotation(90)
        for f in inp.decode(video=0):
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24")))
        out.mux(vs.encode(None))
    dst2 = tmp_path / "rot_out.mp4"
    process_video(rotated, dst2, Late(), progress=False)
    with av.open(str(rotated)) as a, av.open(str(dst2)) as b:
        ra = next(a.decode(video=0)).rotation
        rb = next(b.decode(video=0)).rotation
    assert ra != 0 and rb == ra
