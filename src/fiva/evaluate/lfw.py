"""The fixed LFW protocol of ../shared/data (its README): folds of people.txt, the 6,000 pairs.

Evaluation identities are fold 1 of people.txt; training identities are folds 2-10; threshold
calibration uses all pairs of pairs.txt (which overlap both splits).
"""
from __future__ import annotations

from pathlib import Path

Key = tuple[str, int]  # (name, image number)


def read_folds(people_txt: Path) -> list[list[str]]:
    """Identity names of each fold of people.txt."""
    lines = Path(people_txt).read_text().split("\n")
    n_folds, i, folds = int(lines[0]), 1, []
    for _ in range(n_folds):
        n = int(lines[i])
        folds.append([ln.split("\t")[0] for ln in lines[i + 1 : i + 1 + n]])
        i += n + 1
    return folds


def read_pairs(pairs_txt: Path) -> list[tuple[Key, Key, bool]]:
    """(key1, key2, same person) for every pair of pairs.txt, in file order (fold after fold)."""
    out = []
    for ln in Path(pairs_txt).read_text().split("\n")[1:]:
        f = ln.strip().split("\t")
        if len(f) == 3:
            out.append(((f[0], int(f[1])), (f[0], int(f[2])), True))
        elif len(f) == 4:
            out.append(((f[0], int(f[1])), (f[2], int(f[3])), False))
    return out


def image_path(lfw: Path, key: Key) -> Path:
    name, n = key
    return Path(lfw) / "images" / name / f"{name}_{n:04d}.jpg"


def identity_images(lfw: Path, name: str) -> list[Key]:
    return sorted((name, int(p.stem.rsplit("_", 1)[1])) for p in (Path(lfw) / "images" / name).glob(f"{name}_*.jpg"))


def evaluation_identities(lfw: Path) -> list[str]:
    """Fold 1 of people.txt: never trained on."""
    return sorted(read_folds(Path(lfw) / "people.txt")[0])


def subsample_pairs(pairs: list, n: int | None) -> list:
    """At most n pairs, half same-person and half different, spread over all folds."""
    if not n or n >= len(pairs):
        return pairs
    out = []
    for same in (True, False):
        group = [p for p in pairs if p[2] == same]
        k = max(1, n // 2)
        step = len(group) / k
        out += [group[int(i * step)] for i in range(k)]
    return out
