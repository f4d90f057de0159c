"""Video figures and before/after contact sheets for the anchor-face renderer (issue 16).

    OMP_NUM_THREADS=1 python scripts/realism_video_and_sheets.py [--frames 60] [--sheets docs]
        [--json runs/realism/video.json] [--no-fiva112] [--no-sheets] [--clips liveportrait_d13.mp4]

Video (the shared talking-head clip liveportrait_d13 and the crowd clip): the first --frames
frames through `VideoStream` (tracking, landmark smoothing, the ITM) with --generator anchor-face
and with the 112 px network (--generator fiva; not with --no-fiva112); per clip the seconds per frame of each, and for d13 the
mean dlib distance between consecutive frames of the output over the original's (identity
jitter; the issue asks <= 1.2), and the spread of their pairwise cosine distances (Eq. 7's
M_tc^sigma, as `fiva evaluate` computes it) over the original's, and the drawing's mouth-opening
error per frame (dlib's 68 points on the frame and on the drawing, as evaluate_realism.py measures photos)
and how the drawing's brows follow the frame's (`brow_following`).

Sheets (PNG, in --sheets): faces before | after, each as the whole face (shrunk to 200 px when
larger) and its centre at real size (1:1), wild photos, LFW fold-1 faces with open mouths (expression), and
video frames. Third-party photos: small crops only, as the issue asks.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from fiva.anonymize.frame import Anonymizer, AnonymizeConfig, VideoStream
from fiva.evaluate.lfw import evaluation_identities, identity_images, image_path
from fiva.evaluate.metrics import temporal_consistency
from fiva.faces.identity import DlibEvaluator
from fiva.faces.landmarks68 import Landmarker68, brow_pose, mouth_opening
from fiva.io import read_image

TILE = 200


def _square(rgb: np.ndarray, cx: float, cy: float, side: int) -> np.ndarray:
    half = side // 2
    pad = np.pad(rgb, ((side, side), (side, side), (0, 0)))
    return pad[int(cy) - half + side:int(cy) - half + side + 2 * half, int(cx) - half + side:int(cx) - half + side + 2 * half]


def tile(rgb: np.ndarray, box) -> np.ndarray:
    """Two TILE x TILE views of the face side by side: the whole face (shrunk to fit when larger,
    never enlarged) and a real-size (1:1) crop of its centre."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    side = int(max(box[2] - box[0], box[3] - box[1]) * 1.4)
    whole = _square(rgb, cx, cy, side)
    if side > TILE:
        whole = cv2.resize(whole, (TILE, TILE), interpolation=cv2.INTER_AREA)
    fit = np.zeros((TILE, TILE, 3), np.uint8)
    o = (TILE - whole.shape[0]) // 2
    fit[o:o + whole.shape[0], o:o + whole.shape[1]] = whole
    real = _square(rgb, cx, cy, TILE) if side > TILE else fit
    return np.concatenate([fit, np.full((TILE, 2, 3), 255, np.uint8), real], 1)


def sheet(pairs: list[tuple[np.ndarray, np.ndarray]], cols: int = 2) -> np.ndarray:
    """Rows of before | after pairs (each: whole face, real-size centre)."""
    cells = [np.concatenate([a, np.full((TILE, 12, 3), 0, np.uint8), b], 1) for a, b in pairs]
    blank = np.zeros_like(cells[0])
    cells += [blank] * (-len(cells) % cols)
    rows = [np.concatenate([np.pad(c, ((4, 4), (8, 8), (0, 0)), constant_values=255) for c in cells[r:r + cols]], 1)
            for r in range(0, len(cells), cols)]
    return np.concatenate(rows, 0)


def first_frames(path: Path, count: int) -> list[np.ndarray]:
    """The first `count` consecutive RGB frames (jitter is measured between neighbours)."""
    import av

    out = []
    with av.open(str(path)) as inp:
        for frame in inp.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == count:
                break
    return out


def run_video(anon: Anonymizer, frames: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    anon.reset()
    anon.stats.clear()
    stream = VideoStream(anon)
    t = time.perf_counter()
    out = []
    for f in frames:
        out += stream.push(f)
    out += stream.flush()
    return out, (time.perf_counter() - t) / len(frames)


def brow_following(brows: np.ndarray, raise_by: float = 0.04) -> dict:
    """How the drawing's brows follow the frame's: `brows` [F,2], the brows' height over the eyes
    (eye distances, `brow_pose`) on each frame and on its drawing. Each series less its median over
    the clip (the face at rest) is its expression: their correlation, and of the frames whose
    brows are raised more than `raise_by`, the share drawn lower than the drawing's rest (a frown)
    and the median share of the raise drawn."""
    o, g = (brows - np.median(brows, 0)).T
    up = o > raise_by
    return {"brow_follow_corr": float(np.corrcoef(o, g)[0, 1]) if o.std() > 0 and g.std() > 0 else float("nan"),
            "brow_raised_frames": int(up.sum()),
            "brow_raised_drawn_lower": float(np.mean(g[up] < 0)) if up.any() else float("nan"),
            "brow_raise_drawn_share_median": float(np.median(g[up] / o[up])) if up.any() else float("nan")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", default="../shared/data/videos")
    ap.add_argument("--wild", default="../shared/data/wild")
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--sheets", default="docs")
    ap.add_argument("--json", default="runs/realism/video.json")
    ap.add_argument("--clips", nargs="+", default=["liveportrait_d13.mp4", "facenet_pytorch_crowd.mp4"])
    ap.add_argument("--no-sheets", action="store_true")
    ap.add_argument("--no-fiva112", action="store_true", help="skip the 112 px network's comparison run (default: run it)")
    a = ap.parse_args()
    cv2.setNumThreads(1)
    anchor = Anonymizer(AnonymizeConfig(generator="anchor-face", progress=False))
    default = None if a.no_fiva112 else Anonymizer(AnonymizeConfig(generator="fiva", progress=False))  # the 112 px network, for comparison
    ev, lm = DlibEvaluator(), Landmarker68()
    report = {}
    video_pairs = []
    alone = Anonymizer(AnonymizeConfig(generator="anchor-face", fallback="none", progress=False))
    for clip in a.clips:
        frames = first_frames(Path(a.videos) / clip, a.frames)
        out_a, spf_a = run_video(anchor, frames)
        stats_a = dict(anchor.stats)
        r = {"frames": len(frames), "seconds_per_frame_anchor_face": spf_a, "stats_anchor_face": stats_a}
        if default is not None:
            _, spf_d = run_video(default, frames)
            r.update(seconds_per_frame_fiva112=spf_d, stats_fiva112=dict(default.stats))
        if clip.startswith("liveportrait"):
            # the drawing alone too (no verification, no fallback): pixelated frames between drawn
            # ones would count as identity jitter
            out_g, _ = run_video(alone, frames)
            emb_o, emb_a, emb_g, mouth, brows = [], [], [], [], []
            for f, g, h in zip(frames, out_a, out_g):
                d = anchor.detect(f)
                if len(d) == 0:
                    emb_o.append(None)
                    emb_a.append(None)
                    emb_g.append(None)
                    continue
                box = d.boxes[d.largest()]
                emb_o.append(ev.embed(f, box))
                emb_a.append(ev.embed(g, box))
                emb_g.append(ev.embed(h, box))
                # expression: the drawing's mouth opening against the frame's, dlib's 68 points on each
                # (the original's key points), as evaluate_realism.py measures photos
                kps = d.landmarks[d.largest()][None]
                shape_f, shape_h = lm(f, kps)[0], lm(h, kps)[0]
                mouth.append(abs(mouth_opening(shape_h) - mouth_opening(shape_f)))
                brows.append((brow_pose(shape_f)[0], brow_pose(shape_h)[0]))
            jit = lambda e: [float(np.linalg.norm(x - y)) for x, y in zip(e, e[1:]) if x is not None and y is not None]  # noqa: E731
            jo, ja, jg = jit(emb_o), jit(emb_a), jit(emb_g)
            # Eq. 7 (fiva evaluate's M_tc) on the same consecutive frames: spread of the pairwise
            # cosine distances of the output's descriptors over the original's
            tc = {k: temporal_consistency(np.stack([x for x in e if x is not None]))[:2]
                  for k, e in (("original", emb_o), ("output", emb_a), ("drawing_alone", emb_g))}
            r.update({f"Mtc_{k}": {"mu": v[0], "sigma": v[1]} for k, v in tc.items()})
            r.update({"Mtc_sigma_ratio": tc["output"][1] / tc["original"][1],
                      "Mtc_sigma_ratio_drawing_alone": tc["drawing_alone"][1] / tc["original"][1]})
            r.update(brow_following(np.array(brows)))
            r.update({"mouth_err_drawing_alone_median": float(np.median(mouth)), "mouth_err_drawing_alone_le_0.05": float(np.mean(np.array(mouth) <= 0.05)),
                      "mouth_err_drawing_alone_max": float(np.max(mouth))})
            r.update({"consecutive_dlib_original": float(np.mean(jo)), "consecutive_dlib_output": float(np.mean(ja)),
                      "jitter_ratio": float(np.mean(ja) / np.mean(jo)), "jitter_ratio_drawing_alone": float(np.mean(jg) / np.mean(jo)),
                      "dlib_drawing_alone_vs_original_median": float(np.median([np.linalg.norm(x - y) for x, y in zip(emb_o, emb_g) if x is not None])),
                      "dlib_output_vs_original_median": float(np.median([np.linalg.norm(x - y) for x, y in zip(emb_o, emb_a) if x is not None]))})
            for k in range(0, len(frames), max(len(frames) // 3, 1))[:3]:
                d = anchor.detect(frames[k])
                if len(d):
                    box = d.boxes[d.largest()]
                    video_pairs.append((tile(frames[k], box), tile(out_a[k], box)))
        report[clip] = r
        print(clip, json.dumps(r, indent=1), flush=True)
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(report, indent=1))
    if a.no_sheets:
        return
    sheets = Path(a.sheets)
    sheets.mkdir(parents=True, exist_ok=True)
    wild_pairs = []
    for name in ("portrait_paul_rudd.jpg", "portrait_shea_whigham.jpg", "portrait_angelina_jolie.jpg",
                 "portrait_kate_siegel.jpg", "retinaface_img11.jpg", "multiface.jpg"):
        p = Path(a.wild) / name
        if not p.exists():
            continue
        rgb = read_image(p)
        anchor.reset()
        d = anchor.detect(rgb)
        out = anchor.anonymize_image(rgb, d)
        for i in np.argsort(-(d.boxes[:, 2] - d.boxes[:, 0]))[:2 if name == "multiface.jpg" else 1]:
            wild_pairs.append((tile(rgb, d.boxes[i]), tile(out, d.boxes[i])))
    expr_pairs = []
    for name in evaluation_identities(Path(a.lfw)):
        rgb = read_image(image_path(Path(a.lfw), identity_images(Path(a.lfw), name)[0]))
        d = anchor.detect(rgb)
        if len(d) == 0:
            continue
        i = d.largest()
        if mouth_opening(lm(rgb, d.landmarks[i:i + 1])[0]) < 0.15:
            continue
        anchor.reset()
        expr_pairs.append((tile(rgb, d.boxes[i]), tile(anchor.anonymize_image(rgb, d), d.boxes[i])))
        if len(expr_pairs) == 6:
            break
    for fname, pairs in (("anchor_face_wild.png", wild_pairs), ("anchor_face_expression.png", expr_pairs),
                         ("anchor_face_video.png", video_pairs)):
        if pairs:
            cv2.imwrite(str(sheets / fname), cv2.cvtColor(sheet(pairs), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
