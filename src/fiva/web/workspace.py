"""The web page's work without the web: uploads, their faces, and anonymization jobs.

A `Workspace` owns one temporary folder, removed by `close()` (the server calls it when it stops),
with one sub-folder per upload holding the file, its preview and the job outputs. Jobs run one at
a time on a worker thread (the models use every core); uploads are inspected on another, so a new
file can be looked at while a video runs.

Choosing who stays: the page shows the faces the detector finds (in a photo, or in a video's first
frame) and sends back the indices the user clicked. A photo is anonymized with exactly the faces
not kept (or only the chosen ones), in the detector's order, so the result is the file that
`fiva anonymize --keep PHOTO_OF_THE_KEPT_PERSON` writes. In a video the same people must be found
in every frame, so each clicked face is cut out of the first frame as a reference photo and given
to `--keep`/`--only` matching. No identity embedding is written: they live in the Anonymizer's memory.
"""
from __future__ import annotations

import logging
import re
import secrets
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from ..anonymize.frame import METHODS, AnonymizeConfig, Anonymizer, VideoStream
from ..anonymize.video import probe_video, process_video
from ..faces import Detections
from ..io import IMAGE_EXTS, MAX_PIXELS, VIDEO_EXTS, InputError, read_image_alpha, write_image

log = logging.getLogger(__name__)

MODES = ("keep", "only")  # the clicked faces stay as they are / are the only ones anonymized
PREVIEW_SIDE = 1600  # previews are JPEGs no larger than this: the page scales them anyway


@dataclass
class Upload:
    """One uploaded file. `dets` are the faces of the photo or of the video's first frame, in the
    detector's order (the order the anonymizer works in); `preview` is a JPEG of those pixels."""

    id: str
    name: str
    path: Path
    kind: str  # "image" or "video"
    width: int
    height: int
    dets: Detections
    preview: Path
    frames: int = 0
    fps: float = 0.0

    def describe(self) -> dict:
        order = np.argsort(self.dets.boxes[:, 0], kind="stable")  # numbered left to right for people
        number = {int(i): n + 1 for n, i in enumerate(order)}
        faces = [{"index": i, "number": number[i], "box": [round(float(v), 1) for v in self.dets.boxes[i]]}
                 for i in range(len(self.dets))]
        return {"id": self.id, "name": self.name, "kind": self.kind, "width": self.width, "height": self.height,
                "frames": self.frames, "fps": self.fps, "faces": faces, "preview": f"/api/uploads/{self.id}/preview"}


@dataclass
class Job:
    """One anonymization run of an upload; `done` of `total` frames (1 for a photo)."""

    id: str
    upload: Upload
    method: str
    mode: str
    chosen: tuple[int, ...]
    state: str = "queued"  # queued, running, done, failed
    done: int = 0
    total: int = 1
    error: str | None = None
    output: Path | None = None
    preview: Path | None = None  # photos: a JPEG of the result for the page; videos play `output`
    summary: str = ""

    def describe(self) -> dict:
        d = {"id": self.id, "state": self.state, "done": self.done, "total": self.total, "error": self.error,
             "summary": self.summary, "kind": self.upload.kind}
        if self.state == "done":
            d.update(result=f"/api/jobs/{self.id}/result", download=f"/api/jobs/{self.id}/download",
                     filename=self.output.name)
        return d


class Closed(RuntimeError):
    """The workspace closed while a job ran."""


class Workspace:
    """Uploads and jobs in a temporary folder; `device` runs the models; photos over `max_pixels`
    are refused."""

    def __init__(self, device: str = "cpu", max_pixels: int = MAX_PIXELS):
        self.device, self.max_pixels = device, max_pixels
        self.root = Path(tempfile.mkdtemp(prefix="fiva-serve-"))
        self.uploads: dict[str, Upload] = {}
        self.jobs: dict[str, Job] = {}
        self._closed = threading.Event()
        self._inspect = ThreadPoolExecutor(1, thread_name_prefix="fiva-inspect")
        self._work = ThreadPoolExecutor(1, thread_name_prefix="fiva-job")
        self._finder: Anonymizer | None = None  # finds the faces to show; on the inspect thread only

    # -- uploads ---------------------------------------------------------------------------
    def reserve(self, filename: str) -> tuple[str, Path]:
        """A new upload id and the path its bytes go to (the user's name, made safe)."""
        uid = secrets.token_urlsafe(9)
        folder = self.root / uid
        folder.mkdir()
        return uid, folder / safe_name(filename)

    def discard(self, uid: str) -> None:
        self.uploads.pop(uid, None)
        shutil.rmtree(self.root / uid, ignore_errors=True)

    def inspect(self, uid: str, path: Path) -> Upload:
        """Check an uploaded file, find its faces and write its preview (on the inspect thread).
        Raises InputError with a one-line message naming the file as the user named it."""
        return self._inspect.submit(self._inspect_now, uid, path).result()

    def _inspect_now(self, uid: str, path: Path) -> Upload:
        ext = path.suffix.lower()
        try:
            if ext in IMAGE_EXTS:
                rgb, _ = read_image_alpha(path, self.max_pixels)
                frames, fps = 0, 0.0
            elif ext in VIDEO_EXTS:
                info = probe_video(path)
                rgb, frames, fps = first_frame(path), info.frames, info.fps
            else:
                raise InputError(f"{path}: unsupported file type '{path.suffix}' (photos: {', '.join(sorted(IMAGE_EXTS))}; "
                                 f"videos: {', '.join(sorted(VIDEO_EXTS))})")
            if self._finder is None:  # a baseline Anonymizer: its detector is the pipeline's, no generator loaded
                self._finder = Anonymizer(AnonymizeConfig(method="blur", device=self.device, progress=False,
                                                          max_pixels=self.max_pixels))
            dets = self._finder.detect(rgb)
            preview = path.with_name(".preview.jpg")  # uploads never start with a dot (safe_name)
            write_image(preview, shrink(rgb), quality=90)
        except (InputError, ValueError, OSError) as e:
            raise InputError(self.plain(e, path.parent)) from e
        up = Upload(uid, path.name, path, "image" if ext in IMAGE_EXTS else "video", rgb.shape[1], rgb.shape[0],
                    dets, preview, frames, fps)
        self.uploads[uid] = up
        return up

    # -- jobs ------------------------------------------------------------------------------
    def start(self, uid: str, method: str, mode: str, chosen: list[int]) -> Job:
        """Queue an anonymization of upload `uid`; bad requests raise ValueError in plain words."""
        up = self.uploads.get(uid)
        if up is None:
            raise ValueError("that upload is gone (the server was restarted?): choose the file again")
        if method not in METHODS:
            raise ValueError(f"unknown method '{method}' (choose from {', '.join(METHODS)})")
        if mode not in MODES:
            raise ValueError(f"unknown mode '{mode}' (choose from {', '.join(MODES)})")
        chosen = tuple(sorted({int(i) for i in chosen}))
        if any(not 0 <= i < len(up.dets) for i in chosen):
            raise ValueError(f"no such face: the picture has {len(up.dets)}")
        if mode == "only" and not chosen:
            raise ValueError("click the faces to anonymize first (or choose 'the clicked faces stay')")
        job = Job(secrets.token_urlsafe(9), up, method, mode, chosen, total=max(up.frames, 1))
        self.jobs[job.id] = job
        self._work.submit(self._run, job)
        return job

    def _run(self, job: Job) -> None:
        job.state = "running"
        up = job.upload
        folder = up.path.parent / job.id  # each job its own: an earlier result stays downloadable
        refs: list[Path] = []
        try:
            folder.mkdir()
            out = folder / f"{up.path.stem}_anonymized{up.path.suffix}"
            if up.kind == "image":
                self._run_image(job, out)
            else:
                refs = [reference_crop(up, i, folder / f".reference{i}.png") for i in job.chosen]
                self._run_video(job, out, refs)
            job.output, job.state = out, "done"
        except Closed:
            job.state, job.error = "failed", "the server stopped"
        except (InputError, ValueError, OSError, RuntimeError) as e:
            job.state, job.error = "failed", self.plain(e, up.path.parent)
        except Exception as e:  # a bug must still reach the page, not leave it polling forever
            log.exception("job %s failed", job.id)
            job.state, job.error = "failed", f"{up.name}: internal error ({type(e).__name__}: {e})"
        finally:
            for r in refs:
                r.unlink(missing_ok=True)

    def _anonymizer(self, job: Job, refs: tuple[str, ...] = ()) -> Anonymizer:
        # A fresh Anonymizer per job (~0.3 s): the same file and choices give the same output as a
        # fresh `fiva anonymize` run, whatever ran before (fake identities, noise seeds).
        cfg = AnonymizeConfig(method=job.method, device=self.device, progress=False, max_pixels=self.max_pixels,
                              keep=refs if job.mode == "keep" else (), only=refs if job.mode == "only" else ())
        return Anonymizer(cfg)

    def _run_image(self, job: Job, out: Path) -> None:
        up = job.upload
        anon = self._anonymizer(job)
        start_file(anon, up.name)
        rgb, alpha = read_image_alpha(up.path, self.max_pixels)
        chosen = np.zeros(len(up.dets), bool)
        chosen[list(job.chosen)] = True
        todo = chosen if job.mode == "only" else ~chosen  # boolean: the detector's order is kept
        result = anon.anonymize_image(rgb, up.dets[todo])
        anon.stats["faces"] += int((~todo).sum())
        anon.stats["kept"] += int((~todo).sum())
        write_image(out, result, alpha=alpha, source=up.path if np.array_equal(result, rgb) else None)  # as the CLI writes it
        job.preview = out.with_name("result.jpg")
        write_image(job.preview, shrink(result), quality=90)
        job.done = 1
        job.summary = summarize(anon.stats, anon.cfg.fallback, video=False)

    def _run_video(self, job: Job, out: Path, refs: list[Path]) -> None:
        try:
            anon = self._anonymizer(job, tuple(str(r) for r in refs))
        except ValueError as e:
            bad = [i for i, r in zip(job.chosen, refs) if str(e).startswith(str(r))]
            if not bad:
                raise
            number = job.upload.describe()["faces"][bad[0]]["number"]
            raise ValueError(f"{job.upload.name}: face {number} is too small or blurred to be recognised in the other "
                             "frames; leave it unclicked") from e
        start_file(anon, job.upload.name)
        process_video(job.upload.path, out, _Counted(VideoStream(anon), job, self._closed), progress=False)
        job.done = job.total
        job.summary = summarize(anon.stats, anon.cfg.fallback, video=True)

    # -- the rest --------------------------------------------------------------------------
    def plain(self, e: Exception, folder: Path) -> str:
        """One line naming the file as the user named it, not by its temporary path."""
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        return re.sub(re.escape(str(folder)) + r"/(\S+/)?", "", msg).replace(str(self.root) + "/", "")

    def close(self) -> None:
        """Stop the running job at its next frame, then delete every upload and output."""
        self._closed.set()
        self._inspect.shutdown(wait=True, cancel_futures=True)
        self._work.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.root, ignore_errors=True)


class _Counted:
    """A VideoStream that counts the frames it hands back into the job (the progress bar)."""

    def __init__(self, stream: VideoStream, job: Job, closed: threading.Event):
        self.stream, self.job, self.closed = stream, job, closed

    def push(self, rgb: np.ndarray) -> list[np.ndarray]:
        if self.closed.is_set():
            raise Closed()
        out = self.stream.push(rgb)
        self.job.done = min(self.job.done + len(out), self.job.total)
        return out

    def flush(self) -> list[np.ndarray]:
        out = self.stream.flush()
        self.job.done = min(self.job.done + len(out), self.job.total)
        return out

    def close(self) -> None:
        self.stream.close()


def start_file(anon: Anonymizer, name: str) -> None:
    """Set `anon` up for a new file as `fiva anonymize` does for a file given by its name: a new
    scene, and randomness (fake-identity draws, defense noise) seeded by --seed and the name. Then the page's output is the CLI's for the same file and choices."""
    from ..anonymize.runner import file_seed

    anon.reset(seed=file_seed(anon.cfg.seed, name))


def summarize(stats, fallback: str, video: bool) -> str:
    """What happened to the faces, in words for the page."""
    faces = stats.get("faces", 0)
    if not faces:
        return "No face found: the output equals the input." if not video else "No face found in any frame."
    unit = "face detection(s) over the frames" if video else "face(s)"
    done = {"blur": "blurred", "pixelate": "pixelated", "mask": "masked"}
    parts = [f"{stats['generated']} given a new identity"] if stats.get("generated") else []
    parts += [f"{stats[m]} {done[m]}" for m in done if stats.get(m)]
    fb = sum(v for k, v in stats.items() if k.startswith("fallback_"))
    if fb:
        parts.append(f"{fb} {done.get(fallback, fallback)} (too small, in profile, cut by the border, not "
                     "surely a face, or still like the original)")
    if stats.get("kept"):
        parts.append(f"{stats['kept']} left as they are")
    if stats.get("rejected"):  # the second look found no face there
        parts.append(f"{stats['rejected']} false alarm(s) left untouched")
    return f"{faces} {unit}: " + ", ".join(parts) + "."


def safe_name(filename: str) -> str:
    """The file's own name without folders or odd characters (it shows up in messages)."""
    name = re.sub(r"[^\w.\- ]+", "_", Path(filename.replace("\\", "/")).name).strip(" .")
    return name[:120] or "upload"


def shrink(rgb: np.ndarray, side: int = PREVIEW_SIDE) -> np.ndarray:
    h, w = rgb.shape[:2]
    s = side / max(h, w)
    return rgb if s >= 1 else cv2.resize(rgb, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)


def first_frame(path: Path) -> np.ndarray:
    """The first decodable frame of a video as RGB uint8 [H,W,3] (as stored, like process_video)."""
    try:
        with av.open(str(path)) as c:
            for frame in c.decode(video=0):
                return frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise InputError(f"{path}: not a readable video ({e})") from e
    raise InputError(f"{path}: not a readable video (no decodable frames)")


def reference_crop(up: Upload, index: int, dst: Path) -> Path:
    """Face `index` of the video's first frame with room around it, as a reference photo for
    --keep/--only matching; small faces are enlarged so the detector finds them again."""
    rgb = first_frame(up.path)
    x1, y1, x2, y2 = up.dets.boxes[index]
    m = 0.5 * max(x2 - x1, y2 - y1)
    h, w = rgb.shape[:2]
    crop = rgb[max(0, int(y1 - m)):min(h, int(y2 + m)), max(0, int(x1 - m)):min(w, int(x2 + m))]
    if min(crop.shape[:2]) < 160:
        s = 160 / min(crop.shape[:2])
        crop = cv2.resize(crop, (round(crop.shape[1] * s), round(crop.shape[0] * s)), interpolation=cv2.INTER_CUBIC)
    write_image(dst, crop)
    return dst
