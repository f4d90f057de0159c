"""Build the point-distribution model of real faces' 68-point shapes (faces/shape_model.py).

Input: the face bank build's scan of LFW training identities (folds 2-10; `build_face_bank.py`
writes runs/face_bank/scan.json with dlib's 68 points of every scanned face).
Usage: python scripts/build_shape_model.py [--scan runs/face_bank/scan.json] [--out src/fiva/data/face_shapes.safetensors]
"""
import argparse
import json

import numpy as np

from fiva.faces.shape_model import ShapeModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scan", default="runs/face_bank/scan.json")
    ap.add_argument("--out", default="src/fiva/data/face_shapes.safetensors")
    ap.add_argument("--modes", type=int, default=20)
    a = ap.parse_args()
    shapes = np.array([s["shape"] for s in json.load(open(a.scan)) if s.get("shape") is not None], np.float64)
    model = ShapeModel.fit(shapes, a.modes)
    model.save(a.out)
    d = np.array([model.distance(s) for s in shapes])
    print(f"{len(shapes)} shapes; distance median {np.median(d):.1f}, 99th percentile {np.quantile(d, 0.99):.1f}")


if __name__ == "__main__":
    main()
