"""Photos at real size: is every face replaced in place or obfuscated, and nothing else touched?

For one photo and its anonymized output, per face the original's detector found (score >= 0.3):
what the pipeline did with it, whether a generated face is *in place* (YuNet finds a face again at
the same spot, 5-landmark error <= 0.08 of the eye distance, dlib distance to the original > 0.6),
and whether it is still recognisable (dlib distance <= 0.6; faces under `min_face` px are too small
for dlib to judge). Away from the faces (outside every detection's box grown 1.5x) the mean
absolute change in grey levels.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..faces.detect import Detections, landmark_error, match_face
from ..faces.identity import DlibEvaluator

IN_PLACE_LANDMARKS = 0.08
OBFUSCATED = ("blur", "pixelate", "mask", "small", "profile", "border", "unsure", "verify")


def measure_photo(anonymizer, rgb: np.ndarray, evaluator: DlibEvaluator, marked_score: float = 0.6,
                  seed: int | None = None) -> dict:
    """Anonymize `rgb` [H,W,3] uint8 with `anonymizer` and measure it. "Marked" faces, the ones a
    person would mark, are taken as the detections scoring >= `marked_score` that are not rejected.
    `seed`: the photo's own (`runner.file_seed`, as `fiva anonymize` seeds each file), so what is
    measured is what the CLI writes, whichever photos ran before; None: the anonymizer's runs on."""
    anonymizer.reset(seed=seed)
    dets = anonymizer.detect(rgb)
    out = anonymizer.anonymize_image(rgb, dets)
    outcomes = list(anonymizer.outcomes)
    again = anonymizer.detect(out)
    faces = []
    for i in range(len(dets)):
        box, lm = dets.boxes[i], dets.landmarks[i]
        size = float(min(box[2] - box[0], box[3] - box[1]))
        rec = {"outcome": outcomes[i], "score": float(dets.scores[i]), "size": round(size, 1)}
        j = match_face(box, again.boxes)
        if j is not None:
            rec["landmark_error"] = landmark_error(again.landmarks[j], lm)
        if size >= anonymizer.cfg.min_face:
            rec["dlib"] = DlibEvaluator.distance(evaluator.embed(rgb, box), evaluator.embed(out, box))
        rec["in_place"] = (rec["outcome"] == "generated" and "landmark_error" in rec
                           and rec["landmark_error"] <= IN_PLACE_LANDMARKS and rec.get("dlib", 1.0) > DlibEvaluator.MATCH_THRESHOLD)
        rec["recognisable"] = rec["outcome"] not in ("kept", "rejected") and rec.get("dlib", 1.0) <= DlibEvaluator.MATCH_THRESHOLD
        rec["marked"] = rec["score"] >= marked_score and rec["outcome"] != "rejected"
        faces.append(rec)
    away = ~face_area(rgb.shape[:2], dets)
    diff = np.abs(out.astype(np.int16) - rgb.astype(np.int16)).mean(2)
    marked = [f for f in faces if f["marked"]]
    return {
        "faces": len(faces),
        "outcomes": dict(Counter(f["outcome"] for f in faces)),
        "marked": len(marked),
        "marked_in_place": sum(f["in_place"] for f in marked),
        "marked_obfuscated": sum(f["outcome"] in OBFUSCATED for f in marked),
        "marked_generated_misplaced": sum(f["outcome"] == "generated" and not f["in_place"] for f in marked),
        "recognisable": sum(f["recognisable"] for f in faces),
        "change_away": float(diff[away].mean()) if away.any() else 0.0,
        "unchanged": bool(np.array_equal(out, rgb)),
        "face_records": faces,
        "output": out,
    }


def face_area(shape: tuple[int, int], dets: Detections, grow: float = 1.5) -> np.ndarray:
    """[H,W] bool: inside some detection's box grown `grow` times about its centre."""
    h, w = shape
    area = np.zeros((h, w), bool)
    for x1, y1, x2, y2 in dets.boxes:
        cx, cy, bw, bh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * grow / 2, (y2 - y1) * grow / 2
        area[max(int(cy - bh), 0):max(int(np.ceil(cy + bh)), 0), max(int(cx - bw), 0):max(int(np.ceil(cx + bw)), 0)] = True
    return area
