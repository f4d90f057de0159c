"""`fiva anonymize`: inputs to outputs, one line per failure, the run goes on, the exit code tells.

Inputs are files, folders (searched recursively; the output mirrors the tree) and glob patterns.
Outputs are written under a temporary name and renamed when complete, and existing outputs are
skipped (unless --overwrite), so an interrupted run leaves no half files and resumes where it
stopped. `--report run.json` records per file what happened (never identity embeddings).
"""
from __future__ import annotations

import glob
import json
import logging
import os
import sys
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..io import IMAGE_EXTS, VIDEO_EXTS, InputError, files_under, read_image_alpha, write_image

log = logging.getLogger("fiva")
SUFFIX = "_anonymized"


def collect_inputs(inputs: list[str]) -> list[tuple[Path, Path | None]]:
    """(file, the folder it was found under or None). Folders are searched recursively for media;
    patterns with * ? [ that name no existing file are expanded (recursively with **)."""
    found: list[tuple[Path, Path | None]] = []
    for s in inputs:
        p = Path(s)
        if not p.exists() and any(c in s for c in "*?["):
            matches = sorted(glob.glob(s, recursive=True))
            found += [(Path(m), None) for m in matches if Path(m).is_file() and not _is_output(Path(m))]
            if not matches:
                found.append((p, None))  # reported as missing
        elif p.is_dir():
            files = [f for f in files_under(p, IMAGE_EXTS | VIDEO_EXTS) if not _is_output(f)]
            found += [(f, p) for f in files]
        else:
            found.append((p, None))
    return found


def _is_output(f: Path) -> bool:
    return any(s in f.stem for s in (SUFFIX, "_swapped"))


def plan_outputs(items: list[tuple[Path, Path | None]], output: str | None, suffix: str = SUFFIX) -> list[tuple[Path, Path]]:
    """Where each output goes: -o is a file for one input file, else a folder; default beside the input."""
    if output and len(items) == 1 and items[0][1] is None and not Path(output).is_dir() and Path(output).suffix:
        return [(items[0][0], Path(output))]
    plans = []
    for f, root in items:
        name = f"{f.stem}{suffix}{f.suffix}"
        if output is None:
            plans.append((f, f.with_name(name)))
        else:
            rel = f.relative_to(root).parent if root is not None else Path()
            plans.append((f, Path(output) / rel / name))
    return plans


@dataclass(frozen=True)
class FileJob:
    """One input file, where its output goes, and its key: the file's path under the folder it was
    found in (or its name), which seeds its randomness, so its output does not depend on which
    other files the run holds, in what order, or on which worker of a cluster."""

    src: Path
    dst: Path
    key: str


def plan_jobs(a) -> list[FileJob]:
    """The run's files (`a`: the parsed command line) in input order."""
    items = collect_inputs(a.inputs)
    plans = plan_outputs(items, a.output, a.suffix)
    return [FileJob(src, dst, (src.relative_to(root).as_posix() if root is not None else src.name))
            for (src, root), (_, dst) in zip(items, plans)]


def build_config(a):
    """The AnonymizeConfig of a `fiva anonymize` / `fiva swap` command line."""
    from .frame import AnonymizeConfig

    cfg = AnonymizeConfig(method=a.method, model=a.model, anchors=a.anchors, margin=a.margin, score_threshold=a.score,
                          fallback=a.fallback, min_face=a.min_face, verify=a.verify, verify_margin=a.verify_margin, seed=a.seed, device=a.device,
                          progress=not a.no_progress, keep=tuple(a.keep or ()), only=tuple(a.only or ()), max_pixels=a.max_pixels,
                          generator=a.generator, identity=a.identity, swap_source=a.source,
                          **({"defense": "none"} if a.identity == "swap" else {"defense": a.defense, "defense_eps": a.defense_eps,
                                                              "defense_p": a.defense_p, "attack": a.attack,
                                                              "draw_in_full": a.draw_in_full}))
    if a.threshold is not None:
        cfg.threshold = a.threshold
    return cfg


def video_options(a) -> dict:
    return {"codec": a.codec, "crf": a.crf, "keep_metadata": a.keep_metadata}


def run_anonymize(a) -> int:
    from .frame import Anonymizer

    jobs = plan_jobs(a)
    if not jobs:
        print("fiva: no input images or videos found", file=sys.stderr)
        return 2
    cfg = build_config(a)
    anonymizer = Anonymizer(cfg)
    store = Path(a.identity_store) if a.identity_store else None
    if store is not None:
        if anonymizer.generator is None:
            raise ValueError("--identity-store needs --method fiva (the baselines have no identities)")
        if store.exists():
            anonymizer.itm.load(store)
    save = (lambda: anonymizer.itm.save(store)) if store is not None else None  # after every file: an interrupted run loses nothing
    records = []
    for job in tqdm(jobs, desc="files", unit="file", disable=len(jobs) < 2 or a.no_progress):
        rec = process_file(anonymizer, job, a.overwrite, video_options(a), keep_identities=store is not None, after_done=save)
        if rec["status"] == "failed":
            print(f"fiva: error: {rec['error']}", file=sys.stderr)
        records.append(rec)
    return finish_run(a, cfg, records, anonymizer.stats)


def process_file(anonymizer, job: FileJob, overwrite: bool, video_options: dict, keep_identities: bool = False,
                 after_done=None) -> dict:
    """Anonymize one file; returns its report record. A bad input gives a record with status
    "failed" and its one-line error instead of an exception."""
    rec = {"input": str(job.src), "output": str(job.dst)}
    before, t0 = Counter(anonymizer.stats), time.time()
    try:
        rec.update(_one(anonymizer, job, overwrite, video_options, keep_identities))
        if after_done is not None and rec["status"] == "done":
            after_done()
    except (InputError, ValueError, OSError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        rec.update(status="failed", error=msg if str(job.src) in msg else f"{job.src}: {msg}")
    rec["faces"] = dict(anonymizer.stats - before)
    rec["seconds"] = round(time.time() - t0, 3)
    return rec


def finish_run(a, cfg, records: list[dict], totals: Counter) -> int:
    """Print the summary line, write --report; the exit code: 1 if any file failed."""
    failed = sum(r["status"] == "failed" for r in records)
    skipped = sum(r["status"] == "skipped" for r in records)
    done = len(records) - failed - skipped
    summary = f"fiva: {done} of {len(records)} file(s) {'swapped' if cfg.identity == 'swap' else 'anonymized'}"
    summary += f", {skipped} skipped (output exists; --overwrite replaces)" if skipped else ""
    summary += f", {failed} failed" if failed else ""
    summary += describe_stats(totals, cfg.fallback) if done else ""
    print(summary, file=sys.stderr)
    if a.report:
        report = {"files": records, "totals": dict(totals), "anonymized": done, "skipped": skipped,
                  "failed": failed, "settings": {k: v for k, v in vars(a).items() if k not in ("inputs", "func")}}
        _atomic_write_text(Path(a.report), json.dumps(report, indent=2, default=str))
    return 1 if failed else 0


def describe_stats(stats, fallback: str) -> str:
    """'; 12 face(s): 9 generated, 2 too small, 1 still matched their original (...)' for the summary."""
    if not stats.get("faces"):
        return "; no faces found"
    why = {"small": "too small", "profile": "in profile", "border": "cut by the border",
           "unsure": "not confirmed as faces on a second look", "verify": "still matched their original, were not found in place or their 68 points did not fit"}
    parts = [f"{stats['generated']} generated"] if stats.get("generated") else []
    parts += [f"{stats[k]} {k}" for k in ("blur", "pixelate", "mask") if stats.get(k)]
    fell_back = [f"{stats['fallback_' + k]} {v}" for k, v in why.items() if stats.get("fallback_" + k)]
    parts += [", ".join(fell_back) + f" (obfuscated with '{fallback}')"] if fell_back else []
    parts += [f"{stats['kept']} left as they are (--keep/--only)"] if stats.get("kept") else []
    parts += [f"{stats['rejected']} false alarm(s) left untouched"] if stats.get("rejected") else []
    text = f"; {stats['faces']} face(s): " + ", ".join(parts)
    if stats.get("filled"):
        text += f"; {stats['filled']} face(s) filled in over missed detections"
    if stats.get("switched"):
        text += f"; a tracked face took another fake identity {stats['switched']} time(s)"
    return text


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def check_file(src: Path, dst: Path, overwrite: bool) -> bool:
    """Raise InputError for an input that cannot be processed; True when its output exists and is
    kept (the file is skipped)."""
    ext = src.suffix.lower()
    if not src.exists():
        raise InputError(f"{src}: no such file")
    if ext not in IMAGE_EXTS | VIDEO_EXTS:
        raise InputError(f"{src}: unsupported file type '{src.suffix}' (images: {', '.join(sorted(IMAGE_EXTS))}; "
                         f"videos: {', '.join(sorted(VIDEO_EXTS))})")
    if not src.is_file():
        raise InputError(f"{src}: not a file")
    if dst.exists() and dst.resolve() == src.resolve():
        raise InputError(f"{src}: output would overwrite the input")
    return dst.exists() and not overwrite


def file_seed(seed: int, key: str) -> int:
    """The seed of one file's randomness (fake-identity draws, defense noise): --seed and the file's key."""
    return int(np.random.SeedSequence([seed, zlib.crc32(key.encode())]).generate_state(1)[0])


def _one(anonymizer, job: FileJob, overwrite: bool, video_options: dict, keep_identities: bool = False) -> dict:
    src, dst = job.src, job.dst
    ext = src.suffix.lower()
    if check_file(src, dst, overwrite):
        log.info("%s: skipped, %s exists", src, dst)
        return {"status": "skipped"}
    # Each file is its own scene (no identity links across files), unless an identity store asks
    # for one fake identity per person across the whole dataset; and each starts from its own seed,
    # so it gives the same output alone, in a resumed run, or on any worker of a cluster.
    anonymizer.reset(identities=not keep_identities, seed=file_seed(anonymizer.cfg.seed, job.key))
    if ext in IMAGE_EXTS:
        rgb, alpha = read_image_alpha(src, anonymizer.cfg.max_pixels)
        out = anonymizer.anonymize_image(rgb)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.stem}.tmp{dst.suffix}")
        try:
            write_image(tmp, out, alpha=alpha, source=src if np.array_equal(out, rgb) else None)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        rec = {"status": "done", "kind": "image", "width": out.shape[1], "height": out.shape[0]}
    else:
        info = anonymizer.anonymize_video(src, dst, keep_identities=keep_identities, **video_options)
        rec = {"status": "done", "kind": "video", "width": info.width, "height": info.height, "fps": info.fps,
               "frames": info.frames, "audio": info.has_audio}
    log.info("%s -> %s", src, dst)
    return rec
