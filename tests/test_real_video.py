"""A real talking-head clip (../shared/data/videos): one person, one fake identity, audio kept."""
import av
import numpy as np
import pytest

from fiva import Anonymizer
from fiva.anonymize.video import probe_video

from conftest import SHARED, make_video

CLIP = SHARED / "videos" / "liveportrait_d3.mp4"


@pytest.mark.skipif(not CLIP.is_file(), reason="real clips not found at ../shared/data/videos")
def test_one_person_keeps_one_fake_identity_through_a_real_clip(tmp_path):
    short = tmp_path / "short.mp4"
    with av.open(str(CLIP)) as inp, av.open(str(short), "w") as out:  # first 20 frames, with audio
        vin, ain = inp.streams.video[0], inp.streams.audio[0]
        vs = out.add_stream("libx264", rate=vin.average_rate)
        vs.width, vs.height, vs.pix_fmt = vin.codec_context.width, vin.codec_context.height, "yuv420p"
        aus = out.add_stream("aac", rate=ain.rate)
        for i, f in enumerate(inp.decode(video=0)):
            if i == 20:
                break
            out.mux(vs.encode(av.VideoFrame.from_ndarray(f.to_ndarray(format="rgb24"), format="rgb24")))
        out.mux(vs.encode(None))
        inp.seek(0)
        for f in inp.decode(audio=0):
            if f.time is not None and f.time > 20 / float(vin.average_rate):
                break
            f.pts = None
            out.mux(aus.encode(f))
        out.mux(aus.encode(None))
    anon = Anonymizer(progress=False)
    seen = []
    original = anon.anonymize_frame

    def spy(rgb, dets, tracks=None, still=False):
        seen.append(len(dets))
        return original(rgb, dets, tracks, still)

    anon.anonymize_frame = spy
    dst = tmp_path / "out.mp4"
    info = anon.anonymize_video(short, dst)
    src_info = probe_video(short)
    assert (info.frames, info.width, info.height) == (src_info.frames, src_info.width, src_info.height)
    assert probe_video(dst).has_audio
    assert len(seen) == info.frames and min(seen) >= 1  # the face is found (or filled in) in every frame
    assert len(anon.itm) == 1  # ... and tracked as one person throughout
    with av.open(str(short)) as a, av.open(str(dst)) as b:
        fa = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        fb = next(b.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    assert np.abs(fa - fb).mean() > 0.5  # the face region changed


D13 = SHARED / "videos" / "liveportrait_d13.mp4"


@pytest.mark.skipif(not D13.is_file(), reason="real clips not found at ../shared/data/videos")
def test_the_same_frames_encode_to_the_same_video_on_every_run(tmp_path):
    # one command, one video: runs (and a cluster's workers) give the same pixels at the default
    # crf. With x264's macroblock tree on, these 6 runs of the clip's first 60 frames, passed
    # through untouched in one process, gave 5 different videos.
    from fiva.anonymize.video import process_video

    with av.open(str(D13)) as inp:
        clip = [f.to_ndarray(format="rgb24") for _, f in zip(range(60), inp.decode(video=0))]
    cut = make_video(tmp_path / "cut.mp4", clip, fps=30, audio=False)

    class Untouched:
        def push(self, rgb):
            return [rgb]

        def flush(self):
            return []

    def pixels(path):
        with av.open(str(path)) as c:
            return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])

    first = None
    for k in range(6):
        process_video(cut, tmp_path / f"run{k}.mp4", Untouched(), progress=False)
        got = pixels(tmp_path / f"run{k}.mp4")
        if first is None:
            first = got
        assert got.shape == first.shape == (60, *first.shape[1:]) and np.array_equal(got, first), f"run {k} differs"
