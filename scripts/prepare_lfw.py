"""Lay out the fixed LFW splits of ../shared/data (see its README) as folders of symlinks.

    python scripts/prepare_lfw.py [--lfw ../shared/data/lfw] [--out runs/lfw]

makes runs/lfw/train/<Name> (folds 2-10) and runs/lfw/eval/<Name> (fold 1). Nothing is copied.
"""
import argparse
from pathlib import Path

from fiva.evaluate.lfw import read_folds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lfw", default="../shared/data/lfw")
    ap.add_argument("--out", default="runs/lfw")
    a = ap.parse_args()
    lfw, out = Path(a.lfw).resolve(), Path(a.out)
    folds = read_folds(lfw / "people.txt")
    eval_ids = set(folds[0])
    for split, names in (("eval", sorted(eval_ids)), ("train", sorted(p.name for p in (lfw / "images").iterdir() if p.name not in eval_ids))):
        d = out / split
        d.mkdir(parents=True, exist_ok=True)
        for name in names:
            link = d / name
            if not link.exists():
                link.symlink_to(lfw / "images" / name)
        print(f"{split}: {len(names)} identities -> {d}")


if __name__ == "__main__":
    main()
