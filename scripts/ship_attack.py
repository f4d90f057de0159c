"""Ship a trained reconstruction attack R as the package's default, with the deepfake score and
threshold chosen on held-out real faces stored beside its weights (fp16 safetensors).

R trained on `fiva anonymize`'s default output (stored pairs, anchor-face; the default attack,
src/fiva/data/attack-anchor-face.safetensors):

    python scripts/evaluate_detect_fake.py --attack runs/attack_anchor/attack.safetensors -o runs/detect_fake
    python scripts/ship_attack.py runs/attack_anchor/attack.safetensors runs/detect_fake/report.json

The fake score (identity or residual, fiva/evaluate/fakes.py) is the one right on more LFW test faces
(real vs anonymized) unless --score says; its threshold was chosen on other real faces.

R trained against the 112 px network in the loop (src/fiva/data/attack-fiva-112.safetensors):

    fiva evaluate --attack runs/attack/attack.safetensors -o runs/evaluate_attack
    python scripts/ship_attack.py runs/attack/attack.safetensors runs/evaluate_attack/report.json --out src/fiva/data/attack-fiva-112.safetensors

The metadata names what R was trained against (`trained_against`, and the SHA-256 of the face bank
or of the generator weights): R undoes that anonymizer's trace, and must be retrained when it changes.
"""
import argparse
import hashlib
import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file

from fiva.weights import DEFAULT_ATTACK, DEFAULT_GENERATOR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("attack", help="R weights from fiva train attack")
    ap.add_argument("report", help="report.json of scripts/evaluate_detect_fake.py, or of fiva evaluate --attack (112 px network)")
    ap.add_argument("--score", choices=("identity", "residual"), default=None, help="fake score (default: the more accurate on LFW)")
    ap.add_argument("--out", default=str(DEFAULT_ATTACK))
    a = ap.parse_args()
    report = json.loads(Path(a.report).read_text())
    with safe_open(a.attack, "pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: (t.half() if t.is_floating_point() else t) for k in f.keys() for t in [f.get_tensor(k)]}
    if "lfw" in report:  # scripts/evaluate_detect_fake.py
        lfw = report["lfw"]["anonymized"]
        kind = a.score or max(("identity", "residual"), key=lambda k: lfw[k]["accuracy"])
        s, w = lfw[kind], report["wild"]["anonymized"][kind]
        meta.update(fake_score=kind, fake_threshold=f"{s['threshold']:.6f}", fake_auc=f"{s['auc']:.4f}",
                    fake_accuracy=f"{s['accuracy']:.4f}", fake_fpr=f"{s['fpr']:.4f}", fake_tpr=f"{s['tpr']:.4f}",
                    fake_accuracy_wild=f"{w['accuracy']:.4f}", fake_fpr_target=str(report["fpr_target"]))
    else:  # fiva evaluate --attack: the identity score at 1% FPR
        fd = report.get("fake_detection", {}).get("FIVA + ITM")
        if not fd:
            raise SystemExit(f"{a.report}: no fake-detection result (run fiva evaluate with --attack)")
        meta.update(fake_score="identity", fake_threshold=f"{fd['threshold_at_1pct_fpr']:.6f}", fake_auc=f"{fd['auc']:.4f}",
                    fake_tpr_at_1pct_fpr=f"{fd['tpr_at_1pct_fpr']:.4f}",
                    generator_sha256=hashlib.sha256(DEFAULT_GENERATOR.read_bytes()).hexdigest())
    save_file(tensors, a.out, metadata=meta)
    print(f"{a.out}: {meta['fake_score']} score, threshold {meta['fake_threshold']}, AUC {meta['fake_auc']}, step {meta.get('step')}")


if __name__ == "__main__":
    main()
