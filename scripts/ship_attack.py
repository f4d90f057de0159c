"""Ship a trained reconstruction attack R as the package's default (src/fiva/data/attack-fiva-112.safetensors),
with the deepfake threshold `fiva evaluate --attack` chose on held-out real faces stored beside its weights.

    fiva evaluate --attack runs/attack/attack.safetensors -o runs/evaluate_attack
    python scripts/ship_attack.py runs/attack/attack.safetensors runs/evaluate_attack/report.json

The metadata also names the generator R was trained against (SHA-256 of its weights): R undoes that
generator's trace, and must be retrained when the default generator changes.
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
    ap.add_argument("report", help="report.json of fiva evaluate --attack with these weights")
    ap.add_argument("--out", default=str(DEFAULT_ATTACK))
    a = ap.parse_args()
    report = json.loads(Path(a.report).read_text())
    fd = report.get("fake_detection", {}).get("FIVA + ITM")
    if not fd:
        raise SystemExit(f"{a.report}: no fake-detection result (run fiva evaluate with --attack)")
    with safe_open(a.attack, "pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: (t.half() if t.is_floating_point() else t) for k in f.keys() for t in [f.get_tensor(k)]}
    meta.update(fake_threshold=f"{fd['threshold_at_1pct_fpr']:.6f}", fake_auc=f"{fd['auc']:.4f}",
                fake_tpr_at_1pct_fpr=f"{fd['tpr_at_1pct_fpr']:.4f}",
                generator_sha256=hashlib.sha256(DEFAULT_GENERATOR.read_bytes()).hexdigest())
    save_file(tensors, a.out, metadata=meta)
    print(f"{a.out}: threshold {meta['fake_threshold']}, AUC {meta['fake_auc']}, step {meta.get('step')}")


if __name__ == "__main__":
    main()
