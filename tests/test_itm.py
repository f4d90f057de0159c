"""Identity Tracking Module (Algorithm 1) and anchor sampling (Eq. 1)."""
import numpy as np
import pytest

from fiva.anonymize.anchors import AnchorSpace, build_anchor_space, slerp
from fiva.anonymize.itm import IdentityTrackingModule
from fiva.weights import DEFAULT_ANCHORS


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture
def means():
    return unit(np.random.default_rng(0).normal(size=(300, 128)))


def test_slerp_midpoint_is_unit_and_equidistant():
    a, b = unit(np.random.default_rng(1).normal(size=(5, 128))), unit(np.random.default_rng(2).normal(size=(5, 128)))
    m = slerp(a, b)
    assert np.allclose(np.linalg.norm(m, axis=1), 1)
    assert np.allclose((m * a).sum(1), (m * b).sum(1), atol=1e-6)


def test_anchor_space_mixes_people_and_never_holds_a_real_one(means):
    s = build_anchor_space(means, size=1000)
    assert s.shape == (1000, 128) and np.allclose(np.linalg.norm(s, axis=1), 1, atol=1e-5)
    assert (s @ means.T).max() < 0.99  # no anchor is one of the identities it was built from


def test_sampling_is_far_from_z_and_minus_z(means):
    space = AnchorSpace(build_anchor_space(means, size=5000))
    for z in unit(np.random.default_rng(3).normal(size=(20, 128))):
        za = space.sample(z)
        assert abs(float(za @ z)) < 0.05  # Eq. 1 with m = 0: neither z nor -z
    margin = AnchorSpace(space.anchors, margin=0.3)
    z = means[0]
    assert abs(abs(float(margin.sample(z) @ z)) - 0.3) < 0.05


def test_itm_keeps_one_fake_identity_per_person(means):
    itm = IdentityTrackingModule(AnchorSpace(build_anchor_space(means, size=2000)), threshold=0.6)
    alice, bob = means[0], means[1]
    rng = np.random.default_rng(4)
    za, ka = itm(alice)
    for _ in range(5):  # the same person in later frames: small changes of the embedding
        zb, kb = itm(unit(alice + 0.03 * rng.normal(size=128)))
        assert kb == ka and np.array_equal(zb, za)
    zbob, kbob = itm(bob)
    assert kbob != ka and not np.array_equal(zbob, za) and len(itm) == 2
    itm.reset()
    assert len(itm) == 0


def test_itm_threshold_decides_a_match(means):
    itm = IdentityTrackingModule(AnchorSpace(build_anchor_space(means, size=500)), threshold=0.2)
    _, k0 = itm(means[0])
    far = unit(means[0] + 0.9 * means[1])  # cosine distance ~0.25 from means[0]
    assert 1 - far @ means[0] > 0.2
    _, k1 = itm(far)
    assert k1 != k0


def test_shipped_anchor_space_is_large_and_unit():
    space = AnchorSpace.load(DEFAULT_ANCHORS)
    assert space.anchors.shape[0] >= 10_000 and space.anchors.shape[1] == 128
    assert np.allclose(np.linalg.norm(space.anchors, axis=1), 1, atol=1e-3)


def test_anchors_build_command(tmp_path, astronaut):
    import cv2

    from fiva.cli import main
    from fiva.io import write_image

    for person, img in (("a", astronaut), ("b", cv2.resize(astronaut[30:450, 60:480], (400, 400)))):
        write_image(tmp_path / "ids" / person / "1.png", img)
        write_image(tmp_path / "ids" / person / "2.png", np.ascontiguousarray(img[:, ::-1]))
    out = tmp_path / "anchors.safetensors"
    assert main(["anchors", "build", "--data", str(tmp_path / "ids"), "--out", str(out), "--size", "50"]) == 0
    space = AnchorSpace.load(out)
    assert space.anchors.shape == (50, 128)
