"""anchor-face on video frames: drawn in place (nothing outside a face's mesh ring changes, and a
drawing can be taken back), the coarse video drawing looks like the photo one, the noise defense
stays on the drawn pixels, and a tracked face stays steady from frame to frame."""
import cv2
import numpy as np

from fiva.anonymize.warp import ring

from conftest import needs_dlib


def outside_ring(hw, shape) -> np.ndarray:
    """[h,w] bool: the pixels beyond the bounding box of the shape's mesh ring (+1 px)."""
    hull = ring(shape)
    lo, hi = np.floor(hull.min(0)).astype(int) - 1, np.ceil(hull.max(0)).astype(int) + 1
    out = np.ones(hw, bool)
    out[max(lo[1], 0):hi[1], max(lo[0], 0):hi[0]] = False
    return out


@needs_dlib
def test_a_drawing_pasted_in_place_touches_only_the_mesh_ring_and_lifts_back(bank, astronaut, astronaut_face):
    from fiva.anonymize.anchor_face import AnchorFaceRenderer

    _, shape = astronaut_face
    renderer = AnchorFaceRenderer(bank)
    img = astronaut.copy()
    drawn = renderer.draw(img, shape, 3)
    drawn.paste(img)
    outside = outside_ring(img.shape[:2], shape)
    assert np.array_equal(img[outside], astronaut[outside])
    assert np.abs(img.astype(int) - astronaut).sum() > 0
    assert np.array_equal(img, renderer.render(astronaut, shape, 3))  # the photo path: the same pixels
    drawn.lift(img)
    assert np.array_equal(img, astronaut)


@needs_dlib
def test_the_coarse_video_drawing_of_a_large_face_looks_like_the_photo_drawing(bank, astronaut, astronaut_face):
    """A face drawn 3x the bank's scale: the bank face on a 3x coarser grid (video) gives what the
    full-size drawing gives, up to the soft edges of the kept eyes and mouth."""
    from fiva.anonymize.anchor_face import AnchorFaceRenderer

    d, shape = astronaut_face
    big = cv2.resize(astronaut, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    shape3 = (shape + 0.5) * 3 - 0.5
    renderer = AnchorFaceRenderer(bank)
    fine, coarse = renderer.render(big, shape3, 3), big.copy()
    drawn = renderer.draw(big, shape3, 3, coarse=True)
    drawn.paste(coarse)
    outside = outside_ring(big.shape[:2], shape3)
    assert np.array_equal(coarse[outside], big[outside])
    x1, y1, x2, y2 = (d.boxes[0] * 3).astype(int)
    inner = (slice(y1, y2), slice(x1, x2))
    changed = np.abs(fine[inner].astype(int) - big[inner]).mean()
    assert changed > 3
    assert np.abs(coarse[inner].astype(int) - fine[inner]).mean() < 0.1 * changed


def test_a_tracks_colour_statistics_are_averaged_until_its_bank_face_changes():
    from fiva.anonymize.native import COLOUR_SMOOTHING, ColourTrack

    store, a, b = {}, np.full((4, 3), 10.0, np.float32), np.full((4, 3), 20.0, np.float32)
    first = ColourTrack(store, 7, index=3)
    assert np.array_equal(first(a), a)
    first.commit()
    second = ColourTrack(store, 7, index=3)
    assert np.allclose(second(b), COLOUR_SMOOTHING * a + (1 - COLOUR_SMOOTHING) * b)
    assert np.allclose(second(b), COLOUR_SMOOTHING * a + (1 - COLOUR_SMOOTHING) * b)  # a retry: not averaged twice
    other = ColourTrack(store, 7, index=4)  # another bank face: its own statistics
    assert np.array_equal(other(b), b)


@needs_dlib
def test_a_video_frame_changes_nothing_outside_the_face_and_its_noise_stays_on_the_drawing(astronaut, astronaut_face):
    from fiva import Anonymizer

    d, shape = astronaut_face
    plain = Anonymizer(generator="anchor-face", fallback="none", defense="none", progress=False)
    noisy = Anonymizer(generator="anchor-face", fallback="none", defense_p=0.01, progress=False)
    a = plain.anonymize_frame(astronaut, d, np.array([0]))
    b = noisy.anonymize_frame(astronaut, d, np.array([0]))
    outside = outside_ring(astronaut.shape[:2], shape)
    assert np.array_equal(a[outside], astronaut[outside]) and np.array_equal(b[outside], astronaut[outside])
    drawn = np.any(a != astronaut, axis=2)
    noise = np.any(a != b, axis=2)
    assert noise.any() and not (noise & ~drawn).any()
    assert 0.3 < noise.sum() / (0.01 * drawn.sum()) < 1.5  # p of the drawn pixels (some draws change nothing)


@needs_dlib
def test_a_tracked_face_stays_steady_from_frame_to_frame(astronaut, astronaut_face):
    """The same face with its detected points jittering by a pixel, as a detector's do: along a
    track (68 points and colour statistics smoothed, the texture's nudge held) the drawn face
    changes far less between frames than when each frame is drawn on its own."""
    from fiva import Anonymizer

    d, _ = astronaut_face
    rng = np.random.default_rng(0)
    frames = []
    for _ in range(5):
        dk = d[:1]
        dk.landmarks = dk.landmarks + rng.normal(0, 1.0, dk.landmarks.shape).astype(np.float32)
        frames.append(dk)
    x1, y1, x2, y2 = d.boxes[0].astype(int)

    def change(tracks):
        anon = Anonymizer(generator="anchor-face", fallback="none", defense="none", progress=False)
        outs = [anon.anonymize_frame(astronaut, dk, tracks)[y1:y2, x1:x2].astype(int) for dk in frames]
        return np.mean([np.abs(p - q).mean() for p, q in zip(outs, outs[1:])])

    tracked, alone = change(np.array([0])), change(None)
    assert tracked < 0.7 * alone


def _frames_of_one_track(anon, astronaut, d, count):
    """`count` frames of the astronaut as one track; per frame the bank face its track holds (None
    when the face was not drawn) and the frame's outcome."""
    held, outcomes = [], []
    for _ in range(count):
        anon.anonymize_frame(astronaut, d[:1], np.array([0]))
        st = anon._tracks.get(0)
        drawn = st is not None and not st["failed"]
        held.append(anon.generator.bank.index_of(st["z_a"]) if drawn else None)
        outcomes.append(anon.outcomes[0])
    return held, outcomes


@needs_dlib
def test_one_person_keeps_one_bank_face_through_a_clip_when_a_recheck_reads_a_hair_off(astronaut, astronaut_face):
    """liveportrait_d13: a re-check found the drawn face 0.072 eye distances off (the in-place
    check allows 0.07) and its retry drew another bank face, a new person on the same head for
    the rest of the clip. A track's held face is re-checked within HELD_IN_PLACE instead."""
    from fiva import Anonymizer
    from fiva.anonymize.frame import IN_PLACE
    from fiva.anonymize.native import HELD_IN_PLACE

    d, _ = astronaut_face
    anon = Anonymizer(generator="anchor-face", defense="none", reembed_every=2, progress=False)
    calls = []

    def in_place(rgb, out, dets, still, tolerance=IN_PLACE):  # the first check finds it in place, later ones 0.072 off
        calls.append(tolerance)
        return np.array([len(calls) == 1 or tolerance >= 0.072])

    anon._in_place = in_place
    held, outcomes = _frames_of_one_track(anon, astronaut, d, 1)
    first = anon.stats["retried"]  # the first frame's check may retry (SFace still matching its first bank face)
    more = _frames_of_one_track(anon, astronaut, d, 6)
    held, outcomes = held + more[0], outcomes + more[1]
    assert len(calls) == 4 and calls[1:] == [HELD_IN_PLACE] * 3  # frames 0, 2, 4, 6 checked
    assert outcomes == ["generated"] * 7
    assert len(set(held)) == 1 and held[0] is not None
    assert anon.stats["retried"] == first  # no re-check drew another bank face
    assert anon.stats["switched"] == 0


@needs_dlib
def test_a_held_face_that_fails_its_recheck_is_drawn_again_with_less_of_the_target_not_swapped(
        astronaut, astronaut_face, monkeypatch):
    """liveportrait_d13 (as the CLI seeds it): SFace matched the held face at frame 230's re-check,
    the face was pixelated for 10 frames and the next re-check drew another bank face, a new
    person on the same head. A held face that fails its re-check is drawn again, its own bank face
    with less of the target (VIDEO_RETRY_RENDER), and the track keeps drawing it so."""
    from fiva import Anonymizer
    from fiva.anonymize import native

    d, _ = astronaut_face
    anon = Anonymizer(generator="anchor-face", defense="none", reembed_every=2, progress=False)
    calls, margins = [], []
    draw = native.AnchorFaceRenderer.draw

    def spy_draw(self, *args, **kwargs):
        margins.append((len(calls), self.cfg.eye_margin))
        return draw(self, *args, **kwargs)

    def still_same(*args, **kwargs):  # the second check (frame 2's re-check) fails, every other passes
        calls.append(1)
        return len(calls) == 2

    monkeypatch.setattr(native, "_still_same", still_same)
    monkeypatch.setattr(native.AnchorFaceRenderer, "draw", spy_draw)
    held, outcomes = _frames_of_one_track(anon, astronaut, d, 5)
    assert outcomes == ["generated"] * 5
    assert anon.stats["retried"] == 1 and len(calls) == 4  # frames 0, 2 (twice), 4
    assert held[0] is not None and len(set(held)) == 1  # one bank face throughout
    retry = native.VIDEO_RETRY_RENDER["eye_margin"]
    assert {m for c, m in margins if c < 2} == {anon.generator.renderer.cfg.eye_margin}
    assert {m for c, m in margins if c >= 2} == {retry}  # from the retry on, less of the target


@needs_dlib
def test_a_held_face_that_fails_its_recheck_and_the_retry_is_obfuscated_not_swapped(astronaut, astronaut_face, monkeypatch):
    """A held face that its re-check and the retry on its own bank face both find still the
    original (or far off) is obfuscated until the next re-check rather than drawn as another bank
    face; that one starts afresh, and the ITM gives the person the same bank face again."""
    from fiva import Anonymizer
    from fiva.anonymize import native

    d, _ = astronaut_face
    anon = Anonymizer(generator="anchor-face", defense="none", reembed_every=2, progress=False)
    calls = []

    def still_same(*args, **kwargs):  # frame 2's re-check and its retry fail, every other check passes
        calls.append(1)
        return len(calls) in (2, 3)

    monkeypatch.setattr(native, "_still_same", still_same)
    held, outcomes = _frames_of_one_track(anon, astronaut, d, 5)
    assert outcomes[:2] == ["generated"] * 2 and outcomes[2:4] == ["verify"] * 2 and outcomes[4] == "generated"
    assert anon.stats["retried"] == 1  # the held bank face once more, no other bank face tried
    assert held[0] is not None and held[4] == held[0]
    assert anon.stats["switched"] == 0  # obfuscated for a while, but never another person


@needs_dlib
def test_a_track_drawn_before_is_checked_again_soon_after_a_failed_recheck(astronaut, astronaut_face, monkeypatch):
    """A drawn track whose re-check fails (its held face and the redraw) is obfuscated for
    FAILED_RECHECK frames, not reembed_every, and then re-checked on the bank face it showed (no
    other fake person on the head). If that fails too, the fresh start comes reembed_every frames
    after the first failure, as without the soon re-check. A track never
    drawn waits the whole interval (faces that SFace matches on every drawing cost 2-3 drawings a
    check)."""
    from fiva import Anonymizer
    from fiva.anonymize import native

    d, _ = astronaut_face
    calls = []

    def run(fails, frames):
        calls.clear()
        monkeypatch.setattr(native, "_still_same", lambda *a, **k: calls.append(1) or len(calls) in fails)
        anon = Anonymizer(generator="anchor-face", defense="none", reembed_every=10, progress=False)
        held, outcomes = _frames_of_one_track(anon, astronaut, d, frames)
        return held, outcomes, anon

    soon = 10 + native.FAILED_RECHECK
    # drawn at frame 0; frame 10's re-check and its redraw fail; the soon re-check passes on the same face
    held, outcomes, anon = run({2, 3}, 15)
    assert outcomes[:10] == ["generated"] * 10 and outcomes[10:soon] == ["verify"] * native.FAILED_RECHECK
    assert outcomes[soon:] == ["generated"] * (15 - soon) and len(calls) == 4
    assert held[soon] == held[0] and anon.stats["switched"] == 0
    # ... the soon re-check fails too (the face and its redraw): the fresh start comes 10 frames after the failure
    held, outcomes, _ = run({2, 3, 4, 5}, 22)
    assert outcomes[10:20] == ["verify"] * 10 and outcomes[20:] == ["generated"] * 2 and len(calls) == 6
    # never drawn: frame 0's checks all fail (the bank face, its redraw, another one); checked again at frame 10
    _, outcomes, _ = run({1, 2, 3}, 12)
    assert outcomes[:10] == ["verify"] * 10 and outcomes[10:] == ["generated"] * 2 and len(calls) == 4


@needs_dlib
def test_a_track_drawn_with_another_bank_face_is_counted_as_a_switch(astronaut, astronaut_face, monkeypatch):
    """When a track's fresh start after a failed re-check passes only on another bank face, the
    same head is a new fake person from then on: the run's stats count it (`switched`, in the
    report and the summary), and a clip that keeps its bank face counts none."""
    from fiva import Anonymizer
    from fiva.anonymize import native
    from fiva.anonymize.runner import describe_stats

    d, _ = astronaut_face
    anon = Anonymizer(generator="anchor-face", defense="none", reembed_every=2, progress=False)
    calls = []

    def still_same(*args, **kwargs):
        # frame 2's re-check and redraw fail, frame 4's (its shown face again) too, then the next
        # frame's fresh start on the ITM's bank face and its redraw: another bank face passes
        calls.append(1)
        return 2 <= len(calls) <= 7

    monkeypatch.setattr(native, "_still_same", still_same)
    held, outcomes = _frames_of_one_track(anon, astronaut, d, 7)
    assert outcomes == ["generated"] * 2 + ["verify"] * 3 + ["generated"] * 2 and len(calls) == 8
    assert None not in (held[0], held[5]) and held[5] != held[0] and held[6] == held[5]
    assert anon.stats["switched"] == 1
    assert "another fake identity 1 time(s)" in describe_stats(anon.stats, "pixelate")


def test_kept_lips_thin_the_lips_towards_the_inner_outline_and_keep_the_corners(astronaut_face):
    from fiva.anonymize.masks import kept_lips
    from fiva.faces.landmarks68 import INNER_LIPS, LIPS

    _, shape = astronaut_face
    area = lambda p: abs(cv2.contourArea(p.astype(np.float32)))  # noqa: E731
    assert np.array_equal(kept_lips(shape, 1.0), shape[LIPS]) and np.array_equal(kept_lips(shape, True), shape[LIPS])
    assert np.array_equal(kept_lips(shape, 0.0), shape[INNER_LIPS])
    half = kept_lips(shape, 0.5)
    assert area(shape[INNER_LIPS]) < area(half) < area(shape[LIPS])
    width = lambda p: float(np.linalg.norm(p[0] - p[6]))  # noqa: E731  (corners 48 and 54)
    inner_width = float(np.linalg.norm(shape[60] - shape[64]))
    assert width(half) >= (width(shape[LIPS]) + inner_width) / 2 - 1.0
    # above 1 the skin around the lips too (EXPRESSION_STEPS' last): the lips inside it, grown by
    # about the share beyond 1 of their thickness, wider at the corners too
    more = kept_lips(shape, 1.5)
    assert area(more) > 1.3 * area(shape[LIPS]) and width(more) > width(shape[LIPS])
    inside = [cv2.pointPolygonTest(more.astype(np.float32), (float(x), float(y)), False) >= 0 for x, y in shape[LIPS]]
    assert all(inside)


def test_a_still_tracks_points_are_smoothed_hard_and_a_moving_ones_lightly():
    from fiva.anonymize.native import SHAPE_MOVING, SHAPE_SMOOTHING, shape_weight

    rng = np.random.default_rng(0)
    prev = rng.uniform(0, 112, (68, 2))
    jitter = prev + rng.normal(0, 0.3, prev.shape)  # ~0.01 eye distances (ARCFACE_112's eyes are 38 px apart)
    assert shape_weight(jitter, prev, 38.3) == SHAPE_SMOOTHING[0]
    turned = prev + np.array([SHAPE_MOVING[1] * 38.3 * 1.5, 0.0])
    assert shape_weight(turned, prev, 38.3) == SHAPE_SMOOTHING[1]
    mouth = prev.copy()
    mouth[48:] += 10.0  # a speaking mouth (and only it) moves: still smoothed hard
    assert shape_weight(mouth, prev, 38.3) == SHAPE_SMOOTHING[0]


def test_a_still_heads_opening_mouth_is_followed_at_once_and_its_jitter_still_smoothed():
    """liveportrait_d0: a grin opened over 3 frames on a still head, and the track's points, smoothed
    as the head is (0.95 of the last frame's), drew it closed for 10 frames and half open for 30 more."""
    from fiva.anonymize.native import SHAPE_SMOOTHING, smoothed_shape

    rng = np.random.default_rng(0)
    iod = 38.3
    prev = rng.uniform(0, 112, (68, 2))
    jitter = prev + rng.normal(0, 0.3, prev.shape)  # dlib's jitter, ~0.01 eye distances
    out = smoothed_shape(jitter, prev, iod)
    assert np.allclose(out, SHAPE_SMOOTHING[0] * prev + (1 - SHAPE_SMOOTHING[0]) * jitter)  # every part smoothed hard
    opened = jitter.copy()
    opened[np.r_[55:60, 64:68]] += [0.0, 0.3 * iod]  # the lower lip drops by 0.3 eye distances
    shown = prev
    for _ in range(3):  # the mouth stays open
        shown = smoothed_shape(opened, shown, iod)
    drop = (shown[57, 1] - prev[57, 1]) / iod
    assert drop > 0.2  # the drawing's lower lip is most of the way there after 3 frames (0.04 when smoothed as the head)
    still = np.r_[0:48]  # outline, brows, nose and eyes did not move: still smoothed hard
    assert np.abs(shown[still] - prev[still]).max() < np.abs(jitter[still] - prev[still]).max()


@needs_dlib
def test_a_track_that_passed_on_a_retry_keeps_drawing_with_less_of_the_target(astronaut, astronaut_face, monkeypatch):
    """liveportrait_d0: SFace still matched the drawing of a talking head whose own lids are kept,
    and the one video retry drew it alike, so nearly every frame was obfuscated. A video retry
    redraws the same bank face with VIDEO_RETRY_RENDER (no lid margin, geometry moved further),
    and a track it passed keeps that drawing on the frames between re-checks and at them."""
    from fiva import Anonymizer
    from fiva.anonymize import native

    d, _ = astronaut_face
    anon = Anonymizer(generator="anchor-face", defense="none", reembed_every=2, progress=False)
    margins, faces = [], []  # the eye margin of every drawing (searches draw too), the bank face of each search
    search, draw = native._search, native.AnchorFaceRenderer.draw

    def spy_search(renderer, out, shape, index, *args, **kwargs):
        faces.append((index, len(margins)))
        return search(renderer, out, shape, index, *args, **kwargs)

    def spy_draw(self, *args, **kwargs):
        margins.append(self.cfg.eye_margin)
        return draw(self, *args, **kwargs)

    checks = []

    def still_same(*args, **kwargs):  # only the very first drawing still matches
        checks.append(1)
        return len(checks) == 1

    monkeypatch.setattr(native, "_search", spy_search)
    monkeypatch.setattr(native.AnchorFaceRenderer, "draw", spy_draw)
    monkeypatch.setattr(native, "_still_same", still_same)
    held, outcomes = _frames_of_one_track(anon, astronaut, d, 4)
    retry = native.VIDEO_RETRY_RENDER["eye_margin"]
    assert retry < anon.generator.renderer.cfg.eye_margin
    assert outcomes == ["generated"] * 4 and anon.stats["retried"] == 1
    (first, _), (again, start) = faces[:2]
    assert again == first and len(set(held)) == 1  # the same bank face, kept by the track
    assert set(margins[:start]) == {anon.generator.renderer.cfg.eye_margin}
    assert len(margins) > start + 3 and set(margins[start:]) == {retry}  # the retry, 3 frames between and at re-checks


@needs_dlib
def test_a_video_tracks_raised_brows_are_drawn_raised(bank, astronaut_face):
    """issue 16 (talking heads): the drawn brows were moved from the target's raised brows towards
    the bank face's, 1.5x the way, so a raise was drawn as brows held down, a frown. Along a track
    the move is taken from the brows at rest, and the raise since is added back."""
    from collections import deque

    from fiva.anonymize.anchor_face import AnchorFaceRenderer
    from fiva.anonymize.native import brow_rest
    from fiva.faces.landmarks68 import brow_pose

    _, shape = astronaut_face
    shape = shape.astype(np.float32)
    iod = float(np.linalg.norm(shape[36:42].mean(0) - shape[42:48].mean(0)))
    raised = shape.copy()
    raised[17:27, 1] -= 0.1 * iod  # the brows up by 0.1 eye distances
    history = deque(maxlen=150)
    for _ in range(30):  # a track at rest
        assert np.array_equal(brow_rest(history, shape, iod), shape)
    rest = brow_rest(history, raised, iod)
    assert np.allclose(rest, shape, atol=1e-4)  # the raise is told from the rest
    renderer = AnchorFaceRenderer(bank)
    for index in range(0, len(bank), 7):
        at_rest = brow_pose(renderer.new_shape(shape, index))[0]
        followed = brow_pose(renderer.new_shape(raised, index, rest))[0]
        before = brow_pose(renderer.new_shape(raised, index))[0]
        assert followed - at_rest > 0.07  # the drawn brows go up with the target's
        assert before - at_rest < 0.03  # moved from the raised brows, they did not
    far = shape.copy()
    far[17:27, 1] -= 0.3 * iod  # a dlib misfit far above the rest: at most BROW_EXPRESSION of it is a raise
    assert np.abs(brow_rest(history, far, iod)[17:27, 1] - (far[17:27, 1] + 0.15 * iod)).max() < 1e-3
    frown = shape.copy()
    frown[17:27, 1] += 0.1 * iod  # lowered brows are moved from as they are (BROW_FROWN 0)
    assert np.array_equal(brow_rest(history, frown, iod), frown)


@needs_dlib
def test_an_ended_tracks_state_is_forgotten_and_its_person_keeps_the_fake_identity(astronaut, astronaut_face):
    """A long crowd video held every passer-by's track state (identity, 68 points, brow history,
    colour statistics, the original's dlib descriptor) until it ended. The astronaut seen for 3
    frames, gone for 8 (her track ends), back for 3: nothing of the first track is kept once it
    ended, and the ITM still gives her second track the bank face of her first."""
    from fiva import Anonymizer
    from fiva.anonymize.frame import VideoStream, track_of
    from fiva.faces import Detections

    d, _ = astronaut_face
    anon = Anonymizer(generator="anchor-face", defense="none", progress=False)
    shown = [True] * 3 + [False] * 8 + [True] * 3
    seen = iter(shown)
    anon.detect = lambda rgb: d[:1] if next(seen) else Detections.empty()
    video = VideoStream(anon, look_ahead=False)
    tracks, faces = [], []

    def spy(rgb, dets, tracks_):
        tracks.append(sorted({track_of(k) for k in anon._tracks}))
        out = real(rgb, dets, tracks_)
        if len(dets):
            faces.append(anon.generator.bank.index_of(anon._tracks[int(tracks_[0])]["z_a"]))
        return out

    real, anon.anonymize_frame = anon.anonymize_frame, spy
    for _ in shown:
        video.push(astronaut)
    video.flush()
    assert tracks[3] == [0] and tracks[4] == []  # kept while it lived, forgotten in the frame after it ended
    assert 0 not in {track_of(k) for k in anon._tracks}
    assert any(isinstance(k, tuple) and k[1] == 1 for k in anon._tracks)  # the second track's state is there
    assert anon.stats["generated"] == 6 and len(set(faces)) == 1  # one person, one fake identity
