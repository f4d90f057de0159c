"""`fiva anonymize`: inputs to outputs, one line per failure, the run goes on, the exit code tells."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

from tqdm import tqdm

from ..io import IMAGE_EXTS, VIDEO_EXTS, InputError, read_image, write_image

log = logging.getLogger("fiva")
SUFFIX = "_anonymized"


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path | None]]:
    """(file, the folder it was found under or None). Folders are searched recursively for media."""
    found: list[tuple[Path, Path | None]] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS
                           and SUFFIX not in f.stem)
            found += [(f, p) for f in files]
        else:
            found.append((p, None))
    return found


def plan_outputs(items: list[tuple[Path, Path | None]], output: str | None) -> list[tuple[Path, Path]]:
    """Where each output goes: -o is a file for one input file, else a folder; default beside the input."""
    if output and len(items) == 1 and items[0][1] is None and not Path(output).is_dir():
        return [(items[0][0], Path(output))]
    plans = []
    for f, root in items:
        name = f"{f.stem}{SUFFIX}{f.suffix}"
        if output is None:
            plans.append((f, f.with_name(name)))
        else:
            rel = f.relative_to(root).parent if root is not None else Path()
            plans.append((f, Path(output) / rel / name))
    return plans


def run_anonymize(a) -> int:
    from .frame import AnonymizeConfig, Anonymizer

    items = collect_inputs(a.inputs)
    if not items:
        print("fiva: no input images or videos found", file=sys.stderr)
        return 2
    cfg = AnonymizeConfig(method=a.method, model=a.model, anchors=a.anchors, margin=a.margin, score_threshold=a.score,
                          fallback=a.fallback, seed=a.seed, device=a.device, progress=not a.no_progress)
    if a.threshold is not None:
        cfg.threshold = a.threshold
    anonymizer = Anonymizer(cfg)
    failed = 0
    plans = plan_outputs(items, a.output)
    for src, dst in tqdm(plans, desc="files", unit="file", disable=len(plans) < 2 or a.no_progress):
        try:
            _one(anonymizer, src, dst, a.overwrite)
        except (InputError, ValueError, OSError) as e:
            failed += 1
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            print(f"fiva: error: {msg if str(src) in msg else f'{src}: {msg}'}", file=sys.stderr)
    done = len(plans) - failed
    summary = f"fiva: {done} of {len(plans)} file(s) anonymized" + (f", {failed} failed" if failed else "")
    if anonymizer.stats["fallbacks"]:
        summary += (f"; {anonymizer.stats['fallbacks']} of {anonymizer.stats['faces']} generated faces still looked like"
                    f" their original and were obfuscated with '{cfg.fallback}' instead")
    print(summary, file=sys.stderr)
    return 1 if failed else 0


def _one(anonymizer, src: Path, dst: Path, overwrite: bool) -> None:
    ext = src.suffix.lower()
    if ext not in IMAGE_EXTS | VIDEO_EXTS:
        raise InputError(f"{src}: unsupported file type '{src.suffix}' (images: {', '.join(sorted(IMAGE_EXTS))}; "
                         f"videos: {', '.join(sorted(VIDEO_EXTS))})")
    if not src.is_file():
        raise InputError(f"{src}: no such file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise InputError(f"{src}: output would overwrite the input")
    if dst.exists() and not overwrite:
        raise InputError(f"{src}: output {dst} exists (use --overwrite to replace it)")
    anonymizer.reset()  # each file is its own scene: no identity links across files
    if ext in IMAGE_EXTS:
        out = anonymizer.anonymize_image(read_image(src))
        write_image(dst, out)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        anonymizer.anonymize_video(src, dst)
    log.info("%s -> %s", src, dst)
