"""In-the-wild photos at real size: per photo, what happened to each face (issue: in-the-wild).

    python scripts/evaluate_wild.py [--wild ../shared/data/wild] [--out runs/wild] [--json runs/wild/report.json]

Runs the default pipeline on every photo of `--wild` and on cases made from LFW evaluation faces
(one face upscaled to 1000 px, a group of six faces at 50-100 px), prints a Markdown table of the
counts (fiva.evaluate.wild) and writes before/after contact sheets to `--out` (not committed: the
photos are third-party). Needs the [eval] extra and ../shared/data.
"""
import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from fiva.anonymize.frame import Anonymizer
from fiva.anonymize.runner import file_seed
from fiva.evaluate.lfw import read_folds
from fiva.evaluate.wild import measure_photo
from fiva.faces.identity import DlibEvaluator
from fiva.io import read_image, write_image


def own_cases(lfw: Path) -> dict[str, np.ndarray]:
    """An LFW evaluation face upscaled to 1000 px, and six at 50-100 px on a grey table."""
    names = sorted(read_folds(lfw / "people.txt")[0])
    face = lambda k: read_image(sorted((lfw / "images" / names[k]).glob("*.jpg"))[0])  # noqa: E731
    big = cv2.resize(face(0), (1000, 1000), interpolation=cv2.INTER_CUBIC)
    group = np.full((420, 1100, 3), 110, np.uint8)
    x = 10
    for k, side in zip(range(1, 7), (125, 150, 175, 200, 150, 125)):  # faces are ~45% of an LFW image
        f = cv2.resize(face(k), (side, side), interpolation=cv2.INTER_AREA)
        y = 60 + (k % 2) * 120
        group[y:y + side, x:x + side] = f
        x += side + 20
    return {"lfw_upscaled_1000.png": big, "lfw_group6.png": group}


def sheet(rgb: np.ndarray, out: np.ndarray, dets_boxes: np.ndarray, width: int = 1600) -> np.ndarray:
    """Before | after, scaled to `width`; below, the largest face before | after at native size."""
    pair = np.concatenate([rgb, out], axis=1)
    s = min(1.0, width / pair.shape[1])
    top = cv2.resize(pair, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else pair
    if len(dets_boxes) == 0:
        return top
    x1, y1, x2, y2 = dets_boxes[np.argmax((dets_boxes[:, 2] - dets_boxes[:, 0]) * (dets_boxes[:, 3] - dets_boxes[:, 1]))]
    cx, cy, half = (x1 + x2) / 2, (y1 + y2) / 2, min(400, max(x2 - x1, y2 - y1) * 0.8)
    ys, xs = slice(max(int(cy - half), 0), int(cy + half)), slice(max(int(cx - half), 0), int(cx + half))
    crop = np.concatenate([rgb[ys, xs], out[ys, xs]], axis=1)
    pad = np.zeros((crop.shape[0], max(top.shape[1], crop.shape[1]), 3), np.uint8)
    pad[:, :crop.shape[1]] = crop
    top_pad = np.zeros((top.shape[0], pad.shape[1], 3), np.uint8)
    top_pad[:, :top.shape[1]] = top
    return np.concatenate([top_pad, pad], axis=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wild", default="../shared/data/wild")
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--out", default="runs/wild")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    photos = {p.name: read_image(p) for p in sorted(Path(a.wild).iterdir()) if p.suffix.lower() in (".jpg", ".png")}
    photos.update(own_cases(Path(a.lfw)))
    anon, evaluator = Anonymizer(progress=False), DlibEvaluator()
    Path(a.out).mkdir(parents=True, exist_ok=True)
    rows, report = [], {}
    print("| photo | faces | marked | in place | obfuscated | generated, misplaced | recognisable | false alarms left | change away | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, rgb in photos.items():
        t0 = time.time()
        r = measure_photo(anon, rgb, evaluator, seed=file_seed(anon.cfg.seed, name))  # as `fiva anonymize FOLDER` seeds it
        dt = time.time() - t0
        write_image(Path(a.out) / f"sheet_{Path(name).stem}.png", sheet(rgb, r.pop("output"), anon.detect(rgb).boxes))
        report[name] = r
        print(f"| {name} | {r['faces']} | {r['marked']} | {r['marked_in_place']} | {r['marked_obfuscated']} | "
              f"{r['marked_generated_misplaced']} | {r['recognisable']} | {r['outcomes'].get('rejected', 0)} | "
              f"{r['change_away']:.2f}{' (bit-exact)' if r['unchanged'] else ''} | {dt:.1f} |", flush=True)
        rows.append(r)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
