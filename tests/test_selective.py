"""Selective anonymization (--keep / --only) and the opt-in identity store."""
from __future__ import annotations

import stat

import numpy as np
import pytest
from conftest import lfw_image, needs_lfw

from fiva import Anonymizer
from fiva.cli import main
from fiva.io import read_image, write_image


@pytest.fixture
def two_people(tmp_path):
    """One picture with two LFW people side by side, and another photo of each as a reference."""
    a, b = lfw_image("George_W_Bush", 1), lfw_image("Colin_Powell", 1)
    write_image(tmp_path / "pair.png", np.concatenate([a, b], axis=1))
    write_image(tmp_path / "bush_ref.jpg", lfw_image("George_W_Bush", 10))
    write_image(tmp_path / "powell_ref.jpg", lfw_image("Colin_Powell", 10))
    return tmp_path


def _halves_changed(original, out):
    w = original.shape[1] // 2
    return [not np.array_equal(original[:, :w], out[:, :w]), not np.array_equal(original[:, w:], out[:, w:])]


@needs_lfw
def test_keep_leaves_the_reference_person_untouched_and_only_anonymizes_just_them(two_people):
    src = read_image(two_people / "pair.png")
    kept = Anonymizer(keep=(str(two_people / "bush_ref.jpg"),), verify=False).anonymize_image(src)
    assert _halves_changed(src, kept) == [False, True]
    only = Anonymizer(only=(str(two_people / "bush_ref.jpg"),), verify=False, method="blur").anonymize_image(src)
    assert _halves_changed(src, only) == [True, False]
    with pytest.raises(ValueError, match="exclude each other"):
        Anonymizer(keep=("a.jpg",), only=("b.jpg",))


@needs_lfw
def test_a_reference_photo_without_a_face_is_a_clear_error(two_people, capsys):
    write_image(two_people / "wall.png", np.full((200, 200, 3), 128, np.uint8))
    rc = main(["anonymize", str(two_people / "pair.png"), "--keep", str(two_people / "wall.png"), "--no-progress"])
    assert rc == 2 and "wall.png: no face found in the reference photo" in capsys.readouterr().err


@needs_lfw
def test_identity_store_gives_one_fake_identity_across_runs_and_purges(tmp_path):
    for i, n in enumerate((1, 2)):
        write_image(tmp_path / "in" / f"bush{i}.jpg", lfw_image("George_W_Bush", n))
    store = tmp_path / "ids.safetensors"
    before = set(tmp_path.rglob("*"))
    assert main(["anonymize", str(tmp_path / "in" / "bush0.jpg"), "-o", str(tmp_path / "o1"), "--no-progress"]) == 0
    written = set(tmp_path.rglob("*")) - before
    assert all("o1" in str(p) for p in written)  # without the option no identity file appears
    assert main(["anonymize", str(tmp_path / "in" / "bush0.jpg"), "-o", str(tmp_path / "o2"),
                 "--identity-store", str(store), "--no-progress"]) == 0
    assert stat.S_IMODE(store.stat().st_mode) == 0o600  # biometric data: owner only
    first = Anonymizer()
    first.itm.load(store)
    assert len(first.itm) == 1
    assert main(["anonymize", str(tmp_path / "in" / "bush1.jpg"), "-o", str(tmp_path / "o3"),
                 "--identity-store", str(store), "--no-progress"]) == 0
    second = Anonymizer()
    second.itm.load(store)
    assert len(second.itm) == 1  # the same person, recognised from the store: no new fake identity
    assert np.array_equal(second.itm._f_id[0], first.itm._f_id[0])
    assert main(["identities", "purge", str(store)]) == 0 and not store.exists()
    assert main(["identities", "purge", str(store)]) == 2  # nothing there: a clear error
