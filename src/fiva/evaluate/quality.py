"""Does an anonymizer change who a face is while keeping it a face, in the same place and pose?

For each image's main face (the largest detection): dlib distance between original and output
(independent identity model; > 0.6 = no longer the same person), whether YuNet still finds a face
there, and the 5-landmark error normalized by the original's inter-ocular distance.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..faces.detect import landmark_error, match_face
from ..faces.identity import DlibEvaluator
from ..io import read_image


@dataclass
class QualityReport:
    faces: int = 0
    dlib_distances: list[float] = field(default_factory=list)
    detected: int = 0
    landmark_errors: list[float] = field(default_factory=list)
    skipped: int = 0  # images without a face in the original

    def summary(self, threshold: float = DlibEvaluator.MATCH_THRESHOLD) -> dict[str, float]:
        d = np.array(self.dlib_distances)
        return {
            "faces": self.faces,
            "beyond_dlib_threshold": float(np.mean(d > threshold)) if len(d) else float("nan"),
            "dlib_distance_mean": float(d.mean()) if len(d) else float("nan"),
            "detection_rate": self.detected / self.faces if self.faces else float("nan"),
            "landmark_error": float(np.mean(self.landmark_errors)) if self.landmark_errors else float("nan"),
            "skipped_no_face": self.skipped,
        }


def evaluate_quality(anonymizer, images: list[Path], evaluator: DlibEvaluator | None = None, progress: bool = True) -> QualityReport:
    """Anonymize each image (all its faces) and measure its main face."""
    evaluator = evaluator or DlibEvaluator()
    det = anonymizer.detector
    rep = QualityReport()
    for path in tqdm(images, desc="evaluating", unit="img", disable=not progress):
        rgb = read_image(path)
        d0 = det(rgb)
        if len(d0) == 0:
            rep.skipped += 1
            continue
        anonymizer.reset()
        out = anonymizer.anonymize_image(rgb, d0)
        i = d0.largest()
        box, lm = d0.boxes[i], d0.landmarks[i]
        rep.faces += 1
        d1 = det(out)
        match = match_face(box, d1.boxes)
        if match is not None:
            rep.detected += 1
            rep.landmark_errors.append(landmark_error(d1.landmarks[match], lm))
        out_box = d1.boxes[match] if match is not None else box
        rep.dlib_distances.append(DlibEvaluator.distance(evaluator.embed(rgb, box), evaluator.embed(out, out_box)))
    return rep
