"""The one door in: `fiva anonymize | train generator | anchors build | evaluate ...`."""
from __future__ import annotations

import argparse
import logging
import sys

from .anonymize.itm import DEFAULT_THRESHOLD

log = logging.getLogger("fiva")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train models")
    tsub = p.add_subparsers(dest="what", required=True)
    g = tsub.add_parser("generator", help="train the FIVA generator (runs under torchrun with DDP unchanged)")
    g.add_argument("--data", required=True, help="folder of face images (aligned once and cached) or a crop pack .npz")
    g.add_argument("--val-data", default=None, help="held-out folder or crop pack for the validation pass (default: none)")
    g.add_argument("--out", default="runs/generator", help="output folder: checkpoints, log.csv, sample grids (default: runs/generator)")
    g.add_argument("--model", default="fiva-112", help="architecture: fiva-112 (CPU default) or fiva-256 (the paper's) (default: fiva-112)")
    g.add_argument("--steps", type=int, default=1000, help="train until this global step (default: 1000)")
    g.add_argument("--batch", type=int, default=16, help="batch size per process (default: 16)")
    g.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: 1e-4)")
    g.add_argument("--resume", default=None, help="checkpoint to resume from (default: OUT/checkpoint.safetensors if present)")
    g.add_argument("--val-every", type=int, default=500, help="validation pass every N steps (default: 500)")
    g.add_argument("--sample-every", type=int, default=200, help="sample grid PNG every N steps (default: 200)")
    g.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (default: 500)")
    g.add_argument("--time-limit", type=float, default=0.0, help="stop (and save) after this many seconds (default: 0 = no limit)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _add_anchors(sub) -> None:
    p = sub.add_parser("anchors", help="the anchor search space of fake identities")
    asub = p.add_subparsers(dest="what", required=True)
    b = asub.add_parser("build", help="build the anchor space from identity folders (one sub-folder per person)")
    b.add_argument("--data", required=True, help="folder with one sub-folder of face images per identity, or a crop pack .npz")
    b.add_argument("--out", required=True, help="output .safetensors")
    b.add_argument("--size", type=int, default=10_000, help="number of anchors (default: 10000)")
    b.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def _add_anonymize(sub) -> None:
    p = sub.add_parser("anonymize", help="replace the identity of every face in images and videos")
    p.add_argument("inputs", nargs="+", help="image or video files, or folders of them")
    p.add_argument("-o", "--output", default=None,
                   help="output file (one input) or folder (several inputs or a folder); default: beside each input as NAME_anonymized.EXT")
    p.add_argument("--method", default="fiva", choices=["fiva", "blur", "pixelate", "mask"], help="fiva, or a classic baseline (default: fiva)")
    p.add_argument("--model", default=None, help="generator weights .safetensors (default: the shipped fiva-112)")
    p.add_argument("--anchors", default=None, help="anchor space .safetensors (default: the shipped one)")
    p.add_argument("--threshold", type=float, default=None, help=f"ITM cosine-distance threshold for 'same person' (default: {DEFAULT_THRESHOLD}, calibrated on LFW pairs)")
    p.add_argument("--margin", type=float, default=0.0, help="Eq. 1 margin m: target |cos| between real and fake identity (default: 0)")
    p.add_argument("--score", type=float, default=0.6, help="face detection score threshold (default: 0.6)")
    p.add_argument("--fallback", default="blur", choices=["blur", "pixelate", "mask", "none"],
                   help="what replaces a generated face that still looks like its original (SFace check) (default: blur)")
    p.add_argument("--seed", type=int, default=0, help="seed for fake-identity sampling (default: 0)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (never the inputs)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="fiva", description=__doc__)
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_anonymize(sub)
    _add_train(sub)
    _add_anchors(sub)
    return ap


def cmd_train(a) -> int:
    from .train.generator import TrainConfig, train

    cfg = TrainConfig(data=a.data, val_data=a.val_data, out=a.out, model=a.model, steps=a.steps, batch=a.batch, lr=a.lr,
                      resume=a.resume, val_every=a.val_every, sample_every=a.sample_every, save_every=a.save_every,
                      time_limit=a.time_limit, device=a.device, seed=a.seed, progress=not a.no_progress)
    path = train(cfg)
    print(path)
    return 0


def cmd_anchors(a) -> int:
    from .anonymize.anchors import build_from_data

    space = build_from_data(a.data, size=a.size, seed=a.seed)
    space.save(a.out)
    print(f"{a.out}: {len(space.anchors)} anchors")
    return 0


def cmd_anonymize(a) -> int:
    from .anonymize.runner import run_anonymize

    return run_anonymize(a)


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, format="%(levelname)s %(message)s")
    handlers = {"train": cmd_train, "anchors": cmd_anchors, "anonymize": cmd_anonymize}
    try:
        return handlers[a.command](a)
    except (ValueError, FileNotFoundError) as e:  # bad input or settings: one line, no traceback
        print(f"fiva: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
