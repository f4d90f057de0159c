"""Reproduce the default model's figures in MODEL_CARD.md (issue: core numbers).

    python scripts/evaluate_default.py [--model src/fiva/data/fiva-112.safetensors] [--n 200] [--offset 0]

On the first image of the first N LFW evaluation identities (fold 1 of people.txt), generator only
(no fallback): share of faces beyond dlib's 0.6 from their original, YuNet detection rate on the
output, 5-landmark error / inter-ocular distance. Needs the [eval] extra and ../shared/data.
`--offset 200` measures the next 200 identities instead: the split snapshots and priors are chosen
on, so that the reported figures (offset 0) stay a held-out measurement.
"""
import argparse
import json
from pathlib import Path

from fiva.anonymize.frame import Anonymizer
from fiva.evaluate.lfw import read_folds
from fiva.evaluate.quality import evaluate_quality


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--model", default=None)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--offset", type=int, default=0, help="skip the first identities (default: 0; 200 = the selection split)")
    ap.add_argument("--method", default="fiva")
    ap.add_argument("--fallback", default="none")
    a = ap.parse_args()
    lfw = Path(a.lfw)
    names = sorted(read_folds(lfw / "people.txt")[0])[a.offset:a.offset + a.n]
    images = [sorted((lfw / "images" / n).glob("*.jpg"))[0] for n in names]
    anon = Anonymizer(method=a.method, model=a.model, fallback=a.fallback)
    summary = evaluate_quality(anon, images).summary()
    summary.update(model=str(a.model or "default"), method=a.method, fallback=a.fallback, offset=a.offset)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
