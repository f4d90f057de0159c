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
