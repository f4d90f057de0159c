"""The anonymization pipeline on real faces: what changes, what must not, and identity tracking."""
import numpy as np
import pytest

from fiva import Anonymizer
from fiva.faces import Detections
from fiva.faces.identity import DlibEvaluator

from conftest import lfw_image, needs_dlib, needs_lfw


@pytest.fixture(scope="module")
def anonymizer():
    return Anonymizer()


def face_change(a, b, box):
    x1, y1, x2, y2 = box.astype(int)
    return np.abs(a[y1:y2, x1:x2].astype(int) - b[y1:y2, x1:x2]).mean()


def test_pixels_away_from_faces_are_unchanged(anonymizer, astronaut):
    out = anonymizer.anonymize_image(astronaut)
    assert out.shape == astronaut.shape and out.dtype == np.uint8
    box = anonymizer.detect(astronaut).boxes[0]
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    far = np.ones(astronaut.shape[:2], bool)
    far[max(0, int(y1 - h)) : int(y2 + h), max(0, int(x1 - w)) : int(x2 + w)] = False
    assert np.array_equal(out[far], astronaut[far])
    assert face_change(out, astronaut, box) > 3  # the face itself changed


def test_an_image_without_faces_comes_back_identical(anonymizer):
    img = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    out = anonymizer.anonymize_image(img)
    assert np.array_equal(out, img) and out is not img


def test_the_input_array_is_not_modified(anonymizer, astronaut):
    before = astronaut.copy()
    anonymizer.anonymize_image(astronaut)
    assert np.array_equal(before, astronaut)


@needs_dlib
def test_the_anonymized_face_no_longer_matches_its_original(anonymizer, astronaut):
    ev = DlibEvaluator()
    box = anonymizer.detect(astronaut).boxes[0]
    out = anonymizer.anonymize_image(astronaut)
    assert ev.distance(ev.embed(astronaut, box), ev.embed(out, box)) > ev.MATCH_THRESHOLD


@pytest.mark.parametrize("method", ["blur", "pixelate", "mask"])
def test_baseline_methods_change_the_face_only(astronaut, method):
    anon = Anonymizer(method=method)
    out = anon.anonymize_image(astronaut)
    box = anon.detect(astronaut).boxes[0]
    assert face_change(out, astronaut, box) > 5
    assert np.array_equal(out[400:], astronaut[400:])


def test_same_person_keeps_one_fake_identity_across_frames(astronaut):
    anon = Anonymizer()
    rng = np.random.default_rng(0)
    for i in range(4):  # frames of one scene: small shifts and noise
        frame = np.roll(astronaut, 3 * i, axis=1).astype(np.int16) + rng.integers(-4, 5, astronaut.shape)
        anon.anonymize_image(np.clip(frame, 0, 255).astype(np.uint8))
    assert len(anon.itm) == 1


@needs_lfw
def test_a_second_person_gets_another_fake_identity(astronaut):
    anon = Anonymizer()
    other = lfw_image("Colin_Powell", 1)
    canvas = np.zeros((512, 768, 3), np.uint8)
    canvas[:, :512] = astronaut
    canvas[131:381, 512:762] = other
    anon.anonymize_image(canvas)
    assert len(anon.itm) == 2
    keys = {anon.itm(z)[1] for z in anon.itm.pairs()[0]}
    assert keys == {0, 1}


def test_bad_input_type_is_refused(anonymizer):
    with pytest.raises(ValueError, match="RGB uint8"):
        anonymizer.anonymize_image(np.zeros((10, 10), np.float32))


def test_fallback_none_keeps_the_generated_face(astronaut):
    kept = Anonymizer(fallback="none")
    out = kept.anonymize_image(astronaut)
    assert kept.stats["faces"] == 1 and kept.stats["generated"] == 1
    checked = Anonymizer(fallback="blur")
    out_b = checked.anonymize_image(astronaut)
    fell_back = checked.stats["fallback_verify"]
    assert fell_back + checked.stats["generated"] == 1
    # The check changes the face only when the first anchor's face still matches its original:
    # then a second anchor is tried, and the fallback obfuscates the face if that one matches too.
    assert np.array_equal(out, out_b) == (checked.stats["retried"] == 0)
    if fell_back:
        assert checked.stats["retried"] == 1


def test_faces_the_generator_cannot_serve_get_the_fallback_never_nothing(astronaut):
    anon = Anonymizer(fallback="pixelate", verify=False)
    d = anon.detect(astronaut)
    box, lm = d.boxes[0], d.landmarks[0]
    h, w = astronaut.shape[:2]

    def faces(boxes, lms):
        return Detections(np.array(boxes, np.float32), np.ones(len(boxes), np.float32), np.array(lms, np.float32))

    tiny = faces([[10, 10, 30, 30]], [lm * 0.1 + 8])
    profile_lm = lm.copy()
    profile_lm[2, 0] = lm[1, 0] + 10  # nose tip beyond the far eye: a head turned sideways
    cut = box.copy()
    cut[[0, 2]] -= box[0] + (box[2] - box[0]) * 0.6  # 60% of the box left of the frame
    assert anon.triage((h, w), tiny) == ["small"]
    assert anon.triage((h, w), faces([box], [profile_lm])) == ["profile"]
    assert anon.triage((h, w), faces([cut], [lm])) == ["border"]
    assert anon.triage((h, w), d[:1]) == ["ok"]
    out = anon.anonymize_frame(astronaut, tiny)
    assert anon.stats["fallback_small"] == 1 and not np.array_equal(out[10:30, 10:30], astronaut[10:30, 10:30])
    assert np.array_equal(out[100:, 100:], astronaut[100:, 100:])
    everything = Anonymizer(fallback="none", verify=False)
    assert everything.triage((h, w), tiny) == ["ok"]  # 'none': the generator takes them all


def test_unknown_fallback_is_refused():
    with pytest.raises(ValueError, match="unknown fallback"):
        Anonymizer(fallback="sparkles")
