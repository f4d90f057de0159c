"""Face stack: YuNet detection, ArcFace alignment, paste-back, SFace identity encoder."""
import cv2
import numpy as np
import pytest

from fiva.faces import FaceDetector, align_faces, paste_back, template
from fiva.faces.identity import load_sface

from conftest import lfw_image, needs_lfw


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture(scope="module")
def sface():
    return load_sface()


def test_detector_finds_the_astronaut_with_landmarks_inside_the_box(detector, astronaut):
    d = detector(astronaut)
    assert len(d) == 1 and d.boxes.shape == (1, 4) and d.landmarks.shape == (1, 5, 2)
    x1, y1, x2, y2 = d.boxes[0]
    lm = d.landmarks[0]
    assert (lm[:, 0] > x1).all() and (lm[:, 0] < x2).all() and (lm[:, 1] > y1).all() and (lm[:, 1] < y2).all()
    assert lm[0, 0] < lm[1, 0]  # first eye on the image's left, as in the template


def test_detector_returns_fixed_shapes_without_faces(detector):
    d = detector(np.full((200, 300, 3), 127, np.uint8))
    assert len(d) == 0 and d.boxes.shape == (0, 4) and d.scores.shape == (0,) and d.landmarks.shape == (0, 5, 2)


def test_detector_works_on_large_and_odd_sized_images(detector, astronaut):
    big = cv2.resize(astronaut, (2501, 2503))
    d = detector(big)
    assert len(d) >= 1  # detections come sorted by score: the astronaut first
    ref = detector(astronaut).boxes[0] * (2501 / 512)
    assert np.abs(d.boxes[0] - ref).max() < 0.05 * 2501


def test_alignment_maps_landmarks_onto_the_template(detector, astronaut):
    d = detector(astronaut)
    for size in (112, 256):
        crops, mats = align_faces(astronaut, d.landmarks, size)
        assert crops.shape == (1, size, size, 3)
        mapped = np.c_[d.landmarks[0], np.ones(5)] @ mats[0].T
        assert np.abs(mapped - template(size)).max() < 0.08 * size


def test_points_are_carried_where_the_warp_carries_their_pixels():
    # every step that warps an image (turning a head upright, the bank's canonical frame) carries
    # its points with `transform_points`: a dot warped by cv2 must land where its point does
    from fiva.faces.align import similarity_transform, transform_points

    ys, xs = np.mgrid[:200, :240]
    img = np.exp(-((xs - 143.0) ** 2 + (ys - 57.0) ** 2) / (2 * 4.0 ** 2)).astype(np.float32)  # a soft dot at (143, 57)
    m = similarity_transform(np.array([[10, 20], [200, 40], [90, 180]], np.float32),
                             np.array([[30, 15], [180, 70], [60, 170]], np.float32))
    warped = cv2.warpAffine(img, m, (240, 200), flags=cv2.INTER_LINEAR)
    centre = np.array([(xs * warped).sum(), (ys * warped).sum()]) / warped.sum()
    assert np.abs(transform_points(m, np.array([[143.0, 57.0]]))[0] - centre).max() < 0.05
    assert transform_points(m, np.zeros((3, 5, 2), np.float32)).shape == (3, 5, 2)


def test_a_big_faces_aligned_crop_is_the_same_at_any_size(detector, sface, astronaut):
    # the astronaut's face 4x larger, with fine grain (pores, noise) a shrinking warp must average,
    # not sample: read at two sizes the crop is the same face (the identity models see one person)
    big = cv2.resize(astronaut, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC).astype(np.int16)
    big = np.clip(big + np.random.default_rng(0).integers(-40, 41, big.shape[:2])[..., None], 0, 255).astype(np.uint8)
    lm = detector(astronaut).landmarks[:1] * 4
    crops = [align_faces(big, lm, 112)[0][0]]
    for s in (0.5, 0.25):
        crops.append(align_faces(cv2.resize(big, None, fx=s, fy=s, interpolation=cv2.INTER_AREA), lm * s, 112)[0][0])
    for c in crops[1:]:
        assert np.abs(c.astype(int) - crops[0]).mean() < 6  # 2.1 and 4.8 grey levels; sampled unblurred: 10.8 and 13.5
    e = sface.embed(np.stack(crops))
    assert (e[1:] @ e[0]).min() > 0.97  # 0.990; sampled unblurred: 0.882


def test_paste_back_leaves_pixels_outside_the_mask_bit_exact(detector, astronaut):
    d = detector(astronaut)
    crops, mats = align_faces(astronaut, d.landmarks, 112)
    out = paste_back(astronaut, 255 - crops[0], mats[0])
    changed = np.any(out != astronaut, axis=2)
    ys, xs = np.nonzero(changed)
    x1, y1, x2, y2 = d.boxes[0]
    w = x2 - x1
    assert changed.sum() > 1000
    assert xs.min() > x1 - w and xs.max() < x2 + w and ys.min() > y1 - w and ys.max() < y2 + w
    assert np.array_equal(out[300:], astronaut[300:])  # the lower half is far from the face


def test_sface_is_stable_under_flip_rescale_and_jpeg(detector, sface, astronaut):
    crop = align_faces(astronaut, detector(astronaut).landmarks, 112)[0]
    small = cv2.resize(cv2.resize(crop[0], (64, 64), interpolation=cv2.INTER_AREA), (112, 112))[None]
    jpeg = cv2.imdecode(cv2.imencode(".jpg", crop[0], [cv2.IMWRITE_JPEG_QUALITY, 40])[1], cv2.IMREAD_UNCHANGED)[None]
    e = sface.embed(np.concatenate([crop, crop[:, :, ::-1], small, jpeg]))
    assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-4)
    assert (e[1:] @ e[0]).min() >= 0.9


def test_sface_with_its_norms_folded_embeds_as_the_converted_model_does(detector, sface, astronaut):
    import torch
    from safetensors.torch import load_file

    from fiva.faces.identity import SFace, sface_weights_path

    plain = SFace()
    plain.load_state_dict(load_file(str(sface_weights_path())))
    plain.eval()
    norms = [m for m in sface.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms == [sface.bn1]  # only the one before the flatten is left
    crop = align_faces(astronaut, detector(astronaut).landmarks, 112)[0]
    crops = np.concatenate([crop, crop[:, ::-1], 255 - crop])
    assert np.abs(sface.embed(crops) - plain.embed(crops)).max() < 1e-5
    x = torch.rand(2, 3, 112, 112, requires_grad=True)
    sface.identity(x * 2 - 1).sum().backward()  # training losses still reach the input
    assert x.grad is not None and x.grad.abs().sum() > 0


@needs_lfw
def test_sface_separates_different_people_and_matches_the_same(detector, sface):
    def emb(name, n):
        img = lfw_image(name, n)
        d = detector(img)
        i = d.largest()
        return sface.embed(align_faces(img, d.landmarks[i : i + 1])[0])[0]

    people = ["George_W_Bush", "Colin_Powell", "Tony_Blair", "Serena_Williams"]
    a = np.stack([emb(p, 1) for p in people])
    b = np.stack([emb(p, 2) for p in people])
    sim = a @ b.T
    assert np.diag(sim).min() > 0.5  # the same person, another photo
    assert sim[~np.eye(4, dtype=bool)].max() < 0.3  # different people


@pytest.mark.parametrize("degrees", [-40, 45])
def test_a_tilted_heads_68_points_are_found_as_on_the_upright_head(astronaut, astronaut_face, degrees):
    """dlib's predictor expects an upright face: on a head tilted onto a shoulder its points for
    the mouth landed on the chin (group_t1.jpg), and the face was drawn over them."""
    import cv2

    from fiva.faces.landmarks68 import Landmarker68

    d, upright = astronaut_face
    big = cv2.copyMakeBorder(astronaut, 200, 200, 200, 200, cv2.BORDER_REFLECT)
    m = cv2.getRotationMatrix2D((big.shape[1] / 2, big.shape[0] / 2), degrees, 1.0)
    tilted = cv2.warpAffine(big, m, big.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    turn = lambda p: (p + 200) @ m[:, :2].T + m[:, 2]  # noqa: E731
    got = Landmarker68()(tilted, turn(d.landmarks[:1]))[0]
    iod = float(np.linalg.norm(d.landmarks[0, 1] - d.landmarks[0, 0]))
    assert np.linalg.norm(got - turn(upright), axis=1).mean() / iod < 0.04


@needs_lfw
@pytest.mark.parametrize("name, n, degrees", [("Hugo_Chavez", 49, 30), ("Hugo_Chavez", 49, 40), ("David_Caruso", 3, 50)])
def test_dlib_reads_a_tilted_head_as_the_same_person_as_upright(name, n, degrees):
    """dlib's recognizer aligns a face with its own 5-point predictor, which expects an upright
    face: these heads, turned in the image, read 0.46-0.61 from their own upright selves (0.6 is
    "another person"). The evaluator, and the verification that asks whether a drawing is still
    its original, read them upright: under 0.2."""
    from fiva.faces.identity import DlibEvaluator

    ev, det = DlibEvaluator(), FaceDetector(score_threshold=0.5)
    img = cv2.copyMakeBorder(lfw_image(name, n), 80, 80, 80, 80, cv2.BORDER_REFLECT)
    centre = np.array(img.shape[1::-1], np.float32) / 2

    def middle_face(rgb):  # not a mirrored copy in the border
        d = det(rgb)
        return d.boxes[np.argmin(np.linalg.norm((d.boxes[:, :2] + d.boxes[:, 2:]) / 2 - centre, axis=1))]

    m = cv2.getRotationMatrix2D(tuple(float(v) for v in centre), degrees, 1.0)
    turned = cv2.warpAffine(img, m, img.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    assert ev.distance(ev.embed(img, middle_face(img)), ev.embed(turned, middle_face(turned))) < 0.2
