"""Table 4 (face swapping) alone: `fiva evaluate`'s swap section without the rest of the evaluation.

    OMP_NUM_THREADS=1 python scripts/evaluate_swap.py [--lfw ../shared/data/lfw] [--pairs 100]
        [--dlib-threshold 0.5568] [--rows all|anchor-face] [--variant '{"keep_eyes": 0}' ...]
        [--sheet /tmp/swap/sheet.png] [--sheet-pairs 12]

Same probes, gallery (all 1,369 images of the 601 LFW evaluation identities, dlib only) and rows
as `fiva evaluate --swap-pairs N` (evaluate/run.py `_swap_table`). The dlib threshold is the
calibrated one (FAR 0.001 on LFW's 6,000 pairs): cached by an earlier `fiva evaluate` run, or given
(`--dlib-threshold`, e.g. 0.5568 from BENCHMARKS.md's full calibration): calibrating anew embeds
~7,700 images. Each `--variant` (RenderConfig fields over SWAP_RENDER, JSON) adds an anchor-face
row. `--sheet`: source | target | output at real size for the first pairs (a PNG; LFW's faces are
~110 px). Embeddings stay in memory.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fiva.anonymize.frame import Anonymizer, AnonymizeConfig
from fiva.anonymize.source_face import swap_config
from fiva.evaluate.lfw import image_path
from fiva.evaluate.report import swap_lines
from fiva.evaluate.run import SWAP_ROWS, EvalConfig, _swap_table, prepare
from fiva.io import read_image


def contact_sheet(prep, pairs: int, render, path: Path) -> None:
    """Rows of source | target | anchor-face swap, each the face's neighbourhood at real size."""
    anon = Anonymizer(AnonymizeConfig(identity="swap", swap_source=str(image_path(prep.lfw, prep.probes[1])), fallback="none",
                                      verify=False, defense="none", progress=False))
    rows = []
    for i in range(min(pairs, len(prep.probes) - 1)):
        src, tgt = (read_image(image_path(prep.lfw, prep.probes[k])) for k in (i + 1, i))
        anon.set_swap_source(src, render=render)
        out = anon.anonymize_image(tgt)
        crop = lambda im: cv2.resize(im[50:200, 50:200], (150, 150)) if im.shape[:2] == (250, 250) else cv2.resize(im, (150, 150))  # noqa: E731
        rows.append(np.concatenate([crop(src), crop(tgt), crop(out)], 1))
    half = (len(rows) + 1) // 2
    left, right = rows[:half], rows[half:] + [np.zeros_like(rows[0])] * (half - len(rows[half:]))
    sheet = np.concatenate([np.concatenate(left, 0), np.full((150 * half, 10, 3), 255, np.uint8), np.concatenate(right, 0)], 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--pairs", type=int, default=100)
    ap.add_argument("--dlib-threshold", type=float, default=None, help="calibrated dlib threshold (default: the cached calibration)")
    ap.add_argument("--rows", default="all", choices=["all", "anchor-face", "none"])
    ap.add_argument("--variant", action="append", default=[], help="RenderConfig changes over SWAP_RENDER (JSON), one row each")
    ap.add_argument("--sheet", default=None)
    ap.add_argument("--sheet-pairs", type=int, default=12)
    ap.add_argument("--json", default=None, help="write the rows here")
    a = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    cfg = EvalConfig(lfw=a.lfw, swap_pairs=a.pairs, workers=1, progress=False)
    t0 = time.time()
    prep = prepare(cfg, ("dlib",), None if a.dlib_threshold is None else {"dlib": a.dlib_threshold})
    print(f"gallery {len(prep.gkeys)} images, {len(prep.probes)} probes, dlib threshold {prep.thr['dlib']:.4f} "
          f"({time.time() - t0:.0f} s)", flush=True)
    rows = {"all": list(SWAP_ROWS), "anchor-face": [SWAP_ROWS[0]], "none": []}[a.rows]
    args = (cfg, prep.lfw, prep.probes, prep.gallery, prep.gindex, prep.models, prep.thr, prep.faces, prep.detector)
    result = []
    for r in rows:
        t = time.time()
        result += _swap_table(*args, rows=[r])
        print("\n".join(swap_lines(result[-1:])[-1:]) + f"  ({time.time() - t:.0f} s)", flush=True)
    for v in a.variant:
        t = time.time()
        change = json.loads(v)
        row = _swap_table(*args, rows=[(f"anchor-face {v}", "anchor-face", None)], render=swap_config(**change))
        result += row
        print("\n".join(swap_lines(row)[-1:]) + f"  ({time.time() - t:.0f} s)", flush=True)
    print("\n".join(swap_lines(result)))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    if a.sheet:
        contact_sheet(prep, a.sheet_pairs, swap_config(**json.loads(a.variant[0])) if a.variant else None, Path(a.sheet))
        print(f"wrote {a.sheet}")


if __name__ == "__main__":
    main()
