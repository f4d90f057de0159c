"""Face tracks: missed frames are filled in, landmarks do not jitter, every frame comes back."""
from __future__ import annotations

import numpy as np

from fiva.anonymize.track import FaceTracker
from fiva.faces import Detections


def _face(x: float, y: float = 50.0, s: float = 40.0) -> tuple[np.ndarray, np.ndarray]:
    box = np.array([x, y, x + s, y + s], np.float32)
    lm = np.array([[x + 12, y + 15], [x + 28, y + 15], [x + 20, y + 24], [x + 14, y + 32], [x + 26, y + 32]], np.float32)
    return box, lm


def _dets(faces) -> Detections:
    if not faces:
        return Detections.empty()
    return Detections(np.stack([f[0] for f in faces]), np.ones(len(faces), np.float32), np.stack([f[1] for f in faces]))


def _run(tracker, frames):
    out = []
    for i, faces in enumerate(frames):
        out += tracker.push(np.full((4, 4, 3), i, np.uint8), _dets(faces))
    return out + tracker.flush()


def test_a_face_missed_for_a_few_frames_is_filled_in_by_interpolation():
    frames = [[_face(10 + 3 * i)] if i not in (5, 6, 7) else [] for i in range(20)]
    out = _run(FaceTracker(max_gap=5), frames)
    assert [int(img[0, 0, 0]) for img, _ in out] == list(range(20))  # every frame, in order
    for i, (_, tf) in enumerate(out):
        assert len(tf.dets) == 1 and tf.tracks[0] == out[0][1].tracks[0]
        assert bool(tf.filled[0]) == (i in (5, 6, 7))
        np.testing.assert_allclose(tf.dets.boxes[0], _face(10 + 3 * i)[0], atol=1e-3)  # steady motion: exact


def test_a_gap_longer_than_max_gap_is_not_bridged():
    frames = [[_face(10.0)] if i < 3 or i > 10 else [] for i in range(14)]
    out = _run(FaceTracker(max_gap=3), frames)
    assert [len(tf.dets) for _, tf in out] == [1, 1, 1] + [0] * 8 + [1, 1, 1]
    assert out[0][1].tracks[0] != out[-1][1].tracks[0]  # a new track after a long absence


def test_landmark_jitter_is_smoothed_and_two_faces_keep_their_tracks():
    rng = np.random.default_rng(0)
    frames = []
    for i in range(30):
        a, b = _face(20.0), _face(200.0)
        a = (a[0], a[1] + rng.normal(0, 1.5, a[1].shape).astype(np.float32))
        frames.append([a, b] if i % 2 else [b, a])  # detection order changes; identities must not
    out = _run(FaceTracker(), frames)
    ids_left = {int(tf.tracks[np.argmin(tf.dets.boxes[:, 0])]) for _, tf in out}
    ids_right = {int(tf.tracks[np.argmax(tf.dets.boxes[:, 0])]) for _, tf in out}
    assert len(ids_left) == 1 and len(ids_right) == 1 and ids_left != ids_right
    raw = np.stack([next(f for f in fr if f[0][0] < 100)[1] for fr in frames])
    smooth = np.stack([tf.dets.landmarks[np.argmin(tf.dets.boxes[:, 0])] for _, tf in out])
    truth = _face(20.0)[1]
    assert np.abs(smooth - truth)[3:-3].mean() < 0.7 * np.abs(raw - truth)[3:-3].mean()


def test_a_video_stream_detecting_ahead_on_its_own_thread_gives_the_same_frames(astronaut):
    """A video's next frame is detected on a thread of its own while this frame is drawn (d13:
    54 s -> 46 s): the same frames come back, in order, none lost at the end, and every frame's
    faces were found on that thread."""
    import threading

    import torch

    from fiva import Anonymizer
    from fiva.anonymize.frame import VideoStream

    frames = [np.roll(astronaut, (2 * i, 3 * i), axis=(0, 1)) for i in range(7)]
    frames[3] = frames[3] // 4  # a dark frame: the face missed and filled in
    outs, threads, torch_threads = [], [], torch.get_num_threads()
    for ahead in (False, True):
        anon = Anonymizer(progress=False, seed=0)
        stream = VideoStream(anon, look_ahead=ahead)
        if ahead:
            detector = stream._detector
            stream._detector = lambda rgb: (threads.append(threading.current_thread()), detector(rgb))[1]
            # the drawing's torch leaves a core to the detection thread (crowd clip: 7-10% faster)
            assert torch.get_num_threads() == max(torch_threads - 1, 1)
        got = [f for rgb in frames for f in stream.push(rgb.copy())] + stream.flush()
        assert torch.get_num_threads() == torch_threads
        outs.append(got)
    assert len(outs[1]) == len(frames) == len(outs[0])
    assert all(np.array_equal(a, b) for a, b in zip(*outs))
    assert not all(np.array_equal(a, f) for a, f in zip(outs[1], frames))  # the face is drawn
    assert len(threads) == len(frames) and threading.main_thread() not in threads
    # the thread's detector has the anonymizer's settings (a stricter score here), not the defaults
    from fiva.faces import FaceDetector

    anon.detector = FaceDetector(score_threshold=0.95)
    assert VideoStream(anon, look_ahead=True)._detector.score_threshold == 0.95
